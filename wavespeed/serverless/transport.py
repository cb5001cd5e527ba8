"""Everything the worker says to the platform, over pooled ``requests`` sessions.

Four sessions, each with its own retry policy as a urllib3 ``Retry`` value:

- ``fetch``: job-take and job-stop. No retries here: the fetcher owns the
  backoff. Its connections are tracked so ``abort_fetch()`` can cut an open
  long-poll at shutdown instead of waiting up to 90 s for it.
- ``result``: final results. POST is retried on connection errors, read
  errors, 429 and 5xx with exponential backoff until the result deadline.
- ``stream``: generator chunks, a few retries.
- ``best_effort``: progress updates and pings; failures are only logged.

Sessions are never mutated after construction: the per-job headers
(``X-Request-ID``) go on each request.
"""

import email.utils
import enum
import json
import socket
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple
from urllib.parse import quote, urlencode

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

from .. import __version__
from .config import Config
from .logs import logger

log = logger("transport")

USER_AGENT = f"wavespeed-serverless/{__version__} (python-requests/{requests.__version__})"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
CONNECT_TIMEOUT = 5.0
RESULT_READ_TIMEOUT = 30.0


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

    requests wraps urllib3's errors two or three deep, each repeating the
    URL; the log needs only what went wrong ("Connection refused").
    """
    root: BaseException = exc
    for _ in range(10):
        inner = root.__cause__ or getattr(root, "reason", None)
        if inner is None and root.args and isinstance(root.args[0], BaseException):
            inner = root.args[0]
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


class _FetchAdapter(HTTPAdapter):
    """An adapter whose connections can be cut from another thread."""

    def __init__(self, tracker: "weakref.WeakSet[Any]", **kwargs: Any) -> None:
        self._tracker = tracker
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        tracker = self._tracker

        class TrackedHTTP(HTTPConnection):
            def connect(self) -> None:
                super().connect()
                tracker.add(self)

        class TrackedHTTPS(HTTPSConnection):
            def connect(self) -> None:
                super().connect()
                tracker.add(self)

        class HTTPPool(HTTPConnectionPool):
            ConnectionCls = TrackedHTTP

        class HTTPSPool(HTTPSConnectionPool):
            ConnectionCls = TrackedHTTPS

        self.poolmanager.pool_classes_by_scheme = {"http": HTTPPool, "https": HTTPSPool}


class TakeKind(enum.Enum):
    JOBS = "jobs"
    EMPTY = "empty"
    THROTTLED = "throttled"
    ERROR = "error"


class CancelKind(enum.Enum):
    NO_URL = "no_url"
    ERROR = "error"
    NONE = "none"
    JOBS = "jobs"


@dataclass
class CancelPoll:
    kind: CancelKind
    ids: List[str] = field(default_factory=list)
    detail: str = ""


@dataclass
class TakeResult:
    """What one job-take returned."""

    kind: TakeKind
    jobs: List[Dict[str, Any]] = field(default_factory=list)
    malformed: List[Tuple[str, str]] = field(default_factory=list)  # (job id, why)
    retry_after: Optional[float] = None
    detail: str = ""


@dataclass
class Delivery:
    """What happened to a POST."""

    ok: bool
    status: Optional[int] = None
    refused: bool = False  # a 4xx that retrying cannot fix
    detail: str = ""


def parse_jobs(data: Any) -> TakeResult:
    """Sort a job-take body into jobs and malformed items."""
    items = data if isinstance(data, list) else [data]
    result = TakeResult(kind=TakeKind.JOBS)
    for item in items:
        if not isinstance(item, dict):
            log.warning("job-take returned a non-object item (%s); ignored", type(item).__name__)
            continue
        job_id = item.get("id")
        if job_id in (None, ""):
            log.warning("job-take returned a job without an id; ignored (keys: %s)", sorted(item))
            continue
        if "input" not in item:
            result.malformed.append((str(job_id), "the job has no 'input' field"))
            continue
        result.jobs.append(item)
    if not result.jobs and not result.malformed:
        result.kind = TakeKind.EMPTY
    return result


class Transport:
    """The worker's HTTP client. Thread-safe; one per worker."""

    def __init__(self, config: Config, max_connections: int = 64) -> None:
        self.config = config
        self._tracked: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self.fetch = self._session(_FetchAdapter(self._tracked, max_retries=0, pool_maxsize=4))
        self.result = self._session(
            HTTPAdapter(
                max_retries=result_retry(config.result_deadline),
                pool_maxsize=max_connections,
            )
        )
        self.stream = self._session(
            HTTPAdapter(max_retries=_retry(3, 0.2, 2.0), pool_maxsize=max_connections)
        )
        self.best_effort = self._session(
            HTTPAdapter(max_retries=_retry(1, 0.2, 1.0), pool_maxsize=max_connections)
        )

    @staticmethod
    def _session(adapter: HTTPAdapter) -> requests.Session:
        session = requests.Session()
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers["User-Agent"] = USER_AGENT
        session.trust_env = False  # no proxies or netrc from the container's env
        return session

    def headers(self, job_id: Optional[str] = None, content: bool = False) -> Dict[str, str]:
        headers: Dict[str, str] = {}
        if self.config.api_key:
            headers["Authorization"] = self.config.api_key
        if job_id is not None:
            headers["X-Request-ID"] = str(job_id)
        if content:
            # What runpod sends; both platforms parse the body as JSON anyway.
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        return headers

    @staticmethod
    def _send(
        session: requests.Session,
        method: str,
        url: str,
        headers: Dict[str, str],
        timeout: Tuple[float, float],
        body: Optional[bytes] = None,
    ) -> requests.Response:
        """Send one request through the session's adapter (and its Retry policy).

        This skips ``Session.request``'s per-call merging of settings,
        cookies, hooks and redirects, none of which the worker uses; it costs
        about 40 % less CPU per request, which is the worker's hot path.
        Redirects are not followed.
        """
        prepared = requests.PreparedRequest()
        prepared.method = method
        prepared.url = url
        merged = CaseInsensitiveDict(session.headers)
        merged.update(headers)
        if body is not None:
            merged["Content-Length"] = str(len(body))
        prepared.headers = merged
        prepared.body = body
        prepared.hooks = {"response": []}
        response = session.get_adapter(url).send(prepared, timeout=timeout)
        response.content  # read it all, so the connection goes back to the pool
        return response

    # -- job-take -------------------------------------------------------------

    def take_url(self, free: int, in_progress: bool) -> str:
        url = self.config.job_take_url or ""
        params: Dict[str, Any] = {"job_in_progress": 1 if in_progress else 0}
        if free > 1 and "/job-take/" in url:
            url = url.replace("/job-take/", "/job-take-batch/", 1)
            params["batch_size"] = free
        return with_query(url, params)

    def take(self, free: int, in_progress: bool) -> TakeResult:
        """Ask for up to ``free`` jobs. Never raises for network trouble."""
        url = self.take_url(free, in_progress)
        try:
            response = self._send(
                self.fetch, "GET", url, self.headers(), (CONNECT_TIMEOUT, self.config.fetch_timeout)
            )
        except requests.RequestException as exc:
            return TakeResult(kind=TakeKind.ERROR, detail=describe(exc))
        status = response.status_code
        if status == 204 or status == 400:  # 400: RunPod under FlashBoot
            return TakeResult(kind=TakeKind.EMPTY)
        if status == 429:
            return TakeResult(
                kind=TakeKind.THROTTLED, retry_after=retry_after_seconds(response.headers.get("Retry-After"))
            )
        if status != 200:
            return TakeResult(kind=TakeKind.ERROR, detail=f"HTTP {status}")
        if not response.content or not response.content.strip():
            return TakeResult(kind=TakeKind.EMPTY)
        try:
            data = json.loads(response.content)
        except ValueError:
            log.warning("job-take returned a body that is not JSON (%d bytes)", len(response.content))
            return TakeResult(kind=TakeKind.EMPTY)
        if isinstance(data, list) and not data:
            return TakeResult(kind=TakeKind.EMPTY)
        return parse_jobs(data)

    def poll_cancels(self) -> CancelPoll:
        if not self.config.job_stop_url:
            return CancelPoll(CancelKind.NO_URL)
        ids = self.poll_stops()
        if ids is None:
            return CancelPoll(CancelKind.ERROR, detail="request failed")
        return CancelPoll(CancelKind.JOBS if ids else CancelKind.NONE, ids)

    def abort_posts(self) -> None:
        pass

    def poll_stops(self) -> Optional[List[str]]:
        """Long-poll RunPod's job-stop channel; None on error, [] when nothing."""
        url = self.config.job_stop_url
        if not url:
            return None
        try:
            response = self._send(
                self.fetch, "GET", url, self.headers(), (CONNECT_TIMEOUT, self.config.fetch_timeout)
            )
        except requests.RequestException:
            return None
        if response.status_code == 204:
            return []
        if response.status_code != 200:
            return None
        if not response.content.strip():
            return []
        try:
            ids = json.loads(response.content).get("jobsToStop") or []
        except (ValueError, AttributeError):
            return None
        return [str(i) for i in ids if i is not None]

    def abort_fetch(self) -> None:
        """Cut any open job-take/job-stop request (shutdown).

        An answer that has already arrived stays readable after the cut (the
        kernel keeps received bytes), so jobs in it are still taken and
        drained. An answer the platform sends at the very moment of the cut
        can be lost, as it would be if the process exited then; the platform
        times such a job out.
        """
        for conn in list(self._tracked):
            sock = getattr(conn, "sock", None)
            if sock is None:
                continue
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # -- results --------------------------------------------------------------

    def _post(
        self,
        session: requests.Session,
        template: Optional[str],
        job_id: str,
        payload: bytes,
        is_stream: bool,
    ) -> Delivery:
        if not template:
            return Delivery(ok=False, refused=True, detail="no URL configured")
        url = with_query(job_url(template, job_id), {"isStream": "true" if is_stream else "false"})
        try:
            response = self._send(
                session,
                "POST",
                url,
                self.headers(job_id, content=True),
                (CONNECT_TIMEOUT, RESULT_READ_TIMEOUT),
                payload,
            )
        except requests.RequestException as exc:
            return Delivery(ok=False, detail=describe(exc))
        status = response.status_code
        if status < 300:
            return Delivery(ok=True, status=status)
        detail = response.text[:300] if response.content else ""
        if self.config.api_key and self.config.api_key in detail:
            # A platform or proxy may echo the request back; never pass the key on.
            detail = detail.replace(self.config.api_key, "***")
        refused = 400 <= status < 500 and status != 429
        return Delivery(ok=False, status=status, refused=refused, detail=detail)

    def post_result(self, job_id: str, payload: bytes, is_stream: bool = False, deadline: Optional[float] = None) -> Delivery:
        """POST a final result; retried per the result policy."""
        return self._post(self.result, self.config.job_done_url, job_id, payload, is_stream)

    def post_chunk(self, job_id: str, payload: bytes, deadline: Optional[float] = None) -> Delivery:
        """POST one generator chunk to the stream URL."""
        return self._post(self.stream, self.config.job_stream_url, job_id, payload, False)

    def post_progress(self, job_id: str, payload: bytes) -> Delivery:
        """POST a progress update to the job-done URL (best effort)."""
        return self._post(self.best_effort, self.config.job_done_url, job_id, payload, False)

    def ping(self, job_ids: Iterable[str]) -> bool:
        """Send one heartbeat naming the running jobs; False when it failed."""
        if not self.config.ping_url:
            return False
        params: Dict[str, Any] = {}
        ids = ",".join(job_ids)
        if ids:
            params["job_id"] = ids
        params["runpod_version"] = __version__
        try:
            response = self._send(
                self.best_effort,
                "GET",
                with_query(self.config.ping_url, params),
                self.headers(),
                (CONNECT_TIMEOUT, max(1.0, 2 * self.config.ping_interval)),
            )
        except requests.RequestException as exc:
            log.debug("ping failed: %s", type(exc).__name__)
            return False
        return response.status_code < 300

    def close(self) -> None:
        for session in (self.fetch, self.result, self.stream, self.best_effort):
            session.close()
