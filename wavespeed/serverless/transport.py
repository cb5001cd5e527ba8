"""Everything the worker says to the platform.

Five ``requests`` sessions own the connection pools, each with its retry
policy as a urllib3 ``Retry`` value on its adapter:

- ``fetch``: job-take and job-stop. No retries: the fetcher owns the backoff.
  ``abort_fetch()`` cuts an open long-poll at shutdown instead of waiting up
  to 90 s for it.
- ``result``: final results, retried on connection errors, read errors, 429
  and 5xx with exponential backoff, within a wall-clock deadline.
- ``stream``: generator chunks, a few retries.
- ``best_effort``: progress updates, one retry.
- ``heartbeat``: pings, no retries.

The hot path (job-take, job-done, stream chunks, progress) does not go
through ``requests``: it calls ``urlopen`` on the session's own urllib3 pool
with a request target and headers prepared once (per worker for job-take,
per job for posts), and sends the payload bytes as given. That skips the
``PreparedRequest``/``Response`` objects, the header merging and the cookie
and proxy handling of every call (none of which the worker uses), which were
about a third of the worker's CPU per job. Redirects are never followed.

The retry loop is ours, driven by the adapter's ``Retry`` value (which
errors and statuses are retried, how many times, the backoff, Retry-After),
because urllib3's own loop cannot bound a post by wall-clock time nor be cut
short at shutdown: ``abort_posts()`` does both.
"""

import email.utils
import enum
import json
import re
import socket
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple
from urllib.parse import quote, urlencode, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ClosedPoolError, ConnectTimeoutError, HTTPError, NewConnectionError
from urllib3.response import HTTPResponse
from urllib3.util.connection import allowed_gai_family
from urllib3.util.retry import Retry
from urllib3.util.timeout import Timeout

from .. import __version__
from .config import Config
from .logs import logger

log = logger("transport")

USER_AGENT = f"wavespeed-serverless/{__version__} (urllib3/{urllib3.__version__})"
#: The runpod-python release whose worker protocol this SDK speaks (PROTOCOL §17).
RUNPOD_PROTOCOL_VERSION = "1.12.0"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
CONNECT_TIMEOUT = 5.0
RESULT_READ_TIMEOUT = 30.0  # per try; read at call time (tests shorten it)
PROGRESS_DEADLINE = 10.0  # progress is best effort: never hold a job's outbox long

# Network trouble as urllib3 raises it with retries=False. ValueError: http.client
# refusing a header or URL it cannot send; the transport reports it, never raises it.
NETWORK_ERRORS = (HTTPError, OSError, ValueError)


# -- outcomes -----------------------------------------------------------------------


class TakeKind(enum.Enum):
    """What one job-take brought. A consumer's last branch must raise on any other value."""

    JOBS = "jobs"  # ``jobs`` to run and/or ``malformed`` ids to report FAILED
    EMPTY = "empty"  # nothing to do: 204, 400 (FlashBoot), an empty or unreadable body
    THROTTLED = "throttled"  # 429: wait at least ``retry_after`` (None: not given)
    ERROR = "error"  # no usable answer (network, 3xx, other 4xx, 5xx): back off


class Outcome(enum.Enum):
    """What happened to a POST. A consumer's last branch must raise on any other value."""

    DELIVERED = "delivered"  # answered 2xx
    REFUSED = "refused"  # 3xx, or 4xx other than 429, or no URL: retrying cannot help
    FAILED = "failed"  # no try succeeded before the deadline, or the posts were aborted


class CancelKind(enum.Enum):
    """What one poll of the job-stop (cancel) channel brought.

    A consumer's last branch must raise on any other value.
    """

    NO_URL = "no_url"  # there is no channel (the job-take URL has no ``/job-take/``)
    ERROR = "error"  # the request failed or its answer was unusable: ``detail``
    NONE = "none"  # nothing to cancel
    JOBS = "jobs"  # ``ids``: cancel these jobs


@dataclass
class TakeResult:
    """What one job-take returned."""

    kind: TakeKind
    jobs: List[Dict[str, Any]] = field(default_factory=list)
    malformed: List[Tuple[str, str]] = field(default_factory=list)  # (job id, why)
    retry_after: Optional[float] = None
    detail: str = ""


