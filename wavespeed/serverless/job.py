"""Jobs and every wire shape of a result.

``normalize_output`` is runpod's table of how a handler's return value
becomes the body posted to job-done; ``error_payload`` is the payload of a
handler exception, in the format of the platform's reference SDK;
``encode`` turns a body into bytes exactly once. Secrets (the API key,
values registered with ``log.secret``) are masked in every error text
before it is encoded.
"""

import contextvars
import io
import json
import math
import threading
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any, Callable, Optional, Union

from .. import RUNPOD_VERSION, __version__
from .errors import OutputNotSerializable
from .masking import mask, mask_value

# When the SDK was imported: the debugger's ready delay runs from here to
# start(), as runpod's does from its own import.
IMPORTED_AT = time.perf_counter()


class Job(dict):  # type: ignore[type-arg]
    """The job dict a handler receives: ``{"id", "input", ...}``.

    It is a plain dict to the handler (``job["input"]``, ``json.dumps(job)``),
    and also carries the hooks ``progress_update`` needs and a cancellation
    flag a long-running sync handler may poll: ``job.cancelled.is_set()``.
    Copies (``copy.deepcopy``, pickle) are plain dicts.
    """

    __slots__ = ("channel", "cancelled", "cancel_hook", "__weakref__")

    def __init__(self, data: dict[str, Any], channel: Any = None) -> None:
        super().__init__(data)
        self.channel = channel
        self.cancelled = threading.Event()
        # Set while an async handler's task runs: cancels it from any thread.
        self.cancel_hook: Optional[Callable[[], None]] = None

    @property
    def id(self) -> str:
        return str(self.get("id"))

    def cancel(self) -> None:
        """Ask the job to stop: sets ``cancelled`` and cancels a running async task."""
        self.cancelled.set()
        hook = self.cancel_hook
        if hook is not None:
            hook()

    def __reduce__(self) -> Any:
        return (dict, (dict(self),))

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        import copy

        return copy.deepcopy(dict(self), memo)

    def __copy__(self) -> dict[str, Any]:
        return dict(self)


# The job the current thread (or task) is running; set by the runner around
# the handler call. Logging reads the job id from it; progress_update falls
# back to it when handed a plain-dict copy of the job.
current_job: "contextvars.ContextVar[Optional[Job]]" = contextvars.ContextVar(
    "wavespeed_current_job", default=None
)


@dataclass(frozen=True)
class JobResult:
    """The one final result of a job, ready to post."""

    job_id: str
    body: dict[str, Any]
    payload: bytes  # body encoded once, UTF-8 JSON
    is_stream: bool = False
    refresh: bool = False  # refresh_worker: the worker stops after this job ("stopPod" on the wire)
    failed: bool = False
    cancelled: bool = False  # cancelled (by the platform, or the local API): nothing is posted
    timed_out: bool = False  # decided by a per-job timeout


def failure(job_id: str, message: str, refresh: bool = False) -> JobResult:
    """A small FAILED result carrying a plain message (timeouts, shutdown, refusals)."""
    body: dict[str, Any] = {"error": message}
    if refresh:
        body["stopPod"] = True
    return JobResult(job_id, body, encode(body), failed=True, refresh=refresh)


def error_text(error: Any) -> str:
    """A handler's ``error`` value as the string both platforms need, secrets masked."""
    if isinstance(error, str):
        return mask(error)
    if isinstance(error, (list, dict, tuple)):
        try:
            return json.dumps(mask_value(error), ensure_ascii=False, default=str)
        except (TypeError, ValueError, RecursionError):
            return mask(str(error))
    return mask(str(error))


def normalize_output(value: Any, refresh_worker: bool = False) -> tuple[dict[str, Any], bool]:
    """Turn a handler's return value into the body to post.

    Returns ``(body, refresh)``. The caller's value is never mutated.
    """
    refresh = refresh_worker
    if isinstance(value, dict):
        output = dict(value)
        error = output.pop("error", None)
        if "refresh_worker" in output:
            refresh = bool(output.pop("refresh_worker")) or refresh
        body: dict[str, Any] = {}
        if output:
            body["output"] = output
        if error:
            body["error"] = error_text(error)
    else:
        body = {"output": value}
    if refresh:
        body["stopPod"] = True
    return body, refresh


def _exception_text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - an exception whose __str__ raises still gets reported
        return f"<unprintable {type(exc).__name__}>"


def error_payload(
    exc: BaseException,
    worker_id: str,
    hostname: str,
    tb: Optional[str] = None,
    *,
    platform: str = "runpod",
    secrets: Iterable[Optional[str]] = (),
) -> dict[str, Any]:
    """The details of a handler exception, as the platform's reference SDK reports them.

    RunPod gets runpod 1.12's keys and formats (``error_type`` is
    ``str(type(exc))``, e.g. ``"<class 'ValueError'>"``, and
    ``runpod_version``); Waverless gets wavespeed 1.0.14's (``error_type`` is
    the class name, and ``wavespeed_version``). Every string is masked
    (the registered secrets plus ``secrets``).
    """
    if tb is None:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    details: dict[str, Any] = {
        "error_type": type(exc).__name__ if platform == "waverless" else str(type(exc)),
        "error_message": _exception_text(exc),
        "error_traceback": tb,
        "hostname": hostname,
        "worker_id": worker_id,
    }
    if platform != "waverless":
        details["runpod_version"] = RUNPOD_VERSION
    details["wavespeed_version"] = __version__
    masked: dict[str, Any] = mask_value(details, secrets)
    return masked


