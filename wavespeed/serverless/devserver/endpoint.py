"""The local API's jobs: queued, run through the Runner, tracked, expired.

``LocalEndpoint`` is what the routes call and the Channel its jobs carry
(stream chunks and progress land in the job store). It knows nothing of
HTTP; ``app.py`` turns requests into calls to it.
"""

import json
import math
import threading
import time
import uuid
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional

from ..concurrency import MAX_THREADS, Concurrency
from ..config import Config
from ..handler import ThreadLoops
from ..job import Job, JobResult
from ..logs import logger
from ..runner import Runner
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
        doc = _finite(doc)
        text = json.dumps(doc, ensure_ascii=False, allow_nan=False, default=str)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(doc, allow_nan=False, default=str).encode("ascii")


def _finite(value: Any) -> Any:
    """A copy of ``value`` with every NaN or Infinity float replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


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
    body: Dict[str, Any] = field(default_factory=dict)  # final output / error
    progress: Any = None
    has_progress: bool = False
    chunks: List[Any] = field(default_factory=list)
    cursor: int = 0  # chunks before this index were returned by /stream
    done: threading.Event = field(default_factory=threading.Event)
    timer: Optional[threading.Timer] = None

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
        self._jobs: "OrderedDict[str, JobRecord]" = OrderedDict()

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

    def records(self) -> List[JobRecord]:
        return list(self._jobs.values())


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


class LocalEndpoint:
    """Queues, runs and tracks the local API's jobs; the Channel of those jobs.

    A job waits IN_QUEUE until a slot is free (the concurrency comes from the
    flag or the handler's ``concurrency_modifier``), then runs on a pool
    thread through the Runner. Cancelling or timing out a running job sets
    ``job.cancelled`` and marks it at once; whatever the handler returns
    afterwards is discarded, but its thread keeps the slot until it returns.
    """

    def __init__(
        self,
        config: Config,
        runner: Optional[Runner] = None,
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
        self.loops = ThreadLoops()
        self.runner = runner or Runner(config, self.loops)
        self._clock = clock
        self.store = JobStore(self.options.max_jobs, self.options.ttl, clock)
        self._cond = threading.Condition()
        self._queue: Deque[JobRecord] = deque()
        self._busy = 0  # pool threads running a handler (cancelled ones included)
        self._concurrency = Concurrency(config.concurrency_modifier, self.options.concurrency or 1)
        self.counts = {"completed": 0, "failed": 0, "cancelled": 0, "timed_out": 0}
        self._pool = ThreadPoolExecutor(MAX_THREADS, thread_name_prefix="wavespeed-api-job")
        self._closing = threading.Event()
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
        extra: Optional[Dict[str, Any]] = None,
    ) -> JobRecord:
        """Queue a job; it starts as soon as a slot is free. Raises StoreFull."""
        data: Dict[str, Any] = dict(extra or {})
        data.update(id=str(uuid.uuid4()), input=job_input)  # uuid4: unguessable
        if timeout is None:
            timeout = self.config.job_timeout
        record = JobRecord(
            job=Job(data, self), created=self._clock(), webhook=webhook, timeout=timeout
        )
        with self._cond:
            if self._closing.is_set():
                raise StoreFull("the server is shutting down")
            self.store.add(record)
            self._queue.append(record)
        log.info("job %s queued", record.id)
        self._dispatch()
        return record

    def get(self, job_id: str) -> Optional[JobRecord]:
        with self._cond:
            return self.store.get(job_id)

    def document(self, record: JobRecord) -> Dict[str, Any]:
        """The status document of a job, as the platform's /status returns it."""
        with self._cond:
            return self._document(record)

    def wait(self, record: JobRecord, timeout: float) -> Dict[str, Any]:
        """Wait up to ``timeout`` seconds for the job to end (or ``close()``); return its document."""
        with self._cond:
            self._cond.wait_for(
                lambda: record.done.is_set() or self._closing.is_set(), max(0.0, timeout)
            )
            return self._document(record)

    def take_stream(self, record: JobRecord, wait: float = 0.0) -> Dict[str, Any]:
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
            doc: Dict[str, Any] = {
                "id": record.id,
                "status": record.status,
                "stream": [{"output": c} for c in chunks],
            }
            if record.status in TERMINAL and "error" in record.body:
                doc["error"] = record.body["error"]
            return doc

    def cancel(self, job_id: str) -> Optional[Dict[str, Any]]:
        """Cancel a queued or running job; None when the id is unknown."""
        with self._cond:
            record = self.store.get(job_id)
            if record is None:
                return None
            if record.status == IN_QUEUE:
                self._queue.remove(record)
                self._end(record, CANCELLED, {})
            elif record.status == IN_PROGRESS:
                record.job.cancelled.set()
                self._end(record, CANCELLED, {})
            doc = self._document(record)
        if doc["status"] == CANCELLED:
            log.info("job %s cancelled", job_id)
        return doc

    def purge(self) -> int:
        """Cancel every queued job; running jobs go on. Returns how many were removed."""
        with self._cond:
            removed = list(self._queue)
            self._queue.clear()
            for record in removed:
                self._end(record, CANCELLED, {})
        if removed:
            log.info("purged %d queued jobs", len(removed))
        return len(removed)

    def health(self) -> Dict[str, Any]:
        """The platform's /health shape: job counts and worker (slot) counts."""
        with self._cond:
            self.store.evict()
            running = sum(1 for r in self.store.records() if r.status == IN_PROGRESS)
            busy = self._busy
            return {
                "jobs": {
                    "completed": self.counts["completed"],
                    "failed": self.counts["failed"] + self.counts["timed_out"],
                    "inProgress": running,
                    "inQueue": len(self._queue),
                    "retried": 0,
                },
                "workers": {"idle": max(0, self.concurrency - busy), "running": busy},
            }

    def close(self, wait: bool = True) -> None:
        """Cancel what is queued, flag running jobs as cancelled, end waits, stop the pools."""
        self._closing.set()
        with self._cond:
            self._cond.notify_all()  # requests waiting for a job answer now
            for record in list(self._queue):
                self._end(record, CANCELLED, {})
            self._queue.clear()
            for record in self.store.records():
                if record.status == IN_PROGRESS:
                    record.job.cancelled.set()
        self._pool.shutdown(wait=wait)
        self.webhooks.close(wait=wait)
        if wait:
            self.loops.close_all()

    # -- the Channel a job carries --------------------------------------------------

    def send_chunk(self, job: Job, value: Any, payload: bytes) -> None:
        with self._cond:
            record = self.store.peek(job.id)
            if record is None or record.status != IN_PROGRESS:
                return  # cancelled or timed out: the chunk is discarded with the result
            record.chunks.append(value)
            self._cond.notify_all()

    def send_progress(self, job: Job, data: Any) -> None:
        with self._cond:
            record = self.store.peek(job.id)
            if record is None or record.status != IN_PROGRESS:
                log.debug("progress_update for job %s, which is not running; dropped", job.id)
                return
            record.progress = data
            record.has_progress = True
            self._cond.notify_all()

    # -- running jobs ---------------------------------------------------------------

    @property
    def concurrency(self) -> int:
        return self._concurrency.value

    def _dispatch(self) -> None:
        # The modifier is user code: call it outside the lock.
        concurrency = self._concurrency.update()
        with self._cond:
            while self._queue and self._busy < concurrency and not self._closing.is_set():
                record = self._queue.popleft()
                record.status = IN_PROGRESS
                record.started = self._clock()
                self._busy += 1
                if record.timeout:
                    record.timer = threading.Timer(record.timeout, self._time_out, (record,))
                    record.timer.daemon = True
                    record.timer.start()
                try:
                    self._pool.submit(self._process, record)
                except RuntimeError:  # the pool was shut down by close()
                    self._busy -= 1
                    record.job.cancelled.set()
                    self._end(record, CANCELLED, {})
                    break
                self._cond.notify_all()

    def _process(self, record: JobRecord) -> None:
        result: Optional[JobResult] = None
        try:
            log.info("job %s started", record.id)
            result = self.runner.run(record.job)
        except BaseException as exc:  # noqa: BLE001 - the runner should never raise; be sure
            log.exception("internal error running job %s", record.id)
            result = JobResult(
                record.id, {"error": f"internal error: {type(exc).__name__}: {exc}"}, b"", failed=True
            )
        finally:
            if record.timer is not None:
                record.timer.cancel()
            with self._cond:
                self._busy -= 1
                if record.status == IN_PROGRESS and result is not None:
                    if result.cancelled:
                        self._end(record, CANCELLED, {})
                    else:
                        body = {k: v for k, v in result.body.items() if k != "stopPod"}
                        self._end(record, FAILED if result.failed else COMPLETED, body)
                else:
                    log.info("job %s ended after it was %s; result discarded", record.id, record.status)
                self._cond.notify_all()
            if result is not None and result.stop_pod:
                log.info("refresh_worker: on a platform the worker would stop after job %s", record.id)
            self._dispatch()

    def _time_out(self, record: JobRecord) -> None:
        with self._cond:
            if record.status != IN_PROGRESS:
                return
            record.job.cancelled.set()
            message = f"job exceeded its execution timeout of {record.timeout:g} s"
            self._end(record, TIMED_OUT, {"error": message})
        log.warning("job %s timed out", record.id)

    def _end(self, record: JobRecord, status: str, body: Dict[str, Any]) -> None:
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

    def _document(self, record: JobRecord) -> Dict[str, Any]:
        doc: Dict[str, Any] = {"id": record.id, "status": record.status}
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
