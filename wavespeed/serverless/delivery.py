"""Delivery: everything a job sends to the platform, in order, off the job's thread.

Each job gets an ``Outbox``: its stream chunks, progress updates and final
result, in the order they were made, the final result last. Outboxes are
drained by delivery threads (one thread per outbox at a time, so a job's
messages keep their order while different jobs send in parallel). A pool
thread that finishes a job with nothing queued sends the final result
itself (one thread switch less on the hot path); the event loop and the
watchdog never send anything themselves.

The outbox is bounded by count and bytes: a generator that yields faster
than the platform takes chunks waits (a sync generator blocks its thread,
an async one awaits) until there is room. Progress updates never wait:
while the outbox is full, a queued, unsent update is replaced by a newer one.

The final result: posted until ``result_deadline`` (wall clock); a refusal
(4xx, 3xx) is replaced by a small FAILED result saying why; what still
cannot be delivered is written to the spool and re-sent later. Delivery is
at least once: a result whose answer was lost is posted again, and the job
id travels as ``X-Request-ID`` so a platform can drop the repeat.
"""

import enum
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Deque, Dict, List, Optional, Set, Tuple

from .config import Config
from .job import Job, JobResult, encode, failure
from .logs import logger
from .runner import Channel
from .spool import Spool, SpoolEntry

log = logger("delivery")

MAX_ITEMS = 64
MAX_BYTES = 16 * 1024 * 1024
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

    def snapshot(self) -> Dict[str, int]:
        with self._lock:
            return dict(self._counts)


class Kind(enum.Enum):
    CHUNK = "chunk"
    PROGRESS = "progress"
    FINAL = "final"


class FinalState(enum.Enum):
    NONE = "none"  # no final result yet
    QUEUED = "queued"
    SENDING = "sending"
    SPOOLED = "spooled"  # spooled at the shutdown deadline while queued or sending
    DONE = "done"


class Outcome(enum.Enum):
    """What became of a final result."""

    DELIVERED = "delivered"
    REPLACED = "replaced"  # refused; the FAILED result that says why was delivered
    SPOOLED = "spooled"
    DROPPED = "dropped"  # refused twice, or the disk refused the spool; logged as an error
    DISCARDED = "discarded"  # nothing to post (cancelled by the platform)


class _Message:
    __slots__ = ("kind", "payload", "result", "size")

    def __init__(self, kind: Kind, payload: bytes, result: Optional[JobResult] = None) -> None:
        self.kind = kind
        self.payload = payload
        self.result = result
        self.size = len(payload)


Done = Callable[[JobResult, Outcome], None]


