"""The local HTTP API: the platform's endpoint API, served on this machine.

``python handler.py --rp_serve_api`` (or ``--waverless_serve_api``) serves
the routes a client calls on a real endpoint (PROTOCOL §15), so client code
written for RunPod or Waverless works unchanged against a laptop:

    POST /run              queue a job; it runs in the background
    POST /runsync          queue a job and wait for it (answers IN_PROGRESS on timeout)
    GET|POST /status/<id>  the job's status document
    GET|POST /stream/<id>  stream chunks produced since the previous call
    POST /cancel/<id>      cancel a queued or running job
    GET  /health           job and worker counts
    POST /purge-queue      drop every queued job
    GET  /openapi.json     these routes, described
    GET  /                 a page to run a job and watch it

Every route also answers under ``/v2/<endpoint_id>/``, the path the runpod
client library builds from ``RUNPOD_ENDPOINT_BASE_URL``.

Jobs run through the same ``Runner`` as the worker, on a thread pool, with
``LocalEndpoint`` as the Channel that keeps stream chunks and progress in
the job store. Flask and waitress are imported here only, and this module is
imported only when the API is served.
"""

import json
import os
import signal
import threading
import time
import uuid
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, Tuple

from .concurrency import MAX_THREADS, Concurrency
from .config import Config
from .handler import ThreadLoops
from .job import Job, JobResult
from .logs import logger
from .runner import Runner

if TYPE_CHECKING:  # pragma: no cover
    import flask

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

MAX_WAIT_SECONDS = 300.0  # the longest a /runsync or /stream ?wait= may hold a request
ALL_INTERFACES = frozenset({"0.0.0.0", "::", "", "*"})
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


@dataclass(frozen=True)
class ApiOptions:
    """Limits and timings of the local API; the defaults suit a laptop."""

    max_body: int = 10 * 1024 * 1024  # bytes; larger request bodies get 413
    max_jobs: int = 1000  # jobs kept at once, queued, running and finished
    ttl: float = 1800.0  # seconds a finished job stays readable
    runsync_wait: float = 90.0  # seconds /runsync waits before answering IN_PROGRESS
    webhook_timeout: float = 10.0  # seconds per webhook attempt
    webhook_attempts: int = 3
    webhook_backoff: float = 0.5  # seconds before the 2nd attempt, doubled after
    concurrency: Optional[int] = None  # default: the flag for the mode (api or realtime)


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
    ) -> None:
        self.config = config
        self.options = options or ApiOptions()
        self.loops = ThreadLoops()
        self.runner = runner or Runner(config, self.loops)
        self._clock = clock
        self.store = JobStore(self.options.max_jobs, self.options.ttl, clock)
        self._cond = threading.Condition()
        self._queue: Deque[JobRecord] = deque()
        self._busy = 0  # pool threads running a handler (cancelled ones included)
        start = self.options.concurrency
        if start is None:
            start = config.realtime_concurrency if config.mode == "realtime" else config.api_concurrency
        self._concurrency = Concurrency(config.concurrency_modifier, start)
        self.counts = {"completed": 0, "failed": 0, "cancelled": 0, "timed_out": 0}
        self._pool = ThreadPoolExecutor(MAX_THREADS, thread_name_prefix="wavespeed-api-job")
        self._hooks = ThreadPoolExecutor(4, thread_name_prefix="wavespeed-webhook")
        self._closing = threading.Event()
        self._session: Any = None
        self._session_lock = threading.Lock()

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
        """Wait up to ``timeout`` seconds for the job to end; return its document."""
        record.done.wait(max(0.0, timeout))
        return self.document(record)

    def take_stream(self, record: JobRecord, wait: float = 0.0) -> Dict[str, Any]:
        """The chunks produced since the previous call, waiting up to ``wait`` s for one."""
        deadline = time.monotonic() + max(0.0, wait)
        with self._cond:
            while record.cursor >= len(record.chunks) and record.status not in TERMINAL:
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
        """Cancel what is queued, flag running jobs as cancelled, stop the pools."""
        self._closing.set()
        with self._cond:
            for record in list(self._queue):
                self._end(record, CANCELLED, {})
            self._queue.clear()
            for record in self.store.records():
                if record.status == IN_PROGRESS:
                    record.job.cancelled.set()
        self._pool.shutdown(wait=wait)
        self._hooks.shutdown(wait=wait)
        if wait:
            self.loops.close_all()
        with self._session_lock:
            if self._session is not None:
                self._session.close()
                self._session = None

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
            doc = self._document(record)
            try:
                self._hooks.submit(self._send_webhook, record.webhook, doc)
            except RuntimeError:  # shutting down
                log.warning("webhook for job %s not sent: shutting down", record.id)

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

    def _send_webhook(self, url: str, doc: Dict[str, Any]) -> bool:
        """POST the final status document, retrying a few times; True when delivered."""
        import requests

        with self._session_lock:
            if self._session is None:
                self._session = requests.Session()
            session = self._session
        delay = self.options.webhook_backoff
        attempts = max(1, self.options.webhook_attempts)
        for attempt in range(1, attempts + 1):
            problem = ""
            try:
                response = session.post(url, json=doc, timeout=self.options.webhook_timeout)
                if 200 <= response.status_code < 300:
                    log.info("webhook for job %s delivered", doc["id"])
                    return True
                problem = f"HTTP {response.status_code}"
            except requests.RequestException as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if attempt < attempts:
                log.warning(
                    "webhook for job %s: attempt %d failed (%s); retrying", doc["id"], attempt, problem
                )
                if self._closing.wait(delay):
                    break
                delay *= 2
            else:
                log.error("webhook for job %s not delivered (%s)", doc["id"], problem)
        return False