def encode(body: Any) -> bytes:
    """JSON-encode a body once; raise OutputNotSerializable when it cannot be.

    Non-ASCII text is kept as UTF-8. NaN and Infinity, which are not JSON,
    become ``null`` (issue 12): the fast strict encoder runs first and only a
    body that holds one pays for a sanitized copy. A body holding a large
    string (a base64 image) is written into one buffer of its final size
    (see ``_encode_large``), so the peak memory is the string plus the
    payload, not three copies of it.
    """
    try:
        try:
            return _encode(body)
        except ValueError as exc:
            if _NON_FINITE not in str(exc):
                raise
        return _encode(non_finite_as_null(body))
    except (TypeError, ValueError, RecursionError) as exc:
        raise OutputNotSerializable(
            f"the handler's output cannot be sent as JSON: {exc}", _culprit(body)
        ) from None


# The message of the ValueError both json encoders raise for NaN and Infinity.
_NON_FINITE = "Out of range float values"
# A str this long is copied into the payload in 256 KB slices instead of through
# json.dumps (which makes two whole copies of it before the UTF-8 one).
_LARGE = 1 << 20
_SLICE = 1 << 18
# Large strings are looked for this deep and in containers this small only:
# the look must stay free for ordinary bodies.
_LARGE_DEPTH = 3
_LARGE_ITEMS = 32
# The bytes json escapes in a string (ensure_ascii=False): controls, '"' and '\\'.
_ESCAPED = bytes(range(0x20)) + b'"\\'


# One encoder, built once: json.dumps() builds a new one per call when given options.
# It holds only its settings, so threads share it safely.
_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def _encode(body: Any) -> bytes:
    if _holds_large(body, 0):
        return _encode_large(body)
    return _dumps(body).encode("utf-8")


def _holds_large(value: Any, depth: int) -> bool:
    """Whether a large str sits near the top of ``value`` (exact types only).

    Plain loops, not generators: this runs for every body posted.
    """
    kind = type(value)
    if kind is str:
        return len(value) >= _LARGE
    if depth >= _LARGE_DEPTH:
        return False
    if kind is dict:
        if len(value) > _LARGE_ITEMS:
            return False
        found = False
        for key, item in value.items():
            if type(key) is not str:
                return False
            if not found and _holds_large(item, depth + 1):
                found = True
        return found
    if kind is list or kind is tuple:
        if len(value) > _LARGE_ITEMS:
            return False
        for item in value:
            if _holds_large(item, depth + 1):
                return True
    return False


def _encode_large(body: Any) -> bytes:
    """The same bytes as ``_dumps(body).encode()``, without whole-size temporaries.

    The JSON around the large strings is encoded as usual; each large string
    is then copied into a buffer allocated once at the payload's final size,
    256 KB at a time (escaped only where a slice needs it). ``BytesIO.getvalue()``
    hands that buffer over without copying it (CPython).
    """
    pieces: list[Union[bytes, str]] = []  # JSON text, or a large string to quote
    _flatten(body, pieces, 0)
    size = sum(len(piece) + 2 if isinstance(piece, str) else len(piece) for piece in pieces)
    out = io.BytesIO()
    out.seek(size - 1)
    out.write(b"\0")  # sizes the buffer once; escapes or UTF-8 can only grow it
    out.seek(0)
    for piece in pieces:
        if isinstance(piece, str):
            _write_string(piece, out)
        else:
            out.write(piece)
    out.truncate()
    return out.getvalue()


def _flatten(value: Any, pieces: list[Union[bytes, str]], depth: int) -> None:
    kind = type(value)
    if kind is str and len(value) >= _LARGE:
        pieces.append(value)
    elif kind is dict and _holds_large(value, depth):
        pieces.append(b"{")
        for index, (key, item) in enumerate(value.items()):
            pieces.append(b"%s%s:" % (b"," if index else b"", _dumps(key).encode("utf-8")))
            _flatten(item, pieces, depth + 1)
        pieces.append(b"}")
    elif (kind is list or kind is tuple) and _holds_large(value, depth):
        pieces.append(b"[")
        for index, item in enumerate(value):
            if index:
                pieces.append(b",")
            _flatten(item, pieces, depth + 1)
        pieces.append(b"]")
    else:
        pieces.append(_dumps(value).encode("utf-8"))


def _write_string(text: str, out: "io.BytesIO") -> None:
    out.write(b'"')
    for start in range(0, len(text), _SLICE):
        part = text[start : start + _SLICE]
        data = part.encode("utf-8")  # a lone surrogate fails here, as in json.dumps().encode()
        if len(data.translate(None, _ESCAPED)) != len(data):
            data = encode_basestring(part)[1:-1].encode("utf-8")
        out.write(data)
    out.write(b'"')


def non_finite_as_null(value: Any) -> Any:
    """A copy of ``value`` with every NaN and Infinity (keys too) as None.

    What every JSON writer here falls back to when its strict encoder refuses
    a document: the result posts, the local API's replies, ``/health``.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {non_finite_as_null(key): non_finite_as_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [non_finite_as_null(item) for item in value]
    return value


def _culprit(value: Any, depth: int = 0) -> str:
    """Name the first value inside ``value`` that JSON cannot encode."""
    if depth > 50:
        return "nested too deeply"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                return type(key).__name__
            found = _culprit(item, depth + 1)
            if found:
                return found
        return ""
    if isinstance(value, (list, tuple)):
        for item in value:
            found = _culprit(item, depth + 1)
            if found:
                return found
        return ""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return "float (NaN or Infinity)"
    if value is None or isinstance(value, (str, int, float, bool)):
        return ""
    return type(value).__name__
