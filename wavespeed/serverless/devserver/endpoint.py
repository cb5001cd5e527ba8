"""The local API's jobs: queued, run in the job engine, tracked, expired.

``LocalEndpoint`` is what the routes call and the engine's destination
(stream chunks, progress and results land in the job store). It knows nothing of
HTTP; ``app.py`` turns requests into calls to it.

It is a little over 400 lines because the job store and the routes' view
of a job (``_document``) share the endpoint's lock with the engine's
destination callbacks; keeping them together keeps that lock in one file.
"""

import json
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..config import Config
from ..engine import Engine
from ..job import Job, JobResult, non_finite_as_null
from ..logs import logger
from ..metrics import create_metrics
from ..runner import Channel
from .options import ApiOptions, bind_address, is_loopback
from .webhook import Webhooks

log = logger("api")

IN_QUEUE = "IN_QUEUE"
IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
TIMED_OUT = "TIMED_OUT"
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED, TIMED_OUT})
# The final statuses a webhook is told about (a cancel came from the caller).
WEBHOOK_STATUSES = frozenset({COMPLETED, FAILED, TIMED_OUT})


def encode_json(doc: Any) -> bytes:
    """The bytes of a document leaving the API (a reply, a webhook).

    NaN and Infinity are not JSON (a progress value may hold them): they
    become ``null``. A lone surrogate (``"\\ud800"`` in a request) is kept
    as its ``\\u`` escape, since it cannot be UTF-8.
    """
    try:
        text = json.dumps(doc, ensure_ascii=False, allow_nan=False, default=str)
    except ValueError:
        doc = non_finite_as_null(doc)
        text = json.dumps(doc, ensure_ascii=False, allow_nan=False, default=str)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(doc, allow_nan=False, default=str).encode("ascii")


class StoreFull(Exception):
    """Every slot of the job store holds a job that has not finished."""


@dataclass
class JobRecord:
    """One job of the local API and everything a client can ask about it."""

    job: Job
    created: float
    webhook: Optional[str] = None
    timeout: Optional[float] = None  # seconds of execution before TIMED_OUT
    status: str = IN_QUEUE
    started: Optional[float] = None
    finished: Optional[float] = None
    body: dict[str, Any] = field(default_factory=dict)  # final output / error
    progress: Any = None
    has_progress: bool = False
    chunks: list[Any] = field(default_factory=list)
    cursor: int = 0  # chunks before this index were returned by /stream
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def id(self) -> str:
        return self.job.id


