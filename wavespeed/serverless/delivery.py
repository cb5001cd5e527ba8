"""Delivery: everything a job sends to the platform, in order, off the job's thread.

Each job gets an ``Outbox``: its stream chunks, progress updates and final
result, in the order they were made, the final result last. Outboxes are
drained by delivery threads (one thread per outbox at a time, so a job's
messages keep their order while different jobs send in parallel). A pool
thread that finishes a job with nothing queued sends the final result
itself (one thread switch less on the hot path); the event loop and the
watchdog never send anything themselves.

The outbox (``outbox.py``) is bounded by count and bytes, so a generator
that outruns the platform waits for room.

The final result: posted until ``result_deadline`` (wall clock); a refusal
(4xx, 3xx) is replaced by a small FAILED result saying why; what still
cannot be delivered is written to the spool and re-sent later. Delivery is
at least once: a result whose answer was lost is posted again, and the job
id travels as ``X-Request-ID`` so a platform can drop the repeat.
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional

from .config import Config
from .job import Job, JobResult, failure
from .logs import logger
from .metrics import NullMetrics
from .outbox import MAX_BYTES, MAX_ITEMS, FinalOutcome, FinalState, Kind, Message, Outbox
from .spool import Spool, SpoolEntry

__all__ = ["MAX_BYTES", "MAX_ITEMS", "Delivery", "FinalOutcome", "Outbox", "Stats"]

log = logger("delivery")

MAX_THREADS = 32
REFUSAL_GRACE = 10.0  # seconds to deliver the small FAILED result that replaces a refused one


class Stats:
    """Thread-safe counters the worker reports in /health and its last log line."""

    KEYS = ("taken", "delivered", "refused", "spooled", "duplicates", "chunks")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = {key: 0 for key in self.KEYS}

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def __getitem__(self, key: str) -> int:
        return self._counts[key]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class Delivery:
    """Owns the delivery threads, the outboxes in flight and the spool writes."""

    def __init__(
        self,
        config: Config,
        transport: Any,
        spool: Spool,
        stats: Stats,
        on_spooled: Callable[[], None] = lambda: None,
        max_threads: int = MAX_THREADS,
        metrics: Optional[NullMetrics] = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or NullMetrics()
        self.transport = transport
        self.spool = spool
        self.stats = stats
        self._on_spooled = on_spooled
        self._executor = ThreadPoolExecutor(max_threads, thread_name_prefix="wavespeed-delivery")
        self._lock = threading.Condition()
        self._open: set[Outbox] = set()
        self._local = threading.local()  # .own: this is one of the delivery threads

    def open(self, job: Job) -> Outbox:
        box = Outbox(job.id, self)
        with self._lock:
            self._open.add(box)
        return box

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._open)

    def schedule(self, box: Outbox, inline: bool = False) -> None:
        with box.cond:
            if box.scheduled or not box.queue:
                return
            box.scheduled = True
            # Inline only when the final result is the one thing to send.
            inline = inline and len(box.queue) == 1 and box.queue[0].kind is Kind.FINAL
        if inline:
            self._drain(box)
            return
        try:
            self._executor.submit(self._drain_on_own_thread, box)
        except RuntimeError as exc:  # no thread could be started, or shutting down
            log.error(
                "no delivery thread for job %s (%s); sending from this thread", box.job_id, exc
            )
            self._drain(box)

    def may_take_here(self) -> bool:
        """True on a delivery thread: it may block on a job-take once a result has left."""
        return getattr(self._local, "own", False)

    def _drain_on_own_thread(self, box: Outbox) -> None:
        self._local.own = True
        self._drain(box)

    def _drain(self, box: Outbox) -> None:
        while True:
            message = box.pop()
            if message is None:
                return
            try:
                self._send(box, message)
            except BaseException as exc:  # noqa: BLE001 - the last line of defence for a result
                log.exception("delivering a message of job %s failed", box.job_id)
                if message.kind is Kind.FINAL and message.result is not None:
                    try:
                        self._spool_final(box, message.result, f"{type(exc).__name__}: {exc}")
                    except BaseException:  # noqa: BLE001 - the outbox must finish: its slot frees then
                        log.exception(
                            "the result of job %s is lost: spooling it failed too", box.job_id
                        )
                        self.finish(box, message.result, FinalOutcome.DROPPED)

    def _send(self, box: Outbox, message: Message) -> None:
        if message.kind is Kind.CHUNK:
            delivery = self.transport.post_chunk(box.job_id, message.payload)
            if delivery.ok:
                self.stats.add("chunks")
                self.metrics.chunk()
            else:
                log.warning(
                    "stream chunk of job %s not delivered (%s)",
                    box.job_id,
                    delivery.detail or f"HTTP {delivery.status}",
                )
        elif message.kind is Kind.PROGRESS:
            delivery = self.transport.post_progress(box.job_id, message.payload)
            if not delivery.ok:
                log.debug("progress update of job %s not delivered", box.job_id)
        elif message.kind is Kind.FINAL:
            assert message.result is not None
            self._send_final(box, message.result)
        else:  # pragma: no cover - a new kind must be handled above
            raise AssertionError(f"unknown message kind {message.kind!r}")

    def _send_final(self, box: Outbox, result: JobResult) -> None:
        job_id = result.job_id
        deadline = box.final_at + self.config.result_deadline
        sent = time.monotonic()
        delivery = self.transport.post_result(
            job_id, result.payload, result.is_stream, deadline=deadline
        )
        log.debug(
            "result of job %s: %s after %.1f ms (%d bytes)",
            job_id,
            "delivered" if delivery.ok else delivery.detail or f"HTTP {delivery.status}",
            (time.monotonic() - sent) * 1000.0,
            len(result.payload),
        )
        if delivery.ok:
            self.stats.add("delivered")
            self.finish(box, result, FinalOutcome.DELIVERED)
            return
        payload = result.payload
        if delivery.refused:
            delivery, payload = self._replace_refused(
                job_id, delivery, len(payload), result.is_stream, deadline, result.refresh
            )
            if delivery.ok:
                self.finish(box, result, FinalOutcome.REPLACED)
                return
            if delivery.refused:
                self.finish(box, result, FinalOutcome.DROPPED)
                return
        self._spool_final(
            box,
            JobResult(
                job_id, result.body, payload, result.is_stream, result.refresh, result.failed
            ),
            delivery.detail or f"HTTP {delivery.status}",
        )

    def _replace_refused(
        self,
        job_id: str,
        refused: Any,
        size: int,
        is_stream: bool,
        deadline: float,
        refresh: bool = False,
        spooled: bool = False,
    ) -> tuple[Any, bytes]:
        """Post the small FAILED result that replaces a refused one (live or re-sent).

        Returns what that post got, and the FAILED payload (what to spool
        when it could not be delivered either).
        """
        self.stats.add("refused")
        log.error(
            "the platform refused the %sresult of job %s (HTTP %s: %s); posting a FAILED result",
            "spooled " if spooled else "",
            job_id,
            refused.status,
            refused.detail[:200],
        )
        reason = failure(
            job_id,
            f"the platform refused the job's result (HTTP {refused.status}, "
            f"{size} bytes): {refused.detail[:200]}",
            refresh=refresh,
        )
        delivery = self.transport.post_result(
            job_id,
            reason.payload,
            is_stream,
            deadline=max(deadline, time.monotonic() + REFUSAL_GRACE),
        )
        if delivery.ok:
            self.stats.add("delivered")
        elif delivery.refused:
            log.error("the FAILED result of job %s was refused too; giving up on it", job_id)
        return delivery, reason.payload

    def _spool_final(self, box: Outbox, result: JobResult, why: str) -> None:
        with box.cond:
            if box.final_state is FinalState.SPOOLED:
                return  # the shutdown deadline already spooled it
        path = self.spool.save(result.job_id, result.payload, result.is_stream)
        if path is None:
            log.error(
                "the result of job %s is lost: not delivered (%s) and not spooled",
                result.job_id,
                why,
            )
            self.finish(box, result, FinalOutcome.DROPPED)
            return
        self.stats.add("spooled")
        log.warning(
            "could not deliver the result of job %s (%s); spooled to %s for re-sending",
            result.job_id,
            why,
            path,
        )
        self._on_spooled()
        self.finish(box, result, FinalOutcome.SPOOLED)

    def finish(self, box: Outbox, result: JobResult, outcome: FinalOutcome) -> None:
        """The outbox is done: tell its owner once."""
        with box.cond:
            if box.finished:
                return
            box.final_state = (
                FinalState.DONE if outcome is not FinalOutcome.SPOOLED else FinalState.SPOOLED
            )
            box.finished = True
            on_done = box.on_done
            # The run, its job and this outbox refer to each other; let go of
            # the result and the callback now, so a large output is freed at
            # once instead of at the next cycle collection.
            box.on_done = None
            box.final = None
        with self._lock:
            self._open.discard(box)
            self._lock.notify_all()
        if outcome is not FinalOutcome.DISCARDED:
            self.metrics.post("refused" if outcome is FinalOutcome.REPLACED else outcome.value)
        if on_done is not None:
            on_done(result, outcome)

    # -- the spool's re-sender ---------------------------------------------------------

    def resend(self, entry: SpoolEntry, deadline: Optional[float] = None) -> tuple[bool, str]:
        """Send one spooled result; (True, ...) when it is done with (delivered or refused)."""
        if deadline is None:
            deadline = time.monotonic() + min(self.config.result_deadline, 30.0)
        delivery = self.transport.post_result(
            entry.job_id, entry.payload, entry.is_stream, deadline=deadline
        )
        if delivery.ok:
            self.stats.add("delivered")
            self.metrics.post("retried")
            log.info("re-sent the spooled result of job %s", entry.job_id)
            return True, ""
        if delivery.refused:
            # As for a live result: the job still gets a final answer.
            replaced, _ = self._replace_refused(
                entry.job_id, delivery, len(entry.payload), entry.is_stream, deadline, spooled=True
            )
            if replaced.ok:
                self.metrics.post("refused")
                return True, f"HTTP {delivery.status}, replaced by a FAILED result"
            if replaced.refused:
                return True, f"HTTP {delivery.status}"
            return False, replaced.detail or f"HTTP {replaced.status}"
        return False, delivery.detail or f"HTTP {delivery.status}"

    # -- shutdown ----------------------------------------------------------------------

    def wait_idle(self, deadline: float) -> bool:
        """Wait until every outbox is done, up to ``deadline`` (monotonic); True when idle."""
        with self._lock:
            while self._open:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(min(remaining, 0.5))
        return True

    def spool_pending(self) -> int:
        """At the shutdown deadline: spool every final result not yet delivered."""
        with self._lock:
            boxes = list(self._open)
        count = 0
        for box in boxes:
            with box.cond:
                result = box.final
                if result is None or box.final_state not in (FinalState.QUEUED, FinalState.SENDING):
                    continue
                queued = box.final_state is FinalState.QUEUED
                box.queue.clear()
                box.bytes = 0
                # A sender still posting must not spool it again.
                box.final_state = FinalState.SPOOLED
            path = self.spool.save(result.job_id, result.payload, result.is_stream)
            if path is None:
                log.error(
                    "the result of job %s is lost at shutdown: the spool refused it", result.job_id
                )
                self.finish(box, result, FinalOutcome.DROPPED)
                continue
            count += 1
            self.stats.add("spooled")
            log.warning(
                "shutdown deadline: the result of job %s was %s; spooled to %s",
                result.job_id,
                "still queued" if queued else "still being posted",
                path,
            )
            self.finish(box, result, FinalOutcome.SPOOLED)
        return count

    def close(self, timeout: float = 2.0) -> None:
        """Cut posts still open and join the delivery threads."""
        abort = getattr(self.transport, "abort_posts", None)
        if abort is not None:
            abort()
        self._executor.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + timeout
        for thread in list(getattr(self._executor, "_threads", ())):
            thread.join(max(0.0, deadline - time.monotonic()))