# -- the Flask app --------------------------------------------------------------------


def openapi_document() -> Dict[str, Any]:
    """An OpenAPI 3 description of the local API's routes."""
    job_id = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
    status_doc = {"$ref": "#/components/schemas/JobStatus"}
    error = {"description": "error", "content": _json({"$ref": "#/components/schemas/Error"})}
    run_body = {
        "required": True,
        "content": _json({"$ref": "#/components/schemas/RunRequest"}),
    }

    def reply(description: str, schema: Dict[str, Any]) -> Dict[str, Any]:
        return {"description": description, "content": _json(schema)}

    def job_route(summary: str, schema: Dict[str, Any], methods: Tuple[str, ...]) -> Dict[str, Any]:
        operation = {
            "summary": summary,
            "parameters": [job_id],
            "responses": {"200": reply(summary, schema), "404": error},
        }
        return {method: dict(operation) for method in methods}

    stream_doc = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "status": {"type": "string"},
            "stream": {
                "type": "array",
                "items": {"type": "object", "properties": {"output": {}}},
            },
        },
    }
    paths = {
        "/run": {
            "post": {
                "summary": "Queue a job; it runs in the background",
                "requestBody": run_body,
                "responses": {
                    "200": reply("queued", status_doc),
                    "400": error,
                    "413": error,
                    "429": error,
                },
            }
        },
        "/runsync": {
            "post": {
                "summary": "Run a job and wait for it; IN_PROGRESS with the id after ?wait= ms",
                "parameters": [
                    {"name": "wait", "in": "query", "schema": {"type": "integer"}, "required": False}
                ],
                "requestBody": run_body,
                "responses": {"200": reply("the job's status", status_doc), "400": error, "413": error},
            }
        },
        "/status/{job_id}": job_route("The job's status document", status_doc, ("get", "post")),
        "/stream/{job_id}": job_route(
            "Stream chunks produced since the previous call", stream_doc, ("get", "post")
        ),
        "/cancel/{job_id}": job_route("Cancel a queued or running job", status_doc, ("post",)),
        "/health": {
            "get": {
                "summary": "Job and worker counts",
                "responses": {"200": reply("counts", {"type": "object"})},
            }
        },
        "/purge-queue": {
            "post": {
                "summary": "Cancel every queued job",
                "responses": {"200": reply("how many were removed", {"type": "object"})},
            }
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "wavespeed local endpoint API",
            "version": _version(),
            "description": "Every route is also served under /v2/{endpoint_id}/.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "RunRequest": {
                    "type": "object",
                    "required": ["input"],
                    "properties": {
                        "input": {"description": "passed to the handler as job['input']"},
                        "webhook": {"type": "string", "description": "POSTed the final status"},
                        "policy": {
                            "type": "object",
                            "properties": {"executionTimeout": {"type": "integer"}},
                        },
                    },
                },
                "JobStatus": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "status": {
                            "type": "string",
                            "enum": [IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED, TIMED_OUT],
                        },
                        "delayTime": {"type": "integer", "description": "ms queued"},
                        "executionTime": {"type": "integer", "description": "ms running"},
                        "output": {},
                        "error": {"type": "string"},
                    },
                },
                "Error": {"type": "object", "properties": {"error": {"type": "string"}}},
            }
        },
    }