@dataclass(frozen=True)
class Delivery:
    """What happened to a POST: its outcome, the last HTTP status, why, and the tries made."""

    outcome: Outcome
    status: Optional[int] = None
    detail: str = ""
    tries: int = 0

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.DELIVERED

    @property
    def refused(self) -> bool:
        return self.outcome is Outcome.REFUSED


@dataclass(frozen=True)
class CancelPoll:
    """What one poll of the job-stop channel returned."""

    kind: CancelKind
    ids: List[str] = field(default_factory=list)
    detail: str = ""


# -- small helpers ------------------------------------------------------------------


def with_query(url: str, params: Mapping[str, Any]) -> str:
    """Append query parameters to a platform URL template.

    Templates may already carry a query (``?gpu=X``) or end in a bare ``?``.
    """
    if not params:
        return url
    query = urlencode(params, safe=",")
    if "?" not in url:
        return f"{url}?{query}"
    if url.endswith(("?", "&")):
        return f"{url}{query}"
    return f"{url}&{query}"


def job_url(template: str, job_id: str) -> str:
    """The job-done or stream URL for one job (``$ID`` is the job id)."""
    return template.replace("$ID", quote(str(job_id), safe=""))


# Visible ASCII except "%", which must escape itself for the encoding to be undone.
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")


def header_safe(value: str) -> str:
    """A header value any HTTP stack accepts and no parser alters.

    Visible ASCII stays as it is. ``%``, control characters (``\\n``,
    ``\\r``), anything beyond ASCII (accents, emoji) and spaces (which header
    parsers strip at the ends) are percent-encoded as UTF-8, so
    ``urllib.parse.unquote`` recovers the value exactly.
    """
    if value.isascii() and value.isprintable() and "%" not in value and " " not in value:
        return value
    return quote(value, safe=_HEADER_SAFE)


