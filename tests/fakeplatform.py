"""A loopback fake of the RunPod / Waverless job platform, for worker tests.

It is a real HTTP/1.1 keep-alive server on ``127.0.0.1`` (ephemeral port) that
speaks the worker protocol of ``/work/shared/PROTOCOL.md`` sections 1-9:
job-take, job-take-batch, job-done, job-stream, ping and job-stop under
``/v2/<endpoint>/``. Tests queue jobs, optionally script faults, run a worker
against :meth:`FakePlatform.env`, then inspect what the worker sent.

Typical use::

    with FakePlatform(longpoll=0.5) as fp:
        job = fp.add_job({"prompt": "hi"})
        run_worker(env=fp.env())
        assert fp.wait_results(1)
        assert fp.results(job) == [{"output": {...}}]

Design notes:

* One ``threading.Condition`` (over an ``RLock``) guards every piece of
  state, so a predicate given to :meth:`FakePlatform.wait_for` may call the
  public accessors while the lock is held.
* Results, progress and stream chunks are indexed incrementally as requests
  arrive, so waiting on them stays O(1) per request even with thousands of
  jobs.
* Only posts the fake *accepted* (answered 2xx) count as results, progress or
  stream chunks by default: a post answered 500 (scripted) or 400
  (``result_status``) was refused by the platform, and the worker is expected
  to retry or report otherwise. Pass ``include_rejected=True`` to see them all.
"""

import collections
import json
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import (
    Any,
    Callable,
    Deque,
    Dict,
    Iterable,
    List,
    Optional,
    Set,
    Tuple,
    Union,
    overload,
)
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["Recorded", "Fault", "FakePlatform", "ROUTES"]

#: Every route name a :class:`Recorded` can carry.
ROUTES: Tuple[str, ...] = (
    "job-take",
    "job-take-batch",
    "job-done",
    "job-stream",
    "ping",
    "job-stop",
    "other",
)

# The HTTP method each real route expects; anything else is answered 405 so a
# worker using the wrong verb fails loudly instead of "working" against the fake.
_METHODS: Dict[str, str] = {
    "job-take": "GET",
    "job-take-batch": "GET",
    "job-done": "POST",
    "job-stream": "POST",
    "ping": "GET",
    "job-stop": "GET",
}

_JSON_HEADERS: Dict[str, str] = {"Content-Type": "application/json"}


@dataclass
class Recorded:
    """One request as the fake received it.

    Instances are shared with the fake (accessors return new lists of the same
    objects, which keeps them cheap enough to call from ``wait_for``
    predicates); treat them as read-only.
    """

    method: str
    #: The raw request target, query included (as sent on the request line).
    path: str
    #: One of :data:`ROUTES`.
    route: str
    #: ``parse_qs(keep_blank_values=True)``, last value per key.
    query: Dict[str, str]
    #: Header names lower-cased; for repeated headers the last one wins.
    headers: Dict[str, str]
    body: bytes
    #: ``time.monotonic()`` when the request (headers and body) had arrived.
    time: float
    #: For job-done / job-stream: the last path segment, i.e. the job id.
    job_id: Optional[str] = None
    #: The path segment after the route name (the worker / pod id), if any.
    worker_id: Optional[str] = None
    #: The status the fake answered; ``None`` while held (long-poll, delay)
    #: or when the connection was reset instead of answered.
    status: Optional[int] = None
    #: Serial number of the TCP connection the request came on (1, 2, ...);
    #: lets tests check that a worker reuses keep-alive connections.
    conn_id: int = 0
    #: True when a scripted :class:`Fault` answered instead of the normal logic.
    faulted: bool = False

    def json(self) -> Any:
        """The body parsed as JSON (raises ``ValueError`` when it is not)."""
        return json.loads(self.body)

    @property
    def accepted(self) -> bool:
        """True when the fake answered 2xx."""
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Fault:
    """A scripted answer that replaces the normal one for one request.

    The request is still read fully and recorded. A faulted job-take hands out
    no job (the queue is untouched).
    """

    status: int = 500
    body: Union[bytes, str] = b""
    headers: Dict[str, str] = field(default_factory=dict)
    #: Seconds to hold the request before answering, e.g. to run past the
    #: client's read timeout. ``FakePlatform.stop()`` cuts the wait short.
    delay: float = 0.0
    #: Close the connection abruptly (TCP RST via ``SO_LINGER`` 0) instead of
    #: answering; the client sees a connection error. ``delay`` applies first.
    reset: bool = False

    @classmethod
    def json(cls, obj: Any, status: int = 200, **kwargs: Any) -> "Fault":
        """A fault answering ``obj`` as a raw JSON body (e.g. a malformed job,
        a list holding non-dicts), with ``Content-Type: application/json``."""
        headers = dict(_JSON_HEADERS)
        headers.update(kwargs.pop("headers", {}))
        return cls(status=status, body=json.dumps(obj).encode("utf-8"), headers=headers, **kwargs)


