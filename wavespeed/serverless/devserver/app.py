"""The Flask app of the local API: routes, request parsing, and the checks before them.

Every request passes ``screen()`` before its route runs:

- **Host** (DNS rebinding): bound to a loopback address, the API answers
  only ``Host: localhost``, ``127.0.0.1``, ``[::1]`` (any port) or a name in
  ``api_allowed_hosts``. A page whose own name an attacker re-points at
  127.0.0.1 sends its own name as Host.
- **Origin** (cross-site requests): a request carrying an ``Origin`` other
  than the server's own is refused, and so is a POST that the browser marks
  ``Sec-Fetch-Site: cross-site`` or ``same-site``.
- **Content type**: a job is created only from a JSON body (or one sent
  without a Content-Type, as curl-style clients do); ``text/plain``, forms
  and multipart bodies are what a page can send without asking.
- **Size**: a declared body over the limit is refused before it is read
  (waitress refuses it even earlier, with the same limit).

The Origin and content-type rules protect a developer's browser; realtime
mode serves the platform, which sends its own headers, so it skips them.
"""

import json
import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Optional
from urllib.parse import urlsplit

from ..config import Config
from .endpoint import IN_QUEUE, JobRecord, LocalEndpoint, StoreFull, encode_json
from .openapi import openapi_document
from .options import ApiOptions, bind_address, is_loopback
from .webhook import WebhookRefused, split_url

if TYPE_CHECKING:  # pragma: no cover
    import flask

MAX_WAIT_SECONDS = 300.0  # the longest a /runsync, /status or /stream ?wait= may hold a request
MAX_JSON_DEPTH = 100  # levels of nesting a request body may have
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# The routes that create a job (by endpoint name; every route also lives under /v2/<id>/).
JOB_ROUTES = frozenset({"root_run", "root_runsync", "v2_run", "v2_runsync"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The page stays beside the package (wavespeed/serverless/static/), as package data.
STATIC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "static")


class BadRequest(Exception):
    """The request is not one the API can serve; the message says why (400)."""


class Forbidden(Exception):
    """The request is refused by a security rule; the message says which (403)."""


class WaitBudget:
    """How many requests may wait at once; beyond that, waits answer at once.

    A request thread that waits (/runsync, ``?wait=``) is a thread no other
    request can use: without a bound, a few long polls take them all and
    ``/health`` queues behind them.
    """

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._held = 0
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        """Requests waiting right now."""
        return self._held

    @contextmanager
    def hold(self, seconds: float) -> Iterator[float]:
        """The seconds this request may wait: ``seconds``, or 0 when the budget is spent."""
        if seconds <= 0:
            yield 0.0
            return
        with self._lock:
            granted = self._held < self.limit
            if granted:
                self._held += 1
        if not granted:
            yield 0.0
            return
        try:
            yield seconds
        finally:
            with self._lock:
                self._held -= 1


# -- request parsing ----------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _too_deep(value: Any) -> bool:
    """True when ``value`` nests containers more than MAX_JSON_DEPTH levels.

    Level by level, without recursion (the point is to refuse what would
    exhaust the stack later, when the document is encoded again).
    """
    level = [value] if isinstance(value, (dict, list)) else []
    depth = 0
    while level:
        depth += 1
        if depth > MAX_JSON_DEPTH:
            return True
        below: list[Any] = []
        for item in level:
            children = item.values() if isinstance(item, dict) else item
            below.extend([c for c in children if isinstance(c, (dict, list))])
        level = below
    return False


def parse_run_request(raw: bytes) -> tuple[Any, Optional[str], Optional[float], dict[str, Any]]:
    """Check a /run body; return (input, webhook, timeout seconds, extra job keys)."""
    too_deep = f"the request body is nested more than {MAX_JSON_DEPTH} levels deep"
    try:
        text = raw.decode("utf-8")
        data = (
            json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
            if raw
            else None
        )
    except RecursionError:
        raise BadRequest(too_deep) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest('the request body must be a JSON object: {"input": {...}}')
    if "input" not in data:
        raise BadRequest('the request body has no "input": send {"input": {...}}')
    if _too_deep(data):
        raise BadRequest(too_deep)
    webhook = data.get("webhook")
    if webhook is not None:
        if not isinstance(webhook, str):
            raise BadRequest('"webhook" must be an http(s) URL')
        try:
            split_url(webhook)
        except WebhookRefused as exc:
            raise BadRequest(f'"webhook" must be an http(s) URL: {exc}') from None
    timeout: Optional[float] = None
    policy = data.get("policy")
    if policy is not None:
        if not isinstance(policy, dict):
            raise BadRequest('"policy" must be an object')
        value = policy.get("executionTimeout")
        if value is not None:
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 < value <= threading.TIMEOUT_MAX * 1000.0  # a timer's longest wait
            ):
                raise BadRequest('"policy.executionTimeout" must be a positive number of ms')
            timeout = value / 1000.0
    extra = {"s3Config": data["s3Config"]} if "s3Config" in data else {}
    return data["input"], webhook, timeout, extra