class JobStore:
    """The jobs the API knows, bounded in count; finished jobs expire after ``ttl``.

    Not thread-safe on its own: ``LocalEndpoint`` calls it under its lock.
    """

    def __init__(
        self, max_jobs: int, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_jobs = max(1, max_jobs)
        self.ttl = ttl
        self._clock = clock
        self._jobs: OrderedDict[str, JobRecord] = OrderedDict()

    def __len__(self) -> int:
        return len(self._jobs)

    def get(self, job_id: str) -> Optional[JobRecord]:
        self.evict()
        return self._jobs.get(job_id)

    def peek(self, job_id: str) -> Optional[JobRecord]:
        """Like ``get`` without evicting: for the per-chunk path."""
        return self._jobs.get(job_id)

    def add(self, record: JobRecord) -> None:
        """Keep ``record``; make room by dropping the oldest finished job if needed.

        Raises StoreFull when every kept job is still queued or running.
        """
        self.evict()
        if len(self._jobs) >= self.max_jobs:
            oldest = next((r for r in self._jobs.values() if r.status in TERMINAL), None)
            if oldest is None:
                raise StoreFull(f"{len(self._jobs)} jobs are queued or running")
            del self._jobs[oldest.id]
        self._jobs[record.id] = record

    def evict(self) -> int:
        """Drop finished jobs older than the TTL; return how many went."""
        limit = self._clock() - self.ttl
        expired = [
            job_id
            for job_id, r in self._jobs.items()
            if r.finished is not None and r.status in TERMINAL and r.finished <= limit
        ]
        for job_id in expired:
            del self._jobs[job_id]
        return len(expired)

    def records(self) -> list[JobRecord]:
        return list(self._jobs.values())


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


class _RecordChannel(Channel):
    """One job's channel: chunks, progress and the final result land in its record."""

    def __init__(self, endpoint: "LocalEndpoint", record: JobRecord) -> None:
        self._endpoint = endpoint
        self._record = record

    def send_chunk(self, job: Job, value: Any, payload: bytes) -> None:
        self._endpoint._chunk(self._record, value)

    def send_progress(self, job: Job, data: Any) -> None:
        self._endpoint._progress(self._record, data)

    def close(self, result: Optional[JobResult], on_done: Any, inline: bool = False) -> None:
        self._endpoint._finish(self._record, result)
        on_done(result or JobResult(self._record.id, {}, b"", cancelled=True), None)


class LocalEndpoint:
    """Queues, runs and tracks the local API's jobs; the destination of the job engine.

    Jobs run in the same engine as the worker's (slots from the flag or the
    handler's ``concurrency_modifier``, sync handlers on pool threads, async
    ones on the shared loop, per-job timeouts); a job waits IN_QUEUE in the
    engine's backlog until a slot is free. Cancelling or timing out a job
    ends it at once and frees its slot; whatever the handler returns
    afterwards is discarded.
    """

    def __init__(
        self,
        config: Config,
        options: Optional[ApiOptions] = None,
        clock: Callable[[], float] = time.monotonic,
        private_webhooks: Optional[bool] = None,
    ) -> None:
        """``private_webhooks``: may webhooks go to loopback and private addresses.

        By default only when the config allows it or the API is the local one
        bound to a loopback address (``create_app`` passes the address it serves).
        """
        self.config = config
        self.options = (options or ApiOptions()).resolve(config)
        self._clock = clock
        self.store = JobStore(self.options.max_jobs, self.options.ttl, clock)
        self._cond = threading.Condition()
        self.counts = {"completed": 0, "failed": 0, "cancelled": 0, "timed_out": 0}
        self._closing = threading.Event()
        self.metrics = create_metrics()
        self.engine = Engine(
            config,
            self,
            initial_concurrency=self.options.concurrency or 1,
            track=self._started,
            on_result=self._left,
            metrics=self.metrics,
        )
        self.metrics.watch(lambda: len(self.engine), lambda: self.concurrency)
        self.engine.watchdog.start()
        if private_webhooks is None:
            private_webhooks = config.allow_private_webhooks or (
                config.mode != "realtime" and is_loopback(bind_address(config)[0])
            )
        self.webhooks = Webhooks(
            allow_private=private_webhooks,
            encode=encode_json,
            timeout=self.options.webhook_timeout,
            attempts=self.options.webhook_attempts,
            backoff=self.options.webhook_backoff,
        )

    # -- what the routes call -------------------------------------------------------

    def submit(
        self,
        job_input: Any,
        webhook: Optional[str] = None,
        timeout: Optional[float] = None,
        extra: Optional[dict[str, Any]] = None,
    ) -> JobRecord:
        """Queue a job; it starts as soon as a slot is free. Raises StoreFull."""
        data: dict[str, Any] = dict(extra or {})
        data.update(id=str(uuid.uuid4()), input=job_input)  # uuid4: unguessable
        if timeout is None:
            timeout = self.config.job_timeout
        record = JobRecord(job=Job(data), created=self._clock(), webhook=webhook, timeout=timeout)
        with self._cond:
            if self._closing.is_set():
                raise StoreFull("the server is shutting down")
            self.store.add(record)
        log.info("job %s queued", record.id)
        self.engine.update_concurrency()  # user code: outside every lock
        self.engine.submit(record.job, timeout=timeout or None)
        return record

    def get(self, job_id: str) -> Optional[JobRecord]:
        with self._cond:
            return self.store.get(job_id)

    def document(self, record: JobRecord) -> dict[str, Any]:
        """The status document of a job, as the platform's /status returns it."""
        with self._cond:
            return self._document(record)

    def wait(self, record: JobRecord, timeout: float) -> dict[str, Any]:
        """Wait up to ``timeout`` seconds for the job to end (or ``close()``).

        Returns the job's document.
        """
        with self._cond:
            self._cond.wait_for(
                lambda: record.done.is_set() or self._closing.is_set(), max(0.0, timeout)
            )
            return self._document(record)

    def take_stream(self, record: JobRecord, wait: float = 0.0) -> dict[str, Any]:
        """The chunks produced since the previous call, waiting up to ``wait`` s for one."""
        deadline = time.monotonic() + max(0.0, wait)
        with self._cond:
            while (
                record.cursor >= len(record.chunks)
                and record.status not in TERMINAL
                and not self._closing.is_set()
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            chunks = record.chunks[record.cursor :]
            record.cursor = len(record.chunks)
            doc: dict[str, Any] = {
                "id": record.id,
                "status": record.status,
                "stream": [{"output": c} for c in chunks],
            }
            if record.status in TERMINAL and "error" in record.body:
                doc["error"] = record.body["error"]
            return doc

    def cancel(self, job_id: str) -> Optional[dict[str, Any]]:
        """Cancel a queued or running job; None when the id is unknown."""
        with self._cond:
            record = self.store.get(job_id)
            if record is None:
                return None
        if record.status not in TERMINAL:
            self.engine.cancel(job_id)  # ends it now: CANCELLED through _finish
        with self._cond:
            doc = self._document(record)
        if doc["status"] == CANCELLED:
            log.info("job %s cancelled", job_id)
        return doc

    def purge(self) -> int:
        """Cancel every queued job; running jobs go on. Returns how many were removed."""
        removed = self.engine.purge()
        if removed:
            log.info("purged %d queued jobs", removed)
        return removed

    def health(self) -> dict[str, Any]:
        """The platform's /health shape: job counts and worker (slot) counts."""
        running = len(self.engine)
        with self._cond:
            self.store.evict()
            return {
                "jobs": {
                    "completed": self.counts["completed"],
                    "failed": self.counts["failed"] + self.counts["timed_out"],
                    "inProgress": sum(1 for r in self.store.records() if r.status == IN_PROGRESS),
                    "inQueue": self.engine.waiting,
                    "retried": 0,
                },
                "workers": {"idle": max(0, self.concurrency - running), "running": running},
            }

    def close(self, wait: bool = True) -> None:
        """Cancel what is queued or running, end waits, stop the engine and webhooks."""
        self._closing.set()
        with self._cond:
            self._cond.notify_all()  # requests waiting for a job answer now
        self.engine.purge()
        for job_id in self.engine.job_ids():
            self.engine.cancel(job_id)
        self.engine.close()
        self.webhooks.close(wait=wait)

    @property
    def concurrency(self) -> int:
        return self.engine.concurrency.value

    # -- the engine's destination ------------------------------------------------------

    def open(self, job: Job) -> _RecordChannel:
        with self._cond:
            record = self.store.peek(job.id)
        if record is None:  # evicted while queued (cannot happen: queued jobs are kept)
            record = JobRecord(job=job, created=self._clock())
        return _RecordChannel(self, record)

    def _started(self, job: Job, running: bool) -> None:
        if not running:
            return
        with self._cond:
            record = self.store.peek(job.id)
            if record is not None and record.status == IN_QUEUE:
                record.status = IN_PROGRESS
                record.started = self._clock()
                self._cond.notify_all()
        log.info("job %s started", job.id)

    def _left(self, run: Any, result: JobResult, outcome: Any) -> None:
        if result.refresh:
            log.info(
                "refresh_worker: on a platform the worker would stop after job %s", result.job_id
            )

    def _chunk(self, record: JobRecord, value: Any) -> None:
        with self._cond:
            if record.status != IN_PROGRESS:
                return  # cancelled or timed out: the chunk is discarded with the result
            record.chunks.append(value)
            self._cond.notify_all()

    def _progress(self, record: JobRecord, data: Any) -> None:
        with self._cond:
            if record.status != IN_PROGRESS:
                log.debug("progress_update for job %s, which is not running; dropped", record.id)
                return
            record.progress = data
            record.has_progress = True
            self._cond.notify_all()

    def _finish(self, record: JobRecord, result: Optional[JobResult]) -> None:
        """The engine's final result for a job (None: cancelled)."""
        if result is None:
            status, body = CANCELLED, {}
        elif result.timed_out:
            status = TIMED_OUT
            body = {"error": f"job exceeded its execution timeout of {record.timeout or 0:g} s"}
        else:
            status = FAILED if result.failed else COMPLETED
            body = {k: v for k, v in result.body.items() if k != "stopPod"}
        with self._cond:
            if record.status in TERMINAL:
                return
            self._end(record, status, body)

    def _end(self, record: JobRecord, status: str, body: dict[str, Any]) -> None:
        """Give a job its final status (lock held); queue its webhook."""
        record.status = status
        record.body = body
        record.finished = self._clock()
        self.counts[status.lower() if status != TIMED_OUT else "timed_out"] += 1
        record.done.set()
        self._cond.notify_all()
        if status == FAILED:
            log.error("job %s failed: %s", record.id, str(body.get("error"))[:500])
        elif status == COMPLETED:
            log.info("job %s completed", record.id)
        if record.webhook and status in WEBHOOK_STATUSES:
            self.webhooks.post_later(record.id, record.webhook, self._document(record))

    def _document(self, record: JobRecord) -> dict[str, Any]:
        doc: dict[str, Any] = {"id": record.id, "status": record.status}
        now = self._clock()
        if record.started is not None:
            doc["delayTime"] = _ms(record.started - record.created)
            end = record.finished if record.finished is not None else now
            doc["executionTime"] = _ms(end - record.started)
            doc["workerId"] = self.config.worker_id
        elif record.status == IN_QUEUE:
            doc["delayTime"] = _ms(now - record.created)
        if record.status == IN_PROGRESS:
            if record.has_progress:
                doc["output"] = record.progress  # as the platform shows progress updates
        elif record.status in TERMINAL:
            if "output" in record.body:
                doc["output"] = record.body["output"]
            if "error" in record.body:
                doc["error"] = record.body["error"]
        return doc
