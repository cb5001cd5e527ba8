"""Logging: runpod-compatible text lines, or JSON lines on a platform.

Text, locally:    ``INFO    | job-123 | message``
JSON, when an endpoint id is set: ``{"requestId": ..., "message": ..., "level": ...}``

The current job id comes from the ``current_job`` ContextVar, so
lines logged from handler threads carry it. Nothing is configured at import:
``setup_logging`` runs inside ``start()``.
"""

import json
import logging
import os
import sys
import threading
from typing import Any, Optional, TextIO

from .config import TRACE, Config
from .job import current_job

LOGGER_NAME = "wavespeed"

_LEVEL_NAMES = {TRACE: "TRACE", logging.WARNING: "WARN"}


def logger(name: str = "") -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)


class LineFormatter(logging.Formatter):
    """Formats a record as a runpod text line or a JSON line.

    It also masks the API key, should anything ever put it in a message.
    """

    def __init__(self, json_lines: bool, secret: Optional[str]) -> None:
        super().__init__()
        self.json_lines = json_lines
        self.secret = secret

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        job_id = getattr(record, "job_id", None)
        if not job_id:
            job = current_job.get()
            job_id = job.id if job is not None else None
        level = _LEVEL_NAMES.get(record.levelno, record.levelname)
        if self.json_lines:
            line = json.dumps(
                {"requestId": job_id, "message": message, "level": level},
                ensure_ascii=False,
                default=str,
            )
        elif job_id:
            line = f"{level.ljust(7)} | {job_id} | {message}"
        else:
            line = f"{level.ljust(7)} | {message}"
        if self.secret and self.secret in line:
            line = line.replace(self.secret, "***")
        return line


class SafeStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler whose failures never reach the code that logged.

    A handler may close or break ``sys.stderr`` (``sys.stderr.close()``, a
    closed pipe). ``logging``'s own ``handleError`` then writes to that same
    stream, and the ``ValueError`` it raises escapes into whatever SDK code
    was logging (a result being posted, a thread role's guard, shutdown).
    Here the line goes straight to the stream's file descriptor instead
    (still open after ``sys.stderr.close()``), or is dropped.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        try:
            self._fd: Optional[int] = stream.fileno()
        except (AttributeError, OSError, ValueError):  # io.StringIO and the like
            self._fd = None

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        try:
            if self._fd is not None:
                os.write(self._fd, (self.format(record) + self.terminator).encode("utf-8", "replace"))
        except Exception:  # noqa: BLE001 - nowhere left to write: the line is dropped
            pass


def setup_logging(config: Config, stream: Optional[TextIO] = None) -> logging.Handler:
    """Install our one handler on the ``wavespeed`` logger (replacing a previous one)."""
    logging.addLevelName(TRACE, "TRACE")
    log = logger()
    for old in [h for h in log.handlers if getattr(h, "_wavespeed", False)]:
        log.removeHandler(old)
    handler = SafeStreamHandler(stream or sys.stderr)
    handler.setFormatter(LineFormatter(config.json_logs, config.api_key))
    handler._wavespeed = True  # type: ignore[attr-defined]
    log.addHandler(handler)
    # runpod's NOTSET means no logs at all (not logging's "inherit").
    log.setLevel(config.log_level if config.log_level else logging.CRITICAL + 1)
    log.propagate = False
    return handler


# Guards the one-time fallback handler below (a lock holds no state of ours).
_FALLBACK_LOCK = threading.Lock()


def ensure_handler() -> None:
    """Give the ``wavespeed`` logger a stderr handler if nothing configured one yet.

    A handler logging at import time (``log.info("loading model")``) runs
    before ``start()``; without this its line would be lost. ``start()``'s
    ``setup_logging`` replaces this fallback.
    """
    base = logger()
    if base.handlers:
        return
    with _FALLBACK_LOCK:
        if base.handlers:
            return
        endpoint = os.environ.get("RUNPOD_ENDPOINT_ID") or os.environ.get("WAVERLESS_ENDPOINT_ID")
        handler = SafeStreamHandler(sys.stderr)
        handler.setFormatter(LineFormatter(bool(endpoint), None))
        handler._wavespeed = True  # type: ignore[attr-defined]
        logging.addLevelName(TRACE, "TRACE")
        if base.level == logging.NOTSET:
            base.setLevel(logging.INFO)
        base.addHandler(handler)
        base.propagate = False


class JobLogger:
    """``serverless.log``: runpod's RunPodLogger surface on standard logging.

    ``log.info("message", job_id)`` or ``log.info("message", request_id=...)``;
    without an id, the current job's id is used.
    """

    def __init__(self, name: str = "handler") -> None:
        self._name = name

    def _log(
        self,
        level: int,
        message: Any,
        job_id: Optional[str] = None,
        request_id: Optional[str] = None,
    ) -> None:
        ensure_handler()
        extra = {"job_id": job_id or request_id}
        logger(self._name).log(level, "%s", message, extra=extra)

    def trace(self, message: Any, job_id: Optional[str] = None, **kw: Optional[str]) -> None:
        self._log(TRACE, message, job_id, kw.get("request_id"))

    def debug(self, message: Any, job_id: Optional[str] = None, **kw: Optional[str]) -> None:
        self._log(logging.DEBUG, message, job_id, kw.get("request_id"))

    def info(self, message: Any, job_id: Optional[str] = None, **kw: Optional[str]) -> None:
        self._log(logging.INFO, message, job_id, kw.get("request_id"))

    def warn(self, message: Any, job_id: Optional[str] = None, **kw: Optional[str]) -> None:
        self._log(logging.WARNING, message, job_id, kw.get("request_id"))

    warning = warn

    def error(self, message: Any, job_id: Optional[str] = None, **kw: Optional[str]) -> None:
        self._log(logging.ERROR, message, job_id, kw.get("request_id"))