# -- the checks before every route -------------------------------------------------------


def _split_host(value: str) -> Optional[tuple[str, Optional[int]]]:
    """``(name, port)`` of a Host header value; None when it is not one."""
    try:
        parts = urlsplit("//" + value)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.path or parts.username is not None:
        return None
    return parts.hostname.lower(), port


def host_refusal(host: str, allowed: frozenset[str]) -> Optional[str]:
    """Why ``host`` may not reach an API bound to loopback; None when it may."""
    split = _split_host(host)
    if split is not None and ("*" in allowed or split[0] in allowed):
        return None
    return (
        f"Host {host!r} is not allowed: the API is bound to a loopback address and answers "
        "only localhost, 127.0.0.1 and [::1], so that a web page cannot reach it under a name "
        "of its own (DNS rebinding). To allow a name, pass --rp_api_allowed_hosts NAME or set "
        "WAVESPEED_API_ALLOWED_HOSTS"
    )


def same_origin(origin: str, host: Optional[str]) -> bool:
    """True when ``origin`` (a browser's Origin header) is this server, reached as ``host``."""
    if host is None:
        return False
    try:
        parts = urlsplit(origin)
        origin_port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    split = _split_host(host)
    if split is None:
        return False
    default = 443 if parts.scheme == "https" else 80
    return (parts.hostname.lower(), origin_port or default) == (split[0], split[1] or default)


def is_json_type(mimetype: str) -> bool:
    """JSON, or no Content-Type at all (curl-style clients)."""
    return mimetype in ("", "application/json") or mimetype.endswith("+json")