class Outbox(Channel):
    """One job's ordered messages. A ``Channel`` for the runner, fed by any thread."""

    def __init__(
        self,
        job_id: str,
        delivery: "Delivery",
        max_items: int = MAX_ITEMS,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.job_id = job_id
        self._delivery = delivery
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.cond = threading.Condition()
        self.queue: Deque[_Message] = deque()
        self.bytes = 0
        self.scheduled = False  # a thread is draining this outbox
        self.closed = False  # the final result (or a discard) is in: nothing more is taken
        self.final_state = FinalState.NONE
        self.final: Optional[JobResult] = None
        self.final_at = 0.0
        self.on_done: Optional[Done] = None
        self.spool_path: Optional[str] = None
        self.finished = threading.Event()
        self._async_waiters: List[Tuple[Any, Any]] = []

    # -- producers (the runner, progress_update) -----------------------------------

    def _room(self) -> bool:
        return not self.queue or (len(self.queue) < self.max_items and self.bytes < self.max_bytes)

    def _append(self, message: _Message) -> None:
        self.queue.append(message)
        self.bytes += message.size

    def send_chunk(self, job: Job, value: Any, payload: bytes) -> None:
        with self.cond:
            while not self.closed and not self._room():
                self.cond.wait()
            if self.closed:
                log.debug("stream chunk of job %s after its final result; dropped", self.job_id)
                return
            self._append(_Message(Kind.CHUNK, payload))
        self._delivery.schedule(self)

    async def asend_chunk(self, job: Job, value: Any, payload: bytes) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        while True:
            with self.cond:
                if self.closed:
                    log.debug("stream chunk of job %s after its final result; dropped", self.job_id)
                    return
                if self._room():
                    self._append(_Message(Kind.CHUNK, payload))
                    break
                waiter = loop.create_future()
                self._async_waiters.append((loop, waiter))
            await waiter
        self._delivery.schedule(self)

    def send_progress(self, job: Job, data: Any) -> None:
        payload = encode({"status": "IN_PROGRESS", "output": data})
        with self.cond:
            if self.closed:
                log.debug("progress_update after the final result of job %s; dropped", self.job_id)
                return
            last = self.queue[-1] if self.queue else None
            if not self._room() and last is not None and last.kind is Kind.PROGRESS:
                self.bytes -= last.size  # full: the newer update replaces an unsent one
                self.queue.pop()
            self._append(_Message(Kind.PROGRESS, payload))
        self._delivery.schedule(self)

    def close(self, result: Optional[JobResult], on_done: Done, inline: bool = False) -> None:
        """Queue the final result (None: post nothing, drop what is queued).

        ``on_done(result, outcome)`` runs once the result has left: delivered,
        replaced, spooled or dropped. With ``inline`` the calling thread
        sends it when nothing else is queued (a pool thread; never the loop).
        """
        with self.cond:
            if self.closed:
                return
            self.closed = True
            self.on_done = on_done
            self._release_waiters()
            if result is None:
                self.queue.clear()
                self.bytes = 0
            else:
                self.final = result
                self.final_at = time.monotonic()
                self.final_state = FinalState.QUEUED
                self._append(_Message(Kind.FINAL, result.payload, result))
        if result is None:
            self._delivery.finish(self, JobResult(self.job_id, {}, b"", cancelled=True), Outcome.DISCARDED)
            return
        self._delivery.schedule(self, inline=inline)

    # -- the delivery side -------------------------------------------------------------

    def _release_waiters(self) -> None:
        """Wake producers waiting for room (called with ``cond`` held)."""
        self.cond.notify_all()
        waiters, self._async_waiters = self._async_waiters, []
        for loop, waiter in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, waiter)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

    def pop(self) -> Optional[_Message]:
        """The next message to send, or None (and the outbox is unscheduled)."""
        with self.cond:
            if not self.queue:
                self.scheduled = False
                return None
            message = self.queue.popleft()
            self.bytes -= message.size
            if message.kind is Kind.FINAL:
                self.final_state = FinalState.SENDING
            self._release_waiters()
            return message