def retry_after_seconds(value: Optional[str]) -> Optional[float]:
    """Parse a Retry-After header: seconds, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def describe(exc: BaseException) -> str:
    """A short text for a network error: its type and its root cause.

    urllib3 (and requests) wrap errors two or three deep, each repeating the
    URL or the connection object; the log needs only what went wrong
    ("Connection refused").
    """
    root: BaseException = exc
    for _ in range(10):
        inner = root.__cause__ or getattr(root, "reason", None)
        if inner is None and root.args and isinstance(root.args[-1], BaseException):
            inner = root.args[-1]
        if not isinstance(inner, BaseException):
            break
        root = inner
    text = str(root) if root is not exc else str(exc)
    if ": " in text and root is not exc:
        text = text.rsplit(": ", 1)[-1]
    return f"{type(exc).__name__}: {text}"[:300]


def result_retry(deadline: float) -> Retry:
    """The retry policy for final results: back off until about ``deadline`` s."""
    backoff_factor, backoff_max = 0.25, 8.0
    tries, waited = 0, 0.0
    while waited < deadline and tries < 40:
        tries += 1
        waited += min(backoff_factor * (2 ** tries), backoff_max)
    return _retry(max(tries, 1), backoff_factor, backoff_max)


def _retry(total: int, backoff_factor: float, backoff_max: float) -> Retry:
    retry = Retry(
        total=total,
        connect=total,
        read=total,
        status=total,
        other=0,
        allowed_methods=None,  # POST too: a lost result is worse than a repeated one
        status_forcelist=RETRY_STATUSES,
        backoff_factor=backoff_factor,
        respect_retry_after_header=True,
        raise_on_status=False,
        raise_on_redirect=False,
    )
    if hasattr(Retry, "DEFAULT_BACKOFF_MAX"):  # urllib3 1.26 and 2.x
        try:
            retry.backoff_max = backoff_max  # type: ignore[attr-defined]
        except AttributeError:
            pass
    return retry


def _refused(status: int) -> bool:
    """A status that retrying cannot fix: a redirect (not followed) or a 4xx but 429."""
    return 300 <= status < 500 and status != 429


# -- job-take bodies ----------------------------------------------------------------


def parse_jobs(data: Any) -> TakeResult:
    """Sort a parsed job-take body into jobs and malformed items."""
    items = data if isinstance(data, list) else [data]
    result = TakeResult(kind=TakeKind.JOBS)
    for item in items:
        _sort_item(item, result)
    if not result.jobs and not result.malformed:
        result.kind = TakeKind.EMPTY
    return result


def _sort_item(item: Any, result: TakeResult) -> None:
    if not isinstance(item, dict):
        log.warning("job-take returned a non-object item (%s); ignored", type(item).__name__)
        return
    job_id = item.get("id")
    if job_id in (None, ""):
        log.warning("job-take returned a job without an id; ignored (keys: %s)", sorted(map(str, item)))
        return
    if "input" not in item:
        result.malformed.append((str(job_id), "the job has no 'input' field"))
        return
    result.jobs.append(item)


# A JSON string (unrolled, so a long one is one fast match), or one structural byte.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},:]')
# After an "id" key: its value, a string or an integer, bounded.
_ID_VALUE = re.compile(rb'\s*:\s*("(?:[^"\\]|\\.){1,1024}"|-?\d{1,64})\s*[,}]')


def read_take_body(raw: bytes) -> TakeResult:
    """Read a 200 job-take body; never raises.

    A body ``json.loads`` cannot read (nested too deeply, invalid UTF-8,
    truncated, not JSON) is salvaged: each job whose top-level ``"id"`` can
    still be read is returned as malformed, so the worker reports it FAILED
    instead of leaving it to the platform's timeout; the readable jobs of a
    batch still run.
    """
    try:
        data = json.loads(raw)
        if isinstance(data, list) and not data:
            return TakeResult(kind=TakeKind.EMPTY)
        return parse_jobs(data)
    except Exception as exc:  # noqa: BLE001 - RecursionError, UnicodeDecodeError, ...: any
        why = f"the job-take body could not be read ({type(exc).__name__})"
    try:
        return _salvage(raw, why)
    except Exception:  # noqa: BLE001 - the salvage is best effort; never raise from take()
        log.exception("job-take: could not salvage an unreadable body (%d bytes)", len(raw))
        return TakeResult(kind=TakeKind.EMPTY, detail=why)


def _salvage(raw: bytes, why: str) -> TakeResult:
    result = TakeResult(kind=TakeKind.JOBS, detail=why)
    if raw.lstrip()[:1] == b"[":
        for start, end in _element_spans(raw):
            piece = raw[start:end]
            try:
                _sort_item(json.loads(piece), result)
                continue
            except Exception:  # noqa: BLE001 - the same reasons as the whole body
                pass
            _add_malformed(result, _object_id(piece), why)
    else:
        _add_malformed(result, _object_id(raw), why)
    if not result.jobs and not result.malformed:
        log.warning("job-take: %s and no job id could be read in it (%d bytes)", why, len(raw))
        result.kind = TakeKind.EMPTY
    return result


def _add_malformed(result: TakeResult, job_id: Optional[str], why: str) -> None:
    if job_id:
        log.error("job-take: %s; reporting job %s FAILED", why, job_id)
        result.malformed.append((job_id, why))


def _element_spans(raw: bytes) -> List[Tuple[int, int]]:
    """The byte spans of a top-level JSON list's elements (a truncated list too)."""
    spans: List[Tuple[int, int]] = []
    depth, start = 0, -1
    for match in _TOKEN.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth == 1:
                start = match.end()
        elif token in (b"]", b"}"):
            if depth == 1 and start >= 0:
                spans.append((start, match.start()))
                return spans
            depth -= 1
        elif token == b"," and depth == 1:
            spans.append((start, match.start()))
            start = match.end()
    if depth >= 1 and start >= 0:
        spans.append((start, len(raw)))
    return [(s, e) for s, e in spans if raw[s:e].strip()]


