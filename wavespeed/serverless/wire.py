"""Small pieces of the wire protocol: URL templates, header-safe values,
Retry-After, retry policies and short texts for network errors."""

import email.utils
import time
from collections.abc import Mapping
from typing import Any, Optional
from urllib.parse import quote, urlencode

from urllib3.util.retry import Retry

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


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
    # surrogatepass: a lone surrogate (JSON allows "\ud800") still has bytes to send.
    return template.replace("$ID", quote(_utf8(str(job_id)), safe=""))


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
    return quote(_utf8(value), safe=_HEADER_SAFE)


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


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
    return retry_policy(max(tries, 1), backoff_factor, backoff_max)


def retry_policy(total: int, backoff_factor: float, backoff_max: float) -> Retry:
    """A retry policy: ``total`` tries of each kind, exponential backoff up to ``backoff_max``.

    urllib3 2 takes ``backoff_max``; urllib3 1.26 only reads the class attribute
    ``DEFAULT_BACKOFF_MAX`` (an instance attribute is lost at each increment),
    so the cap also rides on a subclass, which ``Retry.new()`` preserves.
    """
    capped = type("CappedRetry", (Retry,), {"DEFAULT_BACKOFF_MAX": backoff_max})
    options: dict[str, Any] = dict(
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
    try:
        retry: Retry = capped(backoff_max=backoff_max, **options)
    except TypeError:  # urllib3 1.26: no backoff_max argument
        retry = capped(**options)
    return retry


def refused_status(status: int) -> bool:
    """A status that retrying cannot fix: a redirect (not followed) or a 4xx but 429."""
    return 300 <= status < 500 and status != 429