def _resolve(waiter: Any) -> None:
    if not waiter.done():
        waiter.set_result(None)


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
    ) -> None:
        self.config = config
        self.transport = transport
        self.spool = spool
        self.stats = stats
        self._on_spooled = on_spooled
        self._executor = ThreadPoolExecutor(max_threads, thread_name_prefix="wavespeed-delivery")
        self._lock = threading.Condition()
        self._open: Set[Outbox] = set()

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
            self._executor.submit(self._drain, box)
        except RuntimeError as exc:  # no thread could be started, or shutting down
            log.error("no delivery thread for job %s (%s); sending from this thread", box.job_id, exc)
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
                        log.exception("the result of job %s is lost: spooling it failed too", box.job_id)
                        self.finish(box, message.result, Outcome.DROPPED)

    def _send(self, box: Outbox, message: _Message) -> None:
        if message.kind is Kind.CHUNK:
            delivery = self.transport.post_chunk(box.job_id, message.payload)
            if delivery.ok:
                self.stats.add("chunks")
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
        delivery = self.transport.post_result(job_id, result.payload, result.is_stream, deadline=deadline)
        if delivery.ok:
            self.stats.add("delivered")
            self.finish(box, result, Outcome.DELIVERED)
            return
        payload = result.payload
        if delivery.refused:
            self.stats.add("refused")
            log.error(
                "the platform refused the result of job %s (HTTP %s: %s); posting a FAILED result",
                job_id,
                delivery.status,
                delivery.detail[:200],
            )
            reason = failure(
                job_id,
                f"the platform refused the job's result (HTTP {delivery.status}, "
                f"{len(result.payload)} bytes): {delivery.detail[:200]}",
                stop_pod=result.stop_pod,
            )
            retry_deadline = max(deadline, time.monotonic() + REFUSAL_GRACE)
            delivery = self.transport.post_result(
                job_id, reason.payload, result.is_stream, deadline=retry_deadline
            )
            if delivery.ok:
                self.stats.add("delivered")
                self.finish(box, result, Outcome.REPLACED)
                return
            if delivery.refused:
                log.error("the FAILED result of job %s was refused too; giving up on it", job_id)
                self.finish(box, result, Outcome.DROPPED)
                return
            payload = reason.payload
        self._spool_final(
            box,
            JobResult(job_id, result.body, payload, result.is_stream, result.stop_pod, result.failed),
            delivery.detail or f"HTTP {delivery.status}",
        )

    def _spool_final(self, box: Outbox, result: JobResult, why: str) -> None:
        with box.cond:
            if box.final_state is FinalState.SPOOLED:
                return  # the shutdown deadline already spooled it
        path = self.spool.save(result.job_id, result.payload, result.is_stream)
        if path is None:
            log.error("the result of job %s is lost: not delivered (%s) and not spooled", result.job_id, why)
            self.finish(box, result, Outcome.DROPPED)
            return
        self.stats.add("spooled")
        log.warning(
            "could not deliver the result of job %s (%s); spooled to %s for re-sending",
            result.job_id,
            why,
            path,
        )
        self._on_spooled()
        self.finish(box, result, Outcome.SPOOLED)

    def finish(self, box: Outbox, result: JobResult, outcome: Outcome) -> None:
        """The outbox is done: tell its owner once."""
        with box.cond:
            if box.finished.is_set():
                return
            box.final_state = FinalState.DONE if outcome is not Outcome.SPOOLED else FinalState.SPOOLED
            box.finished.set()
            on_done = box.on_done
        with self._lock:
            self._open.discard(box)
            self._lock.notify_all()
        if on_done is not None:
            on_done(result, outcome)

    # -- the spool's re-sender ---------------------------------------------------------

    def resend(self, entry: SpoolEntry, deadline: Optional[float] = None) -> Tuple[bool, str]:
        """Send one spooled result; (True, ...) when it is done with (delivered or refused)."""
        if deadline is None:
            deadline = time.monotonic() + min(self.config.result_deadline, 30.0)
        delivery = self.transport.post_result(entry.job_id, entry.payload, entry.is_stream, deadline=deadline)
        if delivery.ok:
            self.stats.add("delivered")
            log.info("re-sent the spooled result of job %s", entry.job_id)
            return True, ""
        if delivery.refused:
            log.error(
                "the platform refused the spooled result of job %s (HTTP %s); dropped",
                entry.job_id,
                delivery.status,
            )
            return True, f"HTTP {delivery.status}"
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
                box.final_state = FinalState.SPOOLED  # a sender still posting must not spool it again
            path = self.spool.save(result.job_id, result.payload, result.is_stream)
            if path is None:
                log.error("the result of job %s is lost at shutdown: the spool refused it", result.job_id)
                self.finish(box, result, Outcome.DROPPED)
                continue
            count += 1
            self.stats.add("spooled")
            log.warning(
                "shutdown deadline: the result of job %s was %s; spooled to %s",
                result.job_id,
                "still queued" if queued else "still being posted",
                path,
            )
            self.finish(box, result, Outcome.SPOOLED)
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