def _object_id(raw: bytes) -> Optional[str]:
    """The ``"id"`` of a JSON object's top level, read without parsing the rest."""
    depth = 0
    expect_key = False
    for match in _TOKEN.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            expect_key = depth == 1 and token == b"{"
        elif token in (b"]", b"}"):
            depth -= 1
            if depth <= 0:
                return None
        elif token == b"," and depth == 1:
            expect_key = True
        elif token == b":":
            expect_key = False
        elif expect_key and depth == 1 and token == b'"id"':
            value = _ID_VALUE.match(raw, match.end())
            if value is None:
                return None
            try:
                return str(json.loads(value.group(1)))
            except ValueError:
                return None
    return None


# -- connections another thread can cut ---------------------------------------------


class _Tracker:
    """The live connections of some pools, so another thread can cut them all.

    Set ``refuse`` to make new connections fail too (after ``abort_posts()``).
    """

    def __init__(self, refuse: Optional[threading.Event] = None) -> None:
        self.refuse = refuse
        self._lock = threading.Lock()
        self._conns: "weakref.WeakSet[Any]" = weakref.WeakSet()

    def add(self, conn: Any) -> None:
        with self._lock:
            self._conns.add(conn)

    def cut(self) -> None:
        """Shut down every tracked socket: a thread blocked on it returns at once."""
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            for sock in (getattr(conn, "sock", None), getattr(conn, "connecting_sock", None)):
                if sock is None:
                    continue
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed


def _open_socket(conn: Any, tracker: _Tracker) -> socket.socket:
    """urllib3's ``create_connection``, with the socket tracked before ``connect()``.

    On Linux, shutting down a socket that is still connecting aborts the
    connect, so a post stuck on an unresponsive platform is cut at once too.
    """
    host = getattr(conn, "_dns_host", conn.host)
    if host.startswith("["):
        host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, conn.port, allowed_gai_family(), socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NewConnectionError(conn, f"Failed to resolve '{conn.host}' ({exc})") from exc
    error: Optional[OSError] = None
    for family, kind, proto, _name, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            for option in conn.socket_options or ():
                sock.setsockopt(*option)
            if conn.timeout is None or isinstance(conn.timeout, (int, float)):
                sock.settimeout(conn.timeout)
            if conn.source_address:
                sock.bind(conn.source_address)
            conn.connecting_sock = sock
            tracker.add(conn)
            if tracker.refuse is not None and tracker.refuse.is_set():
                raise ConnectionAbortedError("posts were aborted (worker shutting down)")
            sock.connect(address)
            sys.audit("http.client.connect", conn, conn.host, conn.port)
            return sock
        except socket.timeout as exc:
            sock.close()
            raise ConnectTimeoutError(
                conn, f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})"
            ) from exc
        except OSError as exc:
            sock.close()
            error = exc
        finally:
            conn.connecting_sock = None
    raise NewConnectionError(conn, f"Failed to establish a new connection: {error}") from error


class _TrackedAdapter(HTTPAdapter):
    """An adapter whose pools make connections a ``_Tracker`` can cut."""

    def __init__(self, tracker: _Tracker, **kwargs: Any) -> None:
        self._tracker = tracker
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        tracker = self._tracker

        class TrackedHTTP(HTTPConnection):
            connecting_sock: Optional[socket.socket] = None

            def _new_conn(self) -> socket.socket:
                return _open_socket(self, tracker)

        class TrackedHTTPS(HTTPSConnection):
            connecting_sock: Optional[socket.socket] = None

            def _new_conn(self) -> socket.socket:
                return _open_socket(self, tracker)

        class HTTPPool(HTTPConnectionPool):
            ConnectionCls = TrackedHTTP

        class HTTPSPool(HTTPSConnectionPool):
            ConnectionCls = TrackedHTTPS

        self.poolmanager.pool_classes_by_scheme = {"http": HTTPPool, "https": HTTPSPool}


@dataclass(frozen=True)
class _JobRoute:
    """Everything posting for one job needs, prepared once per job."""

    headers: Dict[str, str]
    done: str  # job-done request target, isStream=false
    done_final_stream: str  # the same with isStream=true
    stream: str  # job-stream request target ("" without a stream URL)


# -- the transport ------------------------------------------------------------------