def _json(schema: Dict[str, Any]) -> Dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _version() -> str:
    from .. import __version__

    return __version__


class BadRequest(Exception):
    """The request body is not a job; the message says why."""


def parse_run_request(raw: bytes) -> Tuple[Any, Optional[str], Optional[float], Dict[str, Any]]:
    """Check a /run body; return (input, webhook, timeout seconds, extra job keys)."""
    try:
        data = json.loads(raw.decode("utf-8")) if raw else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest('the request body must be a JSON object: {"input": {...}}')
    if "input" not in data:
        raise BadRequest('the request body has no "input": send {"input": {...}}')
    webhook = data.get("webhook")
    if webhook is not None and (
        not isinstance(webhook, str) or not webhook.startswith(("http://", "https://"))
    ):
        raise BadRequest('"webhook" must be an http(s) URL')
    timeout: Optional[float] = None
    policy = data.get("policy")
    if policy is not None:
        if not isinstance(policy, dict):
            raise BadRequest('"policy" must be an object')
        value = policy.get("executionTimeout")
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise BadRequest('"policy.executionTimeout" must be a positive number of ms')
            timeout = value / 1000.0
    extra = {"s3Config": data["s3Config"]} if "s3Config" in data else {}
    return data["input"], webhook, timeout, extra


def create_app(
    config: Config,
    *,
    runner: Optional[Runner] = None,
    options: Optional[ApiOptions] = None,
    endpoint: Optional[LocalEndpoint] = None,
) -> "flask.Flask":
    """Build the Flask app of the local API.

    The app's ``LocalEndpoint`` (its jobs and threads) is
    ``app.extensions["wavespeed"]``; call its ``close()`` when done.
    """
    import flask
    from werkzeug.exceptions import HTTPException

    options = options or ApiOptions()
    jobs = endpoint or LocalEndpoint(config, runner, options)
    app = flask.Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = options.max_body
    app.extensions["wavespeed"] = jobs

    def reply(doc: Any, status: int = 200) -> "flask.Response":
        body = json.dumps(doc, ensure_ascii=False, allow_nan=False, default=str)
        return flask.Response(body, status=status, mimetype="application/json")

    def not_found(job_id: str) -> "flask.Response":
        return reply({"error": f"job {job_id} not found (unknown, or expired)"}, 404)

    def wait_seconds(default: float) -> float:
        raw = flask.request.args.get("wait")
        if raw is None:
            return default
        try:
            return min(max(0.0, float(raw) / 1000.0), MAX_WAIT_SECONDS)
        except ValueError:
            raise BadRequest("?wait= must be a number of milliseconds") from None

    def queue_job() -> JobRecord:
        job_input, webhook, timeout, extra = parse_run_request(flask.request.get_data(cache=False))
        return jobs.submit(job_input, webhook, timeout, extra)

    def run(**_: str) -> "flask.Response":
        record = queue_job()
        # Like the platform: /run answers "queued" even if a slot took it at once.
        return reply({"id": record.id, "status": IN_QUEUE})

    def runsync(**_: str) -> "flask.Response":
        wait = wait_seconds(options.runsync_wait)
        record = queue_job()
        return reply(jobs.wait(record, wait))

    def status(job_id: str, **_: str) -> "flask.Response":
        record = jobs.get(job_id)
        if record is None:
            return not_found(job_id)
        return reply(jobs.document(record))

    def stream(job_id: str, **_: str) -> "flask.Response":
        record = jobs.get(job_id)
        if record is None:
            return not_found(job_id)
        return reply(jobs.take_stream(record, wait_seconds(0.0)))

    def cancel(job_id: str, **_: str) -> "flask.Response":
        doc = jobs.cancel(job_id)
        if doc is None:
            return not_found(job_id)
        return reply({"id": doc["id"], "status": doc["status"]})

    def health(**_: str) -> "flask.Response":
        return reply(jobs.health())

    def purge(**_: str) -> "flask.Response":
        return reply({"removed": jobs.purge(), "status": "completed"})

    routes: List[Tuple[str, str, Callable[..., Any], Tuple[str, ...]]] = [
        ("/run", "run", run, ("POST",)),
        ("/runsync", "runsync", runsync, ("POST",)),
        ("/status/<job_id>", "status", status, ("GET", "POST")),
        ("/stream/<job_id>", "stream", stream, ("GET", "POST")),
        ("/cancel/<job_id>", "cancel", cancel, ("POST",)),
        ("/health", "health", health, ("GET",)),
        ("/purge-queue", "purge_queue", purge, ("POST",)),
    ]
    for prefix, tag in (("", "root"), ("/v2/<endpoint_id>", "v2")):
        for path, name, view, methods in routes:
            app.add_url_rule(prefix + path, f"{tag}_{name}", view, methods=list(methods))

    @app.route("/openapi.json")
    def openapi() -> "flask.Response":
        return reply(openapi_document())

    @app.route("/")
    def page() -> "flask.Response":
        return flask.send_from_directory(STATIC_DIR, "index.html", max_age=0)

    @app.errorhandler(BadRequest)
    def bad_request(exc: BadRequest) -> "flask.Response":
        return reply({"error": str(exc)}, 400)

    @app.errorhandler(StoreFull)
    def store_full(exc: StoreFull) -> "flask.Response":
        return reply({"error": f"too many jobs: {exc}"}, 429)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> "flask.Response":
        code = exc.code or 500
        if code == 413:
            message = f"the request body is larger than {options.max_body} bytes"
        else:
            message = exc.description or exc.name
        return reply({"error": message}, code)

    return app