def _parse_body(body: bytes) -> Any:
    """JSON-decode a posted body; on failure keep the raw bytes so a test can
    still see (and assert on) what a broken worker sent."""
    try:
        return json.loads(body)
    except ValueError:
        return body


def _is_progress(parsed: Any) -> bool:
    # PROTOCOL.md section 6: progress updates go to job-done with this status.
    return isinstance(parsed, dict) and parsed.get("status") == "IN_PROGRESS"


def _output_of(parsed: Any) -> Any:
    """The ``output`` of a posted body, or the whole body when it has none
    (so a malformed post still shows up rather than as a silent ``None``)."""
    if isinstance(parsed, dict) and "output" in parsed:
        return parsed["output"]
    return parsed


class _Server(ThreadingHTTPServer):
    """The HTTP server; carries a back-reference to its platform."""

    daemon_threads = True
    # Worker tests may open many pooled connections at once.
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, platform: "FakePlatform") -> None:
        self.platform = platform
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Connection errors are routine here (resets we caused, clients that
        # time out, sockets stop() shuts down); only report real bugs.
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, ValueError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Serves one keep-alive connection; all logic lives in FakePlatform."""

    protocol_version = "HTTP/1.1"
    # Responses are written in one send, but TCP_NODELAY also keeps a client's
    # delayed ACK from stalling anything split across segments (40 ms each).
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.conn_id = self.server.platform._register_conn(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.platform._unregister_conn(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # Silence the per-request stderr line: tests push thousands of requests.
        pass

    def _handle(self) -> None:
        self.server.platform._serve(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _handle

    # -- helpers used by FakePlatform._serve --------------------------------

    def read_body(self) -> bytes:
        """Read the whole request body so the next request on this keep-alive
        connection starts at the right byte."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    break
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # Skip trailers up to the blank line.
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)  # the CRLF after each chunk
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def send(self, status: int, body: bytes, headers: Optional[Dict[str, str]] = None) -> None:
        """Write a complete response in one ``sendall``."""
        # RFC 9110: 1xx/204/304 carry no body and 1xx/204 no Content-Length
        # (the Go platforms don't send one either; the status frames it).
        bodyless = status < 200 or status in (204, 304)
        if bodyless:
            body = b""
        reason = self.responses.get(status, ("",))[0]
        lines = ["HTTP/1.1 %d %s" % (status, reason)]
        extra = headers or {}
        lower = {k.lower() for k in extra}
        if not (status < 200 or status == 204):
            lines.append("Content-Length: %d" % len(body))
        if body and "content-type" not in lower:
            lines.append("Content-Type: application/json")
        for name, value in extra.items():
            if name.lower() != "content-length":
                lines.append("%s: %s" % (name, value))
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head if self.command == "HEAD" else head + body)

    def reset(self) -> None:
        """Abort the connection with a TCP RST, answering nothing."""
        self.close_connection = True
        sock = self.connection
        try:
            # SO_LINGER on with timeout 0: close() discards and sends RST.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # The buffered reader holds a reference that defers the real
            # close; drop it so close() below hits the kernel now.
            self.rfile.close()
            self.wfile.close()
            sock.close()
        except OSError:
            pass