def create_app(
    config: Config,
    *,
    options: Optional[ApiOptions] = None,
    endpoint: Optional[LocalEndpoint] = None,
    bind_host: Optional[str] = None,
) -> "flask.Flask":
    """Build the Flask app of the local API.

    ``bind_host`` is the address the app is served on (default: the
    config's); on a loopback address the Host rule applies, and loopback
    webhooks are allowed. The app's ``LocalEndpoint`` (its jobs and threads)
    is ``app.extensions["wavespeed"]``; call its ``close()`` when done.
    """
    import flask
    from werkzeug.exceptions import HTTPException

    options = (options or ApiOptions()).resolve(config)
    max_body = int(options.max_body or 0)
    host = bind_address(config)[0] if bind_host is None else bind_host
    check_host = is_loopback(host)
    browser_rules = config.mode != "realtime"
    allowed = LOOPBACK_NAMES | {name.strip().lower() for name in config.api_allowed_hosts}
    jobs = endpoint or LocalEndpoint(
        config,
        options,
        private_webhooks=config.allow_private_webhooks or (browser_rules and check_host),
    )
    waits = WaitBudget(options.long_waits)
    app = flask.Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = max_body
    app.extensions["wavespeed"] = jobs
    app.extensions["wavespeed_waits"] = waits

    def reply(doc: Any, status: int = 200) -> "flask.Response":
        return flask.Response(encode_json(doc), status=status, mimetype="application/json")

    def not_found(job_id: str) -> "flask.Response":
        return reply({"error": f"job {job_id} not found (unknown, or expired)"}, 404)

    def too_large() -> "flask.Response":
        return reply({"error": f"the request body is larger than {max_body} bytes"}, 413)

    @app.before_request
    def screen() -> Optional["flask.Response"]:
        request = flask.request
        host_header = request.environ.get("HTTP_HOST")
        if check_host and host_header is not None:
            reason = host_refusal(host_header, allowed)
            if reason:
                raise Forbidden(reason)
        if browser_rules:
            origin = request.headers.get("Origin")
            site = request.headers.get("Sec-Fetch-Site", "")
            if origin is not None and not same_origin(origin, host_header):
                raise Forbidden(
                    f"cross-site request refused: Origin {origin!r} is not this server; "
                    "only the API's own page and clients that send no Origin may call it"
                )
            if site in ("cross-site", "same-site") and request.method not in SAFE_METHODS:
                raise Forbidden(f"cross-site request refused (Sec-Fetch-Site: {site})")
        length = request.content_length
        if length is not None and length > max_body:
            return too_large()
        if browser_rules and request.endpoint in JOB_ROUTES and not is_json_type(request.mimetype):
            raise Forbidden(
                f"a job needs Content-Type: application/json, not {request.mimetype!r} (a web page "
                "can send that type to this server without asking); with curl, add "
                "-H 'Content-Type: application/json'"
            )
        return None

    def wait_seconds(default: float) -> float:
        raw = flask.request.args.get("wait")
        if raw is None:
            return default
        try:
            value = float(raw) / 1000.0
        except ValueError:
            raise BadRequest("?wait= must be a number of milliseconds") from None
        return min(max(0.0, value), MAX_WAIT_SECONDS)  # NaN: 0, Infinity: the maximum

    def queue_job() -> JobRecord:
        job_input, webhook, timeout, extra = parse_run_request(flask.request.get_data(cache=False))
        if webhook is not None:
            try:
                jobs.webhooks.check(webhook)
            except WebhookRefused as exc:
                raise BadRequest(f'"webhook" refused: {exc}') from None
        return jobs.submit(job_input, webhook, timeout, extra)

    def run(**_: str) -> "flask.Response":
        record = queue_job()
        # Like the platform: /run answers "queued" even if a slot took it at once.
        return reply({"id": record.id, "status": IN_QUEUE})

    def runsync(**_: str) -> "flask.Response":
        wait = wait_seconds(options.runsync_wait)
        record = queue_job()
        with waits.hold(wait) as granted:
            return reply(jobs.wait(record, granted))

    def read_job(
        job_id: str, read: Callable[[JobRecord, float], dict[str, Any]]
    ) -> "flask.Response":
        """``read(record, seconds it may wait)``, the wait from ``?wait=`` (default none)."""
        wait = wait_seconds(0.0)
        record = jobs.get(job_id)
        if record is None:
            return not_found(job_id)
        with waits.hold(wait) as granted:
            return reply(read(record, granted))

    def status(job_id: str, **_: str) -> "flask.Response":
        return read_job(job_id, jobs.wait)

    def stream(job_id: str, **_: str) -> "flask.Response":
        return read_job(job_id, jobs.take_stream)

    def cancel(job_id: str, **_: str) -> "flask.Response":
        doc = jobs.cancel(job_id)
        if doc is None:
            return not_found(job_id)
        return reply({"id": doc["id"], "status": doc["status"]})

    def health(**_: str) -> "flask.Response":
        return reply(jobs.health())

    def purge(**_: str) -> "flask.Response":
        return reply({"removed": jobs.purge(), "status": "completed"})

    routes: list[tuple[str, str, Callable[..., Any], tuple[str, ...]]] = [
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

    @app.route("/metrics")
    def metrics() -> "flask.Response":
        code, body, content_type = jobs.metrics.render()
        return flask.Response(body, status=code, content_type=content_type)

    @app.route("/openapi.json")
    def openapi() -> "flask.Response":
        return reply(openapi_document())

    @app.route("/")
    def page() -> "flask.Response":
        return flask.send_from_directory(STATIC_DIR, "index.html", max_age=0)

    @app.errorhandler(BadRequest)
    def bad_request(exc: BadRequest) -> "flask.Response":
        return reply({"error": str(exc)}, 400)

    @app.errorhandler(Forbidden)
    def forbidden(exc: Forbidden) -> "flask.Response":
        return reply({"error": str(exc)}, 403)

    @app.errorhandler(StoreFull)
    def store_full(exc: StoreFull) -> "flask.Response":
        return reply({"error": f"too many jobs: {exc}"}, 429)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> "flask.Response":
        if exc.code == 413:
            return too_large()
        return reply({"error": exc.description or exc.name}, exc.code or 500)

    return app