# -- serving --------------------------------------------------------------------------


def _address(config: Config) -> Tuple[str, int, str]:
    if config.mode == "realtime":
        return "0.0.0.0", config.realtime_port, "realtime"
    return config.api_host, config.api_port, "local API"


class ApiServer:
    """The app on a waitress server, with the app's ``LocalEndpoint``."""

    def __init__(self, server: Any, app: "flask.Flask") -> None:
        self.server = server
        self.app = app
        self.endpoint: LocalEndpoint = app.extensions["wavespeed"]

    @property
    def host(self) -> str:
        return str(self.server.effective_host)

    @property
    def port(self) -> int:
        """The bound port (the one the OS picked when asked for port 0)."""
        return int(self.server.effective_port)

    def run(self) -> None:
        """Serve until ``close()`` (or KeyboardInterrupt in the main thread)."""
        self.server.run()

    def close(self, wait: bool = True) -> None:
        """Stop listening, then stop the endpoint (``wait``: for running handlers)."""
        self.server.close()
        self.endpoint.close(wait=wait)


def make_server(
    config: Config,
    *,
    host: Optional[str] = None,
    port: Optional[int] = None,
    runner: Optional[Runner] = None,
    options: Optional[ApiOptions] = None,
) -> ApiServer:
    """The app on a waitress server, not yet running; ``host``/``port`` override the config.

    Port 0 picks a free port: read it from ``.port``.
    """
    import waitress

    default_host, default_port, _ = _address(config)
    app = create_app(config, runner=runner, options=options)
    jobs: LocalEndpoint = app.extensions["wavespeed"]
    # Jobs run on their own pool; waitress threads only hold requests, some
    # of which wait (/runsync, /stream?wait=), so keep a few more than slots.
    threads = min(64, max(8, 2 * jobs.concurrency + 4))
    server = waitress.create_server(
        app,
        host=default_host if host is None else host,
        port=default_port if port is None else port,
        threads=threads,
        ident="wavespeed",
    )
    return ApiServer(server, app)


def serve(config: Config, *, options: Optional[ApiOptions] = None) -> None:
    """Serve the local API (mode "api") or the realtime API (mode "realtime") until SIGINT/SIGTERM."""
    host, port, what = _address(config)
    server = make_server(config, options=options)
    shown = "localhost" if host in ALL_INTERFACES else host
    log.info(
        "%s on http://%s:%d/ (concurrency %d); open it in a browser, or POST /run",
        what,
        shown,
        server.port,
        server.endpoint.concurrency,
    )
    if host in ALL_INTERFACES:
        if config.mode == "realtime":
            log.info("realtime mode listens on all interfaces (0.0.0.0:%s)", port)
        else:
            log.warning(
                "the local API listens on all interfaces (%s): anyone who can reach this "
                "machine can run jobs; use --rp_api_host localhost to keep it private",
                host or "*",
            )

    previous: Any = None
    if threading.current_thread() is threading.main_thread():

        def on_term(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt  # leaves server.run() like Ctrl-C does

        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        server.run()
    except KeyboardInterrupt:
        log.info("stopping the %s", what)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        # Running handlers are flagged cancelled; the process exits when they return.
        server.close(wait=False)