class Transport:
    """The worker's HTTP client. Thread-safe; never raises for network trouble."""

    def __init__(self, config: Config, max_connections: int = 64) -> None:
        self.config = config
        self._posts_aborted = threading.Event()
        self._fetch_conns = _Tracker()
        self._post_conns = _Tracker(refuse=self._posts_aborted)
        self.fetch = self._session(_TrackedAdapter(self._fetch_conns, max_retries=0, pool_maxsize=4))
        self.result = self._session(
            _TrackedAdapter(
                self._post_conns,
                max_retries=result_retry(config.result_deadline),
                pool_maxsize=max_connections,
            )
        )
        self.stream = self._session(
            _TrackedAdapter(
                self._post_conns, max_retries=_retry(3, 0.2, 2.0), pool_maxsize=max_connections
            )
        )
        self.best_effort = self._session(
            _TrackedAdapter(
                self._post_conns, max_retries=_retry(1, 0.2, 1.0), pool_maxsize=max_connections
            )
        )
        self.heartbeat = self._session(HTTPAdapter(max_retries=0, pool_maxsize=1))
        self._pools: Dict[Tuple[int, str], HTTPConnectionPool] = {}
        self._pools_lock = threading.Lock()
        self._closed = False
        self._headers = self._base_headers()
        self._fetch_timeout = Timeout(connect=CONNECT_TIMEOUT, read=config.fetch_timeout)
        # Both bounded and thread-safe (lru_cache locks internally).
        self._take_route: Callable[[int, bool], Tuple[HTTPConnectionPool, str]] = lru_cache(
            maxsize=64
        )(self._make_take_route)
        # Request targets of job-done (isStream false, true) and job-stream, "$ID" still in.
        self._job_targets: Optional[Tuple[str, ...]] = None
        self._job_route: Callable[[str], _JobRoute] = lru_cache(maxsize=512)(self._make_job_route)
        self._lane: Callable[[requests.Session, str], Tuple[HTTPConnectionPool, Retry]] = lru_cache(
            maxsize=8
        )(self._make_lane)

    @staticmethod
    def _session(adapter: HTTPAdapter) -> requests.Session:
        session = requests.Session()
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers["User-Agent"] = USER_AGENT
        session.trust_env = False  # no proxies or netrc from the container's env
        return session

    def _base_headers(self) -> Dict[str, str]:
        headers = {"User-Agent": USER_AGENT}
        if self.config.api_key:
            headers["Authorization"] = self.config.api_key
        return headers

    def headers(self, job_id: Optional[str] = None, content: bool = False) -> Dict[str, str]:
        """The headers of a request (for a job: with its header-safe ``X-Request-ID``)."""
        headers = dict(self._headers)
        if job_id is not None:
            headers["X-Request-ID"] = header_safe(str(job_id))
        if content:
            # What runpod sends; both platforms parse the body as JSON anyway.
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        return headers

    # -- pools and request targets ------------------------------------------------

    def _route(self, session: requests.Session, url: str) -> Tuple[HTTPConnectionPool, str]:
        """The session's pool for ``url``'s origin, and the request target."""
        parts = urlsplit(url)
        cut = len(parts.scheme) + 3 + len(parts.netloc)
        target = url[cut:] or "/"
        if not target.startswith("/"):
            target = "/" + target
        return self._pool(session, url[:cut]), target

    def _pool(self, session: requests.Session, origin: str) -> HTTPConnectionPool:
        key = (id(session), origin)
        pool = self._pools.get(key)
        if pool is not None:
            return pool
        with self._pools_lock:
            if self._closed:
                raise ClosedPoolError(None, "the transport is closed")  # type: ignore[arg-type]
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = self._open_pool(session, origin)
        return pool

    @staticmethod
    def _open_pool(session: requests.Session, origin: str) -> HTTPConnectionPool:
        """Ask the session's adapter for its pool, as ``requests`` would (TLS settings too)."""
        url = origin + "/"
        adapter = session.get_adapter(url)
        assert isinstance(adapter, HTTPAdapter)
        if hasattr(adapter, "get_connection_with_tls_context"):  # requests >= 2.32
            prepared = requests.Request("GET", url).prepare()
            pool = adapter.get_connection_with_tls_context(prepared, True, None, None)
        else:
            pool = adapter.get_connection(url, None)
        adapter.cert_verify(pool, url, True, None)
        return pool

    def take_url(self, free: int, in_progress: bool) -> str:
        url = self.config.job_take_url or ""
        params: Dict[str, Any] = {"job_in_progress": 1 if in_progress else 0}
        if free > 1 and "/job-take/" in url:
            url = url.replace("/job-take/", "/job-take-batch/", 1)
            params["batch_size"] = free
        return with_query(url, params)

    def _make_lane(self, session: requests.Session, url: str) -> Tuple[HTTPConnectionPool, Retry]:
        """The pool a session posts to ``url``'s origin through, and its retry policy."""
        adapter = session.get_adapter(url)
        assert isinstance(adapter, HTTPAdapter)
        return self._route(session, url)[0], adapter.max_retries

    def _make_take_route(self, free: int, in_progress: bool) -> Tuple[HTTPConnectionPool, str]:
        return self._route(self.fetch, self.take_url(free, in_progress))

    def _make_job_route(self, job_id: str) -> _JobRoute:
        targets = self._job_targets
        if targets is None:
            targets = self._job_targets = tuple(
                self._route(session, with_query(template, {"isStream": flag}))[1] if template else ""
                for session, template, flag in (
                    (self.result, self.config.job_done_url, "false"),
                    (self.result, self.config.job_done_url, "true"),
                    (self.stream, self.config.job_stream_url, "false"),
                )
            )
        quoted = quote(job_id, safe="")  # as job_url() does
        done, final, stream = (target.replace("$ID", quoted) for target in targets)
        return _JobRoute(self.headers(job_id, content=True), done, final, stream)

    # -- job-take and job-stop ------------------------------------------------------

    def take(self, free: int, in_progress: bool) -> TakeResult:
        """Ask for up to ``free`` jobs. Never raises: every failure is a ``TakeKind``."""
        try:
            pool, target = self._take_route(free, in_progress)
            response = pool.urlopen(
                "GET",
                target,
                headers=self._headers,
                retries=False,
                redirect=False,
                assert_same_host=False,
                timeout=self._fetch_timeout,
            )
        except NETWORK_ERRORS as exc:
            return TakeResult(kind=TakeKind.ERROR, detail=describe(exc))
        status = response.status
        if status == 204 or status == 400:  # 400: RunPod under FlashBoot
            return TakeResult(kind=TakeKind.EMPTY)
        if status == 429:
            return TakeResult(
                kind=TakeKind.THROTTLED,
                retry_after=retry_after_seconds(response.headers.get("Retry-After")),
            )
        if status != 200:
            return TakeResult(kind=TakeKind.ERROR, detail=f"HTTP {status}")
        body = response.data
        if not body or body.isspace():
            return TakeResult(kind=TakeKind.EMPTY)
        return read_take_body(body)

    def poll_cancels(self) -> CancelPoll:
        """Long-poll RunPod's job-stop channel once. Never raises."""
        url = self.config.job_stop_url
        if not url:
            return CancelPoll(CancelKind.NO_URL)
        try:
            pool, target = self._route(self.fetch, url)
            response = pool.urlopen(
                "GET",
                target,
                headers=self._headers,
                retries=False,
                redirect=False,
                assert_same_host=False,
                timeout=self._fetch_timeout,
            )
        except NETWORK_ERRORS as exc:
            return CancelPoll(CancelKind.ERROR, detail=describe(exc))
        if response.status == 204:
            return CancelPoll(CancelKind.NONE)
        if response.status != 200:
            return CancelPoll(CancelKind.ERROR, detail=f"HTTP {response.status}")
        body = response.data
        if not body or body.isspace():
            return CancelPoll(CancelKind.NONE)
        try:
            listed = json.loads(body).get("jobsToStop") or []
            if not isinstance(listed, list):
                raise TypeError(f"jobsToStop is a {type(listed).__name__}")
            ids = [str(i) for i in listed if i is not None]
        except Exception as exc:  # noqa: BLE001 - any unreadable answer is an ERROR value
            return CancelPoll(CancelKind.ERROR, detail=f"unreadable job-stop answer ({exc!r:.200})")
        return CancelPoll(CancelKind.JOBS, ids) if ids else CancelPoll(CancelKind.NONE)

    def abort_fetch(self) -> None:
        """Cut any open job-take/job-stop request (shutdown).

        An answer that has already arrived stays readable after the cut (the
        kernel keeps received bytes), so jobs in it are still taken and
        drained. An answer the platform sends at the very moment of the cut
        can be lost, as it would be if the process exited then; the platform
        times such a job out.
        """
        self._fetch_conns.cut()

    # -- posts ------------------------------------------------------------------------

    def post_result(
        self,
        job_id: str,
        payload: bytes,
        is_stream: bool = False,
        deadline: Optional[float] = None,
    ) -> Delivery:
        """POST a final result, retried per the result policy until ``deadline``.

        ``deadline`` is a ``time.monotonic()`` value bounding every try and
        wait (default: ``config.result_deadline`` from now). Each try's read
        timeout is at most 30 s; a wait (backoff or Retry-After) that would
        end past the deadline gives up at once with FAILED.
        """
        if not self.config.job_done_url:
            return Delivery(Outcome.REFUSED, detail="no job-done URL configured")
        route = self._job_route(str(job_id))
        target = route.done_final_stream if is_stream else route.done
        return self._post(self.result, self.config.job_done_url, target, route.headers, payload, deadline)

    def post_chunk(self, job_id: str, payload: bytes, deadline: Optional[float] = None) -> Delivery:
        """POST one generator chunk to the stream URL (a few retries, within ``deadline``)."""
        if not self.config.job_stream_url:
            return Delivery(Outcome.REFUSED, detail="no job-stream URL configured")
        route = self._job_route(str(job_id))
        return self._post(
            self.stream, self.config.job_stream_url, route.stream, route.headers, payload, deadline
        )

    def post_progress(self, job_id: str, payload: bytes) -> Delivery:
        """POST a progress update to the job-done URL (best effort: one retry, 10 s at most)."""
        if not self.config.job_done_url:
            return Delivery(Outcome.REFUSED, detail="no job-done URL configured")
        route = self._job_route(str(job_id))
        deadline = time.monotonic() + min(PROGRESS_DEADLINE, self.config.result_deadline)
        return self._post(
            self.best_effort, self.config.job_done_url, route.done, route.headers, payload, deadline
        )

    def abort_posts(self) -> None:
        """Make every post return FAILED now, and every later one at once (shutdown).

        Cuts the open result, stream and progress connections (a post blocked
        sending, waiting for an answer or connecting returns within
        milliseconds) and wakes posts waiting to retry. It cannot be undone:
        the worker spools what was not delivered. A DNS lookup in progress
        is the one wait it cannot cut.
        """
        self._posts_aborted.set()
        self._post_conns.cut()

    def _post(
        self,
        session: requests.Session,
        template: str,
        target: str,
        headers: Dict[str, str],
        payload: bytes,
        deadline: Optional[float],
    ) -> Delivery:
        if deadline is None:
            deadline = time.monotonic() + self.config.result_deadline
        try:
            pool, policy = self._lane(session, template)
            return self._exchange(pool, target, headers, payload, policy, deadline)
        except Exception as exc:  # noqa: BLE001 - the delivery path must get a value, not raise
            log.exception("posting to %s failed unexpectedly", target.split("?", 1)[0])
            return Delivery(Outcome.FAILED, detail=f"internal error: {describe(exc)}")

    def _exchange(
        self,
        pool: HTTPConnectionPool,
        target: str,
        headers: Dict[str, str],
        payload: bytes,
        policy: Retry,
        deadline: float,
    ) -> Delivery:
        """POST until an answer settles it, the policy gives up, or the deadline passes."""
        retry = policy
        tries = 0
        status: Optional[int] = None
        detail = ""
        while True:
            remaining = deadline - time.monotonic()
            if self._posts_aborted.is_set():
                return Delivery(Outcome.FAILED, status, "posts aborted (worker shutting down)", tries)
            if remaining <= 0:
                return Delivery(Outcome.FAILED, status, detail or "the deadline passed", tries)
            tries += 1
            try:
                response = pool.urlopen(
                    "POST",
                    target,
                    body=payload,
                    headers=headers,
                    retries=False,
                    redirect=False,
                    assert_same_host=False,
                    timeout=Timeout(
                        connect=min(CONNECT_TIMEOUT, remaining),
                        read=min(RESULT_READ_TIMEOUT, remaining),
                    ),
                )
            except NETWORK_ERRORS as exc:
                status, detail = None, describe(exc)
                if self._posts_aborted.is_set():
                    continue  # reported as aborted at the top of the loop
                try:
                    retry = retry.increment("POST", target, error=exc)
                except Exception:  # noqa: BLE001 - MaxRetryError, or the error re-raised: give up
                    return Delivery(Outcome.FAILED, None, detail, tries)
                delay = retry.get_backoff_time()
            else:
                status = response.status
                if status < 300:
                    return Delivery(Outcome.DELIVERED, status, "", tries)
                detail = self._answer_text(response)
                if 300 <= status < 400:
                    detail = f"redirect to {response.headers.get('Location', '?')!r} not followed"
                    return Delivery(Outcome.REFUSED, status, detail, tries)
                has_retry_after = bool(response.headers.get("Retry-After"))
                settled = Outcome.REFUSED if _refused(status) else Outcome.FAILED
                if not retry.is_retry("POST", status, has_retry_after):
                    return Delivery(settled, status, detail, tries)
                try:
                    retry = retry.increment("POST", target, response=response)
                except Exception:  # noqa: BLE001 - MaxRetryError: the policy is spent
                    return Delivery(settled, status, detail, tries)
                delay = retry.get_backoff_time()
                asked = retry_after_seconds(response.headers.get("Retry-After"))
                if asked is not None and retry.respect_retry_after_header:
                    delay = asked
            remaining = deadline - time.monotonic()
            if delay >= remaining:
                why = detail or (f"HTTP {status}" if status else "no answer")
                return Delivery(
                    Outcome.FAILED,
                    status,
                    f"{why}; the next try (in {delay:.1f} s) would pass the deadline "
                    f"({max(0.0, remaining):.1f} s left)",
                    tries,
                )
            if delay > 0:
                self._posts_aborted.wait(delay)

    def _answer_text(self, response: HTTPResponse) -> str:
        """The start of an error answer, for the log, with the API key masked."""
        data = response.data or b""
        detail = data[:300].decode("utf-8", "replace")
        key = self.config.api_key
        if key and key in detail:
            # A platform or proxy may echo the request back; never pass the key on.
            detail = detail.replace(key, "***")
        return detail

    # -- heartbeat ----------------------------------------------------------------------

    def ping(self, job_ids: Iterable[str]) -> bool:
        """Send one heartbeat naming the running jobs; False when it failed."""
        if not self.config.ping_url:
            return False
        params: Dict[str, Any] = {}
        ids = ",".join(job_ids)
        if ids:
            params["job_id"] = ids
        params["runpod_version"] = RUNPOD_PROTOCOL_VERSION
        params["wavespeed_version"] = __version__
        try:
            pool, target = self._route(self.heartbeat, with_query(self.config.ping_url, params))
            response = pool.urlopen(
                "GET",
                target,
                headers=self._headers,
                retries=False,
                redirect=False,
                assert_same_host=False,
                timeout=Timeout(connect=CONNECT_TIMEOUT, read=max(1.0, 2 * self.config.ping_interval)),
            )
        except NETWORK_ERRORS as exc:
            log.debug("ping failed: %s", describe(exc))
            return False
        return response.status < 300

    def close(self) -> None:
        """Close every pool; later requests fail (FAILED / ERROR), they do not raise."""
        for session in (self.fetch, self.result, self.stream, self.best_effort, self.heartbeat):
            session.close()
        # urllib3 2's PoolManager.clear() leaves its pools to the GC; ours are
        # held here, so close them: later requests see a closed pool.
        with self._pools_lock:
            self._closed = True
            pools = list(self._pools.values())
        for pool in pools:
            pool.close()
