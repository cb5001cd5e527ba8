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
through ``requests``, nor through ``urlopen``: ``exchange.exchange`` sends
each request on a connection of the session's own urllib3 pool, with the
request target and header block made once as bytes (per worker for
job-take, per job for posts), and sends the payload bytes as given. That
skips the ``PreparedRequest``/``Response`` objects, the header merging and
the cookie and proxy handling of ``requests`` (about a third of the
worker's CPU per job), then urllib3's per-request parsing and wrapping
(about half of what was left). Redirects are never followed.

The retry loop is ours, driven by the adapter's ``Retry`` value (which
errors and statuses are retried, how many times, the backoff, Retry-After),
because urllib3's own loop cannot bound a post by wall-clock time nor be cut
short at shutdown: ``abort_posts()`` does both.

What the calls return is in ``outcomes``, the job-take body reader in
``jobtake``, the cuttable connections in ``connections`` and the small wire
helpers in ``wire``; this module keeps every request the worker makes, so
the hot path reads top to bottom here (which is why it is over 400 lines).
"""

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Optional, cast
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import ClosedPoolError, HTTPError
from urllib3.util.retry import Retry

from .. import __version__
from .config import Config
from .connections import TrackedAdapter, Tracker
from .exchange import Answer, exchange, header_block, host_line, wire_target
from .jobtake import parse_jobs, read_take_body
from .logs import logger
from .outcomes import CancelKind, CancelPoll, Delivery, Outcome, TakeKind, TakeResult
from .wire import (
    RETRY_STATUSES,
    describe,
    header_safe,
    job_url,
    refused_status,
    result_retry,
    retry_after_seconds,
    retry_policy,
    with_query,
)

__all__ = [
    "CancelKind",
    "CancelPoll",
    "Delivery",
    "Outcome",
    "RETRY_STATUSES",
    "TakeKind",
    "TakeResult",
    "Transport",
    "describe",
    "header_safe",
    "job_url",
    "parse_jobs",
    "read_take_body",
    "result_retry",
    "retry_after_seconds",
    "with_query",
]

log = logger("transport")

USER_AGENT = f"wavespeed-serverless/{__version__} (urllib3)"
#: The runpod-python release whose worker protocol this SDK speaks (PROTOCOL §17).
RUNPOD_PROTOCOL_VERSION = "1.12.0"
CONNECT_TIMEOUT = 5.0
RESULT_READ_TIMEOUT = 30.0  # per try; read at call time (tests shorten it)
PROGRESS_DEADLINE = 10.0  # progress is best effort: never hold a job's outbox long

# Network trouble as urllib3 raises it with retries=False (exchange() raises the
# same). ValueError: a header the transport refuses to send (a line break in the
# API key); the transport reports it, never raises it.
NETWORK_ERRORS = (HTTPError, OSError, ValueError)


@dataclass(frozen=True)
class _JobRoute:
    """Everything posting for one job needs, prepared once per job."""

    head: bytes  # the header block (exchange.header_block)
    done: bytes  # job-done request target, isStream=false
    done_final_stream: bytes  # the same with isStream=true
    stream: bytes  # job-stream request target (b"" without a stream URL)


# -- the transport ------------------------------------------------------------------


class Transport:
    """The worker's HTTP client. Thread-safe; never raises for network trouble."""

    def __init__(self, config: Config, max_connections: int = 64) -> None:
        self.config = config
        self._posts_aborted = threading.Event()
        self._fetch_conns = Tracker()
        self._post_conns = Tracker(refuse=self._posts_aborted)
        self.fetch = self._session(TrackedAdapter(self._fetch_conns, max_retries=0, pool_maxsize=4))
        self.result = self._session(
            TrackedAdapter(
                self._post_conns,
                max_retries=result_retry(config.result_deadline),
                pool_maxsize=max_connections,
            )
        )
        self.stream = self._session(
            TrackedAdapter(
                self._post_conns,
                max_retries=retry_policy(3, 0.2, 2.0),
                pool_maxsize=max_connections,
            )
        )
        self.best_effort = self._session(
            TrackedAdapter(
                self._post_conns,
                max_retries=retry_policy(1, 0.2, 1.0),
                pool_maxsize=max_connections,
            )
        )
        self.heartbeat = self._session(HTTPAdapter(max_retries=0, pool_maxsize=1))
        self._pools: dict[tuple[int, str], HTTPConnectionPool] = {}
        self._pools_lock = threading.Lock()
        self._closed = False
        self._headers = self._base_headers()
        # Both bounded and thread-safe (lru_cache locks internally).
        self._take_route: Callable[[int, bool], tuple[HTTPConnectionPool, bytes]] = lru_cache(
            maxsize=64
        )(self._make_take_route)
        self._host: Callable[[HTTPConnectionPool], bytes] = lru_cache(maxsize=16)(host_line)
        self._head: Optional[bytes] = None  # header_block(self._headers), made at first use
        # Request targets of job-done (isStream false, true) and job-stream, "$ID" still in.
        self._job_targets: Optional[tuple[str, ...]] = None
        self._job_route: Callable[[str], _JobRoute] = lru_cache(maxsize=512)(self._make_job_route)
        self._lane: Callable[[requests.Session, str], tuple[HTTPConnectionPool, Retry]] = lru_cache(
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

    def _base_headers(self) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT}
        if self.config.api_key:
            headers["Authorization"] = self.config.api_key
        return headers

    def headers(self, job_id: Optional[str] = None, content: bool = False) -> dict[str, str]:
        """The headers of a request (for a job: with its header-safe ``X-Request-ID``)."""
        headers = dict(self._headers)
        if job_id is not None:
            headers["X-Request-ID"] = header_safe(str(job_id))
        if content:
            # What runpod sends; both platforms parse the body as JSON anyway.
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        return headers

    # -- pools and request targets ------------------------------------------------

    def _route(self, session: requests.Session, url: str) -> tuple[HTTPConnectionPool, str]:
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
        adapter.cert_verify(pool, url, True, None)  # type: ignore[no-untyped-call]
        return cast(HTTPConnectionPool, pool)

    def take_url(self, free: int, in_progress: bool) -> str:
        url = self.config.job_take_url or ""
        params: dict[str, Any] = {"job_in_progress": 1 if in_progress else 0}
        if free > 1 and "/job-take/" in url:
            url = url.replace("/job-take/", "/job-take-batch/", 1)
            params["batch_size"] = free
        return with_query(url, params)

    def _make_lane(self, session: requests.Session, url: str) -> tuple[HTTPConnectionPool, Retry]:
        """The pool a session posts to ``url``'s origin through, and its retry policy."""
        adapter = session.get_adapter(url)
        assert isinstance(adapter, HTTPAdapter)
        return self._route(session, url)[0], adapter.max_retries

    def _make_take_route(self, free: int, in_progress: bool) -> tuple[HTTPConnectionPool, bytes]:
        pool, target = self._route(self.fetch, self.take_url(free, in_progress))
        return pool, wire_target(target)

    def _base_head(self) -> bytes:
        """The header block of requests that name no job (ValueError: an unsendable API key)."""
        head = self._head
        if head is None:
            head = self._head = header_block(self._headers)
        return head

    def _make_job_route(self, job_id: str) -> _JobRoute:
        targets = self._job_targets
        if targets is None:
            targets = self._job_targets = tuple(
                self._route(session, with_query(template, {"isStream": flag}))[1]
                if template
                else ""
                for session, template, flag in (
                    (self.result, self.config.job_done_url, "false"),
                    (self.result, self.config.job_done_url, "true"),
                    (self.stream, self.config.job_stream_url, "false"),
                )
            )
        quoted = quote(job_id, safe="")  # as job_url() does
        done, final, stream = (wire_target(target.replace("$ID", quoted)) for target in targets)
        return _JobRoute(header_block(self.headers(job_id, content=True)), done, final, stream)

    # -- job-take and job-stop ------------------------------------------------------

    def _get(
        self, pool: HTTPConnectionPool, target: bytes, read_timeout: Optional[float] = None
    ) -> Answer:
        """One GET: no retries or redirects (the caller backs off).

        The read timeout defaults to the long-poll's (job-take, job-stop).
        """
        read = self.config.fetch_timeout if read_timeout is None else read_timeout
        return exchange(
            pool, self._host(pool), b"GET", target, self._base_head(), None, CONNECT_TIMEOUT, read
        )

    def take(self, free: int, in_progress: bool) -> TakeResult:
        """Ask for up to ``free`` jobs. Never raises: every failure is a ``TakeKind``."""
        try:
            response = self._get(*self._take_route(free, in_progress))
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
            response = self._get(pool, wire_target(target))
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
        field = "done_final_stream" if is_stream else "done"
        return self._post(self.result, self.config.job_done_url, job_id, field, payload, deadline)

    def post_chunk(self, job_id: str, payload: bytes, deadline: Optional[float] = None) -> Delivery:
        """POST one generator chunk to the stream URL (a few retries, within ``deadline``)."""
        if not self.config.job_stream_url:
            return Delivery(Outcome.REFUSED, detail="no job-stream URL configured")
        return self._post(
            self.stream, self.config.job_stream_url, job_id, "stream", payload, deadline
        )

    def post_progress(self, job_id: str, payload: bytes) -> Delivery:
        """POST a progress update to the job-done URL (best effort: one retry, 10 s at most)."""
        if not self.config.job_done_url:
            return Delivery(Outcome.REFUSED, detail="no job-done URL configured")
        deadline = time.monotonic() + min(PROGRESS_DEADLINE, self.config.result_deadline)
        return self._post(
            self.best_effort, self.config.job_done_url, job_id, "done", payload, deadline
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
        job_id: str,
        field: str,
        payload: bytes,
        deadline: Optional[float],
    ) -> Delivery:
        """POST ``payload`` to the ``field`` target of the job's route (``_JobRoute``)."""
        if deadline is None:
            deadline = time.monotonic() + self.config.result_deadline
        where = field
        try:
            try:
                route = self._job_route(str(job_id))
                pool, policy = self._lane(session, template)
            except ValueError as exc:  # an unsendable header or URL: nothing to retry
                return Delivery(Outcome.FAILED, None, describe(exc), 0)
            target: bytes = getattr(route, field)
            where = target.split(b"?", 1)[0].decode("ascii")
            return self._exchange(pool, target, route.head, payload, policy, deadline)
        except Exception as exc:  # noqa: BLE001 - the delivery path must get a value, not raise
            log.exception("posting to %s failed unexpectedly", where)
            return Delivery(Outcome.FAILED, detail=f"internal error: {describe(exc)}")

    def _exchange(
        self,
        pool: HTTPConnectionPool,
        target: bytes,
        head: bytes,
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
                return Delivery(
                    Outcome.FAILED, status, "posts aborted (worker shutting down)", tries
                )
            if remaining <= 0:
                return Delivery(Outcome.FAILED, status, detail or "the deadline passed", tries)
            tries += 1
            try:
                response = exchange(
                    pool,
                    self._host(pool),
                    b"POST",
                    target,
                    head,
                    payload,
                    min(CONNECT_TIMEOUT, remaining),
                    min(RESULT_READ_TIMEOUT, remaining),
                )
            except NETWORK_ERRORS as exc:
                status, detail = None, describe(exc)
                if self._posts_aborted.is_set():
                    continue  # reported as aborted at the top of the loop
                try:
                    retry = retry.increment("POST", target.decode(), error=exc)
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
                settled = Outcome.REFUSED if refused_status(status) else Outcome.FAILED
                if not retry.is_retry("POST", status, has_retry_after):
                    return Delivery(settled, status, detail, tries)
                try:
                    retry = retry.increment("POST", target.decode(), response=response)  # type: ignore[arg-type]
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

    def _answer_text(self, response: Answer) -> str:
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
        params: dict[str, Any] = {}
        ids = ",".join(job_ids)
        if ids:
            params["job_id"] = ids
        params["runpod_version"] = RUNPOD_PROTOCOL_VERSION
        params["wavespeed_version"] = __version__
        try:
            pool, target = self._route(self.heartbeat, with_query(self.config.ping_url, params))
            read = max(1.0, 2 * self.config.ping_interval)
            response = self._get(pool, wire_target(target), read)
        except NETWORK_ERRORS as exc:
            log.debug("ping failed: %s", describe(exc))
            return False
        return bool(response.status < 300)

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
