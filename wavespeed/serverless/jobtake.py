"""Reading a job-take body (PROTOCOL §3) without ever raising.

``json.loads`` fails on bodies a platform or a proxy can send: nested too
deeply (``RecursionError``), invalid UTF-8, truncated. Such a body is
salvaged with a bounded scan of its raw bytes: every job whose top-level
``"id"`` can still be read is returned as malformed (the worker reports it
FAILED instead of leaving it to the platform's timeout), and the readable
jobs of a batch still run.
"""

import json
import re
from typing import Any, Optional

from .logs import logger
from .outcomes import TakeKind, TakeResult

log = logger("transport")


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
        log.warning(
            "job-take returned a job without an id; ignored (keys: %s)", sorted(map(str, item))
        )
        return
    if "input" not in item:
        result.malformed.append((str(job_id), "the job has no 'input' field"))
        return
    result.jobs.append(item)


# A JSON string, or one structural byte. The string is unrolled (one fast
# match however long) and may end at the end of the input: a truncated body's
# last string is one token, so the scan stays linear.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)|[\[\]{},:]', re.DOTALL)
# After an "id" key: its value, a string or an integer, bounded.
_ID_VALUE = re.compile(rb'\s*:\s*("(?:[^"\\]|\\.){1,1024}"|-?\d{1,64})\s*[,}]', re.DOTALL)
_OPEN, _CLOSE = frozenset(b"[{"), frozenset(b"]}")
_COMMA, _COLON = ord(","), ord(":")
# A body this many tokens long is not scanned further (a bound on the work).
_MAX_TOKENS = 2_000_000


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


def _element_spans(raw: bytes) -> list[tuple[int, int]]:
    """The byte spans of a top-level JSON list's elements (a truncated list too)."""
    spans: list[tuple[int, int]] = []
    depth, start = 0, -1
    for count, match in enumerate(_TOKEN.finditer(raw)):
        first = raw[match.start()]
        if first in _OPEN:
            depth += 1
            if depth == 1:
                start = match.end()
        elif first in _CLOSE:
            if depth == 1 and start >= 0:
                spans.append((start, match.start()))
                return spans
            depth -= 1
        elif first == _COMMA and depth == 1:
            spans.append((start, match.start()))
            start = match.end()
        if count >= _MAX_TOKENS:
            break
    if depth >= 1 and start >= 0:
        spans.append((start, len(raw)))
    return [(s, e) for s, e in spans if raw[s:e].strip()]


def _object_id(raw: bytes) -> Optional[str]:
    """The ``"id"`` of a JSON object's top level, read without parsing the rest."""
    depth = 0
    expect_key = False
    for count, match in enumerate(_TOKEN.finditer(raw)):
        first = raw[match.start()]
        if first in _OPEN:
            depth += 1
            expect_key = depth == 1 and first == ord("{")
        elif first in _CLOSE:
            depth -= 1
            if depth <= 0:
                return None
        elif first == _COMMA:
            expect_key = depth == 1
        elif first == _COLON:
            expect_key = False
        elif (
            expect_key
            and depth == 1
            and match.end() - match.start() == 4
            and match.group() == b'"id"'
        ):
            value = _ID_VALUE.match(raw, match.end())
            if value is None:
                return None
            try:
                return str(json.loads(value.group(1)))
            except ValueError:
                return None
        if count >= _MAX_TOKENS:
            break
    return None