class FakePlatform:
    """A fake job platform on ``127.0.0.1`` for running workers against.

    Args:
        style: ``"runpod"`` or ``"waverless"``: which env var names and URL
            templates :meth:`env` returns. The server answers both.
        longpoll: 0 answers an empty job-take with 204 at once (Waverless);
            > 0 holds it open up to this many seconds for a job (RunPod),
            returning early when one is queued or :meth:`stop` is called.
        endpoint: the ``<endpoint>`` path segment; other endpoints get 404.
        api_key: the key :meth:`env` hands the worker (omitted when None).
        require_auth: answer 401 unless ``Authorization`` is the key, raw or
            ``Bearer <key>`` (PROTOCOL.md section 8). Off by default.
        stop_longpoll: how long an empty job-stop is held; defaults to
            ``longpoll``.
    """

    #: What job-done answers normally; set e.g. 400 to emulate Waverless
    #: refusing a result. job-stream answers the same.
    result_status: int = 200

    def __init__(
        self,
        *,
        style: str = "runpod",
        longpoll: float = 0.0,
        endpoint: str = "ep",
        api_key: Optional[str] = "test-key",
        require_auth: bool = False,
        stop_longpoll: Optional[float] = None,
    ) -> None:
        if style not in ("runpod", "waverless"):
            raise ValueError("style must be 'runpod' or 'waverless', not %r" % (style,))
        self.style = style
        self.longpoll = float(longpoll)
        self.stop_longpoll = self.longpoll if stop_longpoll is None else float(stop_longpoll)
        self.endpoint = endpoint
        self.api_key = api_key
        self.require_auth = require_auth
        self.result_status = 200
        self.url = ""

        # The one lock. An RLock so wait_for predicates can call accessors.
        self._cond = threading.Condition(threading.RLock())
        self._queue: Deque[Any] = collections.deque()
        self._jobs: Dict[str, Dict[str, Any]] = {}  # id -> job, for requeue()
        self._next_id = 0
        self._faults: Dict[str, Deque[Fault]] = {r: collections.deque() for r in ROUTES}
        self._delays: Dict[str, float] = {}  # route -> seconds every request is held
        self._rules: Dict[str, Callable[[Recorded], Optional[Fault]]] = {}
        self._to_stop: List[str] = []
        self._requests: List[Recorded] = []
        self._by_route: Dict[str, List[Recorded]] = {r: [] for r in ROUTES}
        self._taken: List[str] = []
        # job id -> [(Recorded, parsed body)], in arrival order.
        self._finals: Dict[str, List[Tuple[Recorded, Any]]] = {}
        self._progress: Dict[str, List[Tuple[Recorded, Any]]] = {}
        self._stream: Dict[str, List[Tuple[Recorded, Any]]] = {}
        self._accepted_final_ids: Set[str] = set()
        self._conns: Dict[socket.socket, int] = {}
        self._conn_serial = 0
        self._active = 0  # requests being handled right now
        self._stopped = False
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> "FakePlatform":
        """Bind an ephemeral port and serve in a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError("FakePlatform already started")
        self._server = _Server(self)
        # Always 127.0.0.1 (server_address is typed loosely: str | bytes).
        self.url = "http://127.0.0.1:%d" % (self._server.server_address[1],)
        # A short poll interval keeps stop() quick; the cost is negligible.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fakeplatform",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, grace: float = 2.0) -> None:
        """Shut the server down: wake every held long-poll and delay (they
        answer at once), give in-flight requests up to ``grace`` seconds to
        finish, close all connections and join the serve thread. Idempotent."""
        with self._cond:
            if self._stopped:
                return
            self._stopped = True
            self._cond.notify_all()
            # Let woken handlers write their answers before sockets go away,
            # so a held client sees a clean 204 rather than a reset.
            self._cond.wait_for(lambda: self._active == 0, timeout=grace)
            conns = list(self._conns)
        server, thread = self._server, self._thread
        if server is not None:
            server.shutdown()
            server.server_close()
        # Idle keep-alive handler threads block reading the next request;
        # shutting their sockets down ends them (clients see the close).
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if thread is not None:
            thread.join(timeout=5.0)

    def __enter__(self) -> "FakePlatform":
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def stopped(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stopped

    # -- configuration for the worker ---------------------------------------

    def env(self, worker_id: str = "pod-1", **extra: str) -> Dict[str, str]:
        """The environment variables a worker needs to run against this fake,
        for ``style``. The templates keep their placeholders (``$ID``,
        ``$RUNPOD_POD_ID`` / ``$WAVERLESS_POD_ID``); the worker fills them.
        ``extra`` is merged in last (e.g. ``RUNPOD_PING_INTERVAL="200"``)."""
        if not self.url:
            raise RuntimeError("start() the FakePlatform before asking for env()")
        base = "%s/v2/%s" % (self.url, self.endpoint)
        if self.style == "runpod":
            env = {
                "RUNPOD_WEBHOOK_GET_JOB": base + "/job-take/$ID?gpu=test",
                "RUNPOD_WEBHOOK_POST_OUTPUT": base + "/job-done/$RUNPOD_POD_ID/$ID?gpu=test",
                "RUNPOD_WEBHOOK_POST_STREAM": base + "/job-stream/$RUNPOD_POD_ID/$ID?gpu=test",
                "RUNPOD_WEBHOOK_PING": base + "/ping/$RUNPOD_POD_ID?gpu=test",
                "RUNPOD_POD_ID": worker_id,
                "RUNPOD_ENDPOINT_ID": self.endpoint,
                "RUNPOD_PING_INTERVAL": "10000",
            }
            if self.api_key is not None:
                env["RUNPOD_AI_API_KEY"] = self.api_key
        else:
            env = {
                "WAVERLESS_WEBHOOK_GET_JOB": base + "/job-take/$ID?",
                "WAVERLESS_WEBHOOK_POST_OUTPUT": base + "/job-done/$WAVERLESS_POD_ID/$ID?",
                "WAVERLESS_WEBHOOK_POST_STREAM": base + "/job-stream/$WAVERLESS_POD_ID/$ID?",
                "WAVERLESS_WEBHOOK_PING": base + "/ping/$WAVERLESS_POD_ID",
                "WAVERLESS_POD_ID": worker_id,
                "WAVERLESS_ENDPOINT_ID": self.endpoint,
            }
            if self.api_key is not None:
                env["WAVERLESS_API_KEY"] = self.api_key
        env.update(extra)
        return env

    # -- scripting ----------------------------------------------------------

    def add_job(self, input: Any = None, id: Optional[str] = None, **extra: Any) -> str:  # noqa: A002
        """Queue ``{"id", "input", **extra}``; ``id`` defaults to ``job-<n>``.
        Returns the id."""
        with self._cond:
            job_id = self._new_id() if id is None else id
            job = {"id": job_id, "input": input}
            job.update(extra)
            self._jobs[job_id] = job
            self._queue.append(job)
            self._cond.notify_all()
        return job_id

    def add_jobs(self, inputs: Iterable[Any]) -> List[str]:
        """Queue one job per input (default ids); returns the ids in order."""
        with self._cond:
            ids = []
            for value in inputs:
                job_id = self._new_id()
                job = {"id": job_id, "input": value}
                self._jobs[job_id] = job
                self._queue.append(job)
                ids.append(job_id)
            self._cond.notify_all()
        return ids

    def add_raw(self, item: Any) -> None:
        """Queue any JSON value, handed out as-is by the next take (for
        malformed jobs: missing ``id`` / ``input``, non-dicts, ...)."""
        with self._cond:
            self._queue.append(item)
            self._cond.notify_all()

    def requeue(self, job_id: str) -> None:
        """Hand a job added with :meth:`add_job` out again (platforms re-queue
        at least once). Raises ``KeyError`` for an unknown id."""
        with self._cond:
            self._queue.append(self._jobs[job_id])
            self._cond.notify_all()

    def script(self, route: str, *faults: Fault) -> None:
        """The next ``len(faults)`` requests on ``route`` get these answers, in
        order; then normal behaviour resumes. Calls accumulate."""
        if route not in self._faults:
            raise ValueError("unknown route %r; one of %s" % (route, ", ".join(ROUTES)))
        with self._cond:
            self._faults[route].extend(faults)

    def delay(self, route: str, seconds: float) -> None:
        """Hold every later request on ``route`` ``seconds`` before answering it
        normally (a slow endpoint, e.g. 20 ms per stream post); 0 turns it off.
        Scripted faults keep their own ``delay``; :meth:`stop` cuts waits short."""
        if route not in self._faults:
            raise ValueError("unknown route %r; one of %s" % (route, ", ".join(ROUTES)))
        with self._cond:
            self._delays[route] = float(seconds)

    def rule(self, route: str, decide: Optional[Callable[[Recorded], Optional[Fault]]]) -> None:
        """A standing fault: every request on ``route`` with no scripted fault
        left is offered to ``decide(rec)`` (called without the lock held); a
        ``Fault`` it returns answers instead of the normal logic, ``None``
        lets the request through. ``None`` removes the rule.

        For faults that depend on the request: a proxy answering 502 to
        bodies over N bytes, a 3xx, a job-done that never answers
        (``Fault(delay=3600)``: ``stop()`` still cuts it short)."""
        if route not in self._faults:
            raise ValueError("unknown route %r; one of %s" % (route, ", ".join(ROUTES)))
        with self._cond:
            if decide is None:
                self._rules.pop(route, None)
            else:
                self._rules[route] = decide

    def stop_job(self, job_id: str) -> None:
        """Ask the worker to cancel ``job_id``: the next job-stop request (or
        one being held) answers ``{"jobsToStop": [...all pending...]}``."""
        with self._cond:
            self._to_stop.append(job_id)
            self._cond.notify_all()

    def pending(self) -> int:
        """How many queued items have not been handed out yet."""
        with self._cond:
            return len(self._queue)

    # -- recorded state -----------------------------------------------------

    def requests(self, route: Optional[str] = None) -> List[Recorded]:
        """Every request received (faulted ones included), in arrival order;
        only those of ``route`` when given."""
        with self._cond:
            if route is None:
                return list(self._requests)
            if route not in self._by_route:
                raise ValueError("unknown route %r; one of %s" % (route, ", ".join(ROUTES)))
            return list(self._by_route[route])

    @overload
    def results(self, job_id: None = None, *, include_rejected: bool = False) -> Dict[str, List[Any]]: ...

    @overload
    def results(self, job_id: str, *, include_rejected: bool = False) -> List[Any]: ...

    def results(
        self, job_id: Optional[str] = None, *, include_rejected: bool = False
    ) -> Union[Dict[str, List[Any]], List[Any]]:
        """Final results: parsed bodies of job-done posts that are not
        progress updates (``"status": "IN_PROGRESS"``). Without ``job_id``:
        ``{job_id: [bodies]}`` for jobs with at least one; with it: that job's
        list (maybe empty). Only accepted (2xx) posts unless
        ``include_rejected``. A body that is not JSON appears as raw bytes."""
        with self._cond:
            if job_id is not None:
                return [p for r, p in self._finals.get(job_id, ()) if include_rejected or r.accepted]
            out: Dict[str, List[Any]] = {}
            for jid, entries in self._finals.items():
                bodies = [p for r, p in entries if include_rejected or r.accepted]
                if bodies:
                    out[jid] = bodies
            return out

    def result_requests(self, job_id: str, *, include_rejected: bool = False) -> List[Recorded]:
        """The job-done requests that carried a final result for ``job_id``
        (accepted ones only unless ``include_rejected``)."""
        with self._cond:
            return [r for r, _ in self._finals.get(job_id, ()) if include_rejected or r.accepted]

    def progress(self, job_id: str, *, include_rejected: bool = False) -> List[Any]:
        """The ``output`` of each progress update posted for ``job_id``, in
        arrival order."""
        with self._cond:
            return [_output_of(p) for r, p in self._progress.get(job_id, ()) if include_rejected or r.accepted]

    def stream(self, job_id: str, *, include_rejected: bool = False) -> List[Any]:
        """The ``output`` of each job-stream post for ``job_id``, in arrival
        order."""
        with self._cond:
            return [_output_of(p) for r, p in self._stream.get(job_id, ()) if include_rejected or r.accepted]

    def taken(self) -> List[str]:
        """Ids of the jobs handed out, in order, with repeats when re-queued.
        Raw items without a string ``id`` are not listed."""
        with self._cond:
            return list(self._taken)

    def pings(self) -> List[Recorded]:
        """Every ping request, in arrival order."""
        return self.requests("ping")

    def wait_results(self, n: int, timeout: float = 10.0) -> bool:
        """Block until at least ``n`` distinct job ids have an accepted final
        result; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._accepted_final_ids) >= n, timeout)

    def wait_for(self, predicate: Callable[["FakePlatform"], bool], timeout: float = 10.0) -> bool:
        """Block until ``predicate(self)`` is true; it is re-evaluated (under
        the lock) whenever a request arrives or is answered and whenever the
        tests change the queue. Returns its last value."""
        with self._cond:
            return bool(self._cond.wait_for(lambda: predicate(self), timeout))

    # -- internals ----------------------------------------------------------

    def _new_id(self) -> str:
        self._next_id += 1
        return "job-%d" % self._next_id

    def _register_conn(self, sock: socket.socket) -> int:
        with self._cond:
            self._conn_serial += 1
            self._conns[sock] = self._conn_serial
            return self._conn_serial

    def _unregister_conn(self, sock: socket.socket) -> None:
        with self._cond:
            self._conns.pop(sock, None)

    def _classify(self, path: str) -> Tuple[str, Optional[str], Optional[str]]:
        """(route, worker_id, job_id) for a URL path."""
        parts = [unquote(p) for p in path.split("/")]
        # ["", "v2", endpoint, route, worker_id, job_id?]
        if len(parts) < 4 or parts[0] != "" or parts[1] != "v2" or parts[2] != self.endpoint:
            return "other", None, None
        route = parts[3]
        if route not in _METHODS:
            return "other", None, None
        rest = parts[4:]
        worker_id = rest[0] if rest else None
        job_id = None
        if route in ("job-done", "job-stream"):
            job_id = rest[-1] if len(rest) >= 2 and rest[-1] else None
        return route, worker_id, job_id

    def _authorized(self, headers: Dict[str, str]) -> bool:
        if not self.require_auth or self.api_key is None:
            return True
        value = headers.get("authorization", "")
        return value in (self.api_key, "Bearer " + self.api_key)

    def _serve(self, h: _Handler) -> None:
        """Handle one request on handler ``h`` (runs in its thread)."""
        body = h.read_body()
        split = urlsplit(h.path)
        route, worker_id, job_id = self._classify(split.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in h.headers.items()}
        rec = Recorded(
            method=h.command,
            path=h.path,
            route=route,
            query=query,
            headers=headers,
            body=body,
            time=time.monotonic(),
            job_id=job_id,
            worker_id=worker_id,
            conn_id=h.conn_id,
        )
        if "close" in headers.get("connection", "").lower():
            h.close_connection = True

        with self._cond:
            self._active += 1
            self._requests.append(rec)
            self._by_route[route].append(rec)
            fault = self._faults[route].popleft() if self._faults[route] else None
            delay = self._delays.get(route, 0.0)
            decide = self._rules.get(route) if fault is None else None
            self._cond.notify_all()
        try:
            if decide is not None:
                fault = decide(rec)
            if fault is not None:
                self._answer_fault(h, rec, fault)
            else:
                if delay > 0:
                    with self._cond:
                        self._cond.wait_for(lambda: self._stopped, delay)
                status, payload = self._answer(rec)
                h.send(status, payload)
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    def _answer_fault(self, h: _Handler, rec: Recorded, fault: Fault) -> None:
        if fault.delay > 0:
            with self._cond:
                # Interruptible by stop(): a test tearing down mustn't wait.
                self._cond.wait_for(lambda: self._stopped, fault.delay)
        with self._cond:
            rec.faulted = True
            if not fault.reset:
                rec.status = fault.status
            # Filed even when refused, for include_rejected=True views.
            self._index_post(rec)
            self._cond.notify_all()
        if fault.reset:
            h.reset()
            return
        body = fault.body.encode("utf-8") if isinstance(fault.body, str) else fault.body
        h.send(fault.status, body, fault.headers)

    def _answer(self, rec: Recorded) -> Tuple[int, bytes]:
        """The normal answer for ``rec``; sets ``rec.status`` under the lock
        together with every state change it causes."""
        route = rec.route
        with self._cond:
            if route == "other":
                return self._set(rec, 404), b""
            if rec.method != _METHODS[route]:
                return self._set(rec, 405), b""
            if not self._authorized(rec.headers):
                return self._set(rec, 401), b'{"error": "unauthorized"}'

            if route in ("job-take", "job-take-batch"):
                if route == "job-take":
                    limit = 1
                else:
                    try:
                        limit = int(rec.query.get("batch_size", "1"))
                    except ValueError:
                        limit = 1
                if limit > 0:
                    self._hold(self.longpoll, lambda: bool(self._queue))
                items = [self._queue.popleft() for _ in range(min(limit, len(self._queue)))]
                if not items:
                    return self._set(rec, 204), b""
                for item in items:
                    if isinstance(item, dict) and isinstance(item.get("id"), str):
                        self._taken.append(item["id"])
                payload = items[0] if route == "job-take" else items
                self._set(rec, 200)
                return 200, json.dumps(payload).encode("utf-8")

            if route == "job-stop":
                self._hold(self.stop_longpoll, lambda: bool(self._to_stop))
                if not self._to_stop:
                    return self._set(rec, 204), b""
                ids, self._to_stop = self._to_stop, []
                self._set(rec, 200)
                return 200, json.dumps({"jobsToStop": ids}).encode("utf-8")

            if route == "ping":
                return self._set(rec, 200), b"{}"

            # job-done / job-stream
            if rec.job_id is None:
                return self._set(rec, 400), b'{"error": "no job id in path"}'
            status = self.result_status
            self._set(rec, status)
            self._index_post(rec)
            return status, b"{}"

    def _set(self, rec: Recorded, status: int) -> int:
        # Called with the lock held; waiters see the status with the request.
        rec.status = status
        self._cond.notify_all()
        return status

    def _hold(self, seconds: float, ready: Callable[[], bool]) -> None:
        """Long-poll: with the lock held, wait up to ``seconds`` for
        ``ready()``; stop() ends the wait at once."""
        if seconds <= 0:
            return
        self._cond.wait_for(lambda: ready() or self._stopped, seconds)

    def _index_post(self, rec: Recorded) -> None:
        """File a job-done / job-stream post under its job (lock held)."""
        if rec.job_id is None or rec.route not in ("job-done", "job-stream"):
            return
        parsed = _parse_body(rec.body)
        if rec.route == "job-stream":
            self._stream.setdefault(rec.job_id, []).append((rec, parsed))
        elif _is_progress(parsed):
            self._progress.setdefault(rec.job_id, []).append((rec, parsed))
        else:
            self._finals.setdefault(rec.job_id, []).append((rec, parsed))
            if rec.accepted:
                self._accepted_final_ids.add(rec.job_id)
