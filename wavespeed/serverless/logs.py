"""Logging: runpod's lines, on stdout, that can never break the worker.

Text:  ``INFO   | message`` and ``INFO   | job-123 | message``
       (runpod's ``f"{level.ljust(7)}| {message}"``)
JSON, when an endpoint id is set: ``{"requestId": ..., "message": ..., "level": ...}``

Lines go to stdout, as runpod's do, except in local test mode, where stdout
carries the result JSON and the lines go to stderr. A message longer than
4,096 characters is cut in the middle, as runpod cuts it. The API key and the
registered secrets are masked before a line is encoded.

Two levels: the handler's own lines (``serverless.log``, ``RunPodLogger``,
the ``wavespeed.handler`` logger) default to DEBUG, as in runpod; the SDK's
own lines default to INFO. ``RUNPOD_LOG_LEVEL`` (``WAVERLESS_LOG_LEVEL``),
``--rp_log_level`` and ``set_level()`` set both. NOTSET silences everything.

The current job id comes from the ``current_job`` ContextVar, so lines logged
from handler threads carry it. Nothing is configured at import:
``setup_logging`` runs inside ``start()``; a line logged before that (a model
loading at import time) installs a provisional handler so it is not lost.
"""

import json
import logging
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Optional, TextIO, TypeVar, Union, cast

from .config import LOG_LEVELS, TRACE, Config
from .job import current_job
from .masking import REGISTRY

LOGGER_NAME = "wavespeed"
HANDLER_LOGGER_NAME = "wavespeed.handler"
MAX_MESSAGE_LENGTH = 4096

#: A level above every real one: the loggers' level for NOTSET (runpod's "no logs").
SILENT = logging.CRITICAL + 1

_LEVEL_NAMES = {
    TRACE: "TRACE",
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARN",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "ERROR",  # runpod has no CRITICAL; keep the 7-wide column
}

# Marks a level chosen with set_level() before start(): start() keeps it
# unless the environment or a flag names one (runpod reads its level once,
# and a set_level() call sticks).
_USER_LEVEL_MARK = "_wavespeed_user_level"


def logger(name: str = "") -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)


def truncate(message: str) -> str:
    """runpod's cut: keep the first and last 2,048 characters and say how many went."""
    if len(message) <= MAX_MESSAGE_LENGTH:
        return message
    half = MAX_MESSAGE_LENGTH // 2
    dropped = len(message) - MAX_MESSAGE_LENGTH
    return f"{message[:half]}\n...TRUNCATED {dropped} CHARACTERS...\n{message[-half:]}"


def level_name(number: int) -> str:
    """The runpod name of a logging level number (``"WARN"`` for WARNING)."""
    if number > logging.CRITICAL:
        return "NOTSET"
    return _LEVEL_NAMES.get(number) or str(logging.getLevelName(number))


class LineFormatter(logging.Formatter):
    """Formats a record as a runpod text line or a JSON line, secrets masked first."""

    def __init__(self, json_lines: bool, secret: Optional[str] = None) -> None:
        super().__init__()
        self.json_lines = json_lines
        self.secret = secret  # the API key of this configuration

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        if record.stack_info:
            message = f"{message}\n{self.formatStack(record.stack_info)}"
        job = current_job.get()
        job_id = getattr(record, "job_id", None)
        if not job_id and job is not None:
            job_id = job.id
        batch_id = job.get("batchId") if job is not None else None
        if batch_id:
            message = f"[batchId={batch_id}] {message}"
        level = getattr(record, "level_name", None) or level_name(record.levelno)
        extra = (self.secret,)
        # Mask before cutting (a cut could split a secret) and before
        # encoding (JSON escapes would hide a secret holding '"' or '\').
        message = truncate(REGISTRY.mask(message, extra))
        if job_id is not None:
            job_id = REGISTRY.mask(str(job_id), extra)
        if self.json_lines:
            return json.dumps({"requestId": job_id, "message": message, "level": level})
        if job_id:
            return f"{level.ljust(7)}| {job_id} | {message}"
        return f"{level.ljust(7)}| {message}"


class LineHandler(logging.Handler):
    """Writes each line to ``sys.stdout`` or ``sys.stderr``, and never raises.

    The stream is looked up at every write (as ``print`` does), so a handler
    that replaces ``sys.stdout`` is followed. If that stream is closed or
    broken, the line goes to the process's file descriptor 1 or 2 instead
    (Python's standard streams do not close their descriptor); if that
    fails too, the line is dropped. Logging must never raise into the SDK:
    ``logging.Handler.handleError`` itself raises when ``sys.stderr`` is
    closed, so it is not used.
    """

    def __init__(self, target: Union[str, TextIO] = "stdout") -> None:
        super().__init__()
        if isinstance(target, str):
            if target not in ("stdout", "stderr"):
                raise ValueError(f"target must be 'stdout' or 'stderr', not {target!r}")
            self.stream_name: Optional[str] = target
            self.fixed_stream: Optional[TextIO] = None
            self.fd = 1 if target == "stdout" else 2
        else:
            self.stream_name = None
            self.fixed_stream = target
            self.fd = -1

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:  # noqa: BLE001 - a bad record (format args) still says something
            level = level_name(record.levelno).ljust(7)
            line = f"{level}| (unformattable log record: {record.msg!r})\n"
            try:
                line = REGISTRY.mask(line)
            except Exception:  # noqa: BLE001
                return
        self._write(line)

    def _write(self, line: str) -> None:
        stream = self.fixed_stream
        if stream is None and self.stream_name is not None:
            stream = getattr(sys, self.stream_name, None)
        if stream is not None:
            try:
                stream.write(line)
                stream.flush()
                return
            except Exception:  # noqa: BLE001 - closed, broken pipe, replaced by something odd
                pass
        if self.fd < 0:
            return
        try:
            data = line.encode("utf-8", "replace")
            while data:
                written = os.write(self.fd, data)
                data = data[written:]
        except Exception:  # noqa: BLE001 - nowhere left to write: drop the line
            pass

    def flush(self) -> None:
        stream = self.fixed_stream
        if stream is None and self.stream_name is not None:
            stream = getattr(sys, self.stream_name, None)
        try:
            if stream is not None:
                stream.flush()
        except Exception:  # noqa: BLE001 - logging.shutdown() at exit must not raise either
            pass

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        """Never raise, never write to a stderr that may be closed."""


def _apply_levels(sdk: int, handler: int) -> None:
    # NOTSET means no logs at all (runpod), not logging's "inherit".
    logger().setLevel(sdk if sdk != logging.NOTSET else SILENT)
    logging.getLogger(HANDLER_LOGGER_NAME).setLevel(
        handler if handler != logging.NOTSET else SILENT
    )


def set_levels(level: int, *, chosen_by_user: bool = False) -> None:
    """Set the SDK's and the handler's level together (``set_level``, the flags)."""
    _apply_levels(level, level)
    if chosen_by_user:
        setattr(logger(), _USER_LEVEL_MARK, True)


def setup_logging(config: Config, stream: Optional[TextIO] = None) -> logging.Handler:
    """Install our one handler on the ``wavespeed`` logger (replacing a previous one).

    Lines go to ``stream`` when given, else stderr in local test mode and
    stdout otherwise. The API key becomes a secret to mask everywhere.
    """
    logging.addLevelName(TRACE, "TRACE")
    REGISTRY.set_api_key(config.api_key)
    base = logger()
    for old in [h for h in base.handlers if getattr(h, "_wavespeed", False)]:
        base.removeHandler(old)
    handler = LineHandler(
        stream if stream is not None else ("stderr" if config.mode == "test" else "stdout")
    )
    handler.setFormatter(LineFormatter(config.json_logs, config.api_key))
    handler._wavespeed = True  # type: ignore[attr-defined]
    base.addHandler(handler)
    explicit = config.handler_log_level is not None
    if explicit or not getattr(base, _USER_LEVEL_MARK, False):
        handler_level = config.handler_log_level if explicit else logging.DEBUG
        _apply_levels(config.log_level, handler_level)  # type: ignore[arg-type]
    base.propagate = False
    return handler


# Guards the one-time provisional handler below (a lock holds no state of ours).
_FALLBACK_LOCK = threading.Lock()


def _early_target(environ: Mapping[str, str], argv: Sequence[str]) -> str:
    """Where lines logged before ``start()`` go: stderr when this will be a local test run."""
    if "--test_input" in argv or any(a.startswith("--test_input=") for a in argv):
        return "stderr"
    serving = any(a in ("--rp_serve_api", "--waverless_serve_api") for a in argv) or any(
        environ.get(n) not in (None, "", "0")
        for n in ("RUNPOD_REALTIME_PORT", "WAVERLESS_REALTIME_PORT")
    )
    worker = bool(environ.get("RUNPOD_WEBHOOK_GET_JOB") or environ.get("WAVERLESS_WEBHOOK_GET_JOB"))
    return "stdout" if serving or worker else "stderr"


def _early_level(environ: Mapping[str, str]) -> Optional[int]:
    for name in ("RUNPOD_LOG_LEVEL", "RUNPOD_DEBUG_LEVEL", "WAVERLESS_LOG_LEVEL"):
        value = environ.get(name)
        if value:
            # A bad value is start()'s to report, with the variable named.
            return LOG_LEVELS.get(value.strip().upper())
    return None


def ensure_handler() -> None:
    """Give the ``wavespeed`` logger a provisional handler if nothing configured one yet.

    A handler logging at import time (``log.info("loading model")``) runs
    before ``start()``; without this its line would be lost. ``start()``'s
    ``setup_logging`` replaces it.
    """
    base = logger()
    if base.handlers:
        return
    with _FALLBACK_LOCK:
        if base.handlers:
            return
        environ = os.environ
        endpoint = environ.get("RUNPOD_ENDPOINT_ID") or environ.get("WAVERLESS_ENDPOINT_ID")
        handler = LineHandler(_early_target(environ, sys.argv[1:]))
        handler.setFormatter(LineFormatter(bool(endpoint)))
        handler._wavespeed = True  # type: ignore[attr-defined]
        logging.addLevelName(TRACE, "TRACE")
        if not getattr(base, _USER_LEVEL_MARK, False):
            level = _early_level(environ)
            if level is not None:
                _apply_levels(level, level)
            else:
                if base.level == logging.NOTSET:
                    base.setLevel(logging.INFO)
                handler_logger = logging.getLogger(HANDLER_LOGGER_NAME)
                if handler_logger.level == logging.NOTSET:
                    handler_logger.setLevel(logging.DEBUG)
        base.addHandler(handler)
        base.propagate = False


# -- the handler's logger -------------------------------------------------------------

LevelSpec = Union[str, int]

_NAMED: dict[str, int] = dict(LOG_LEVELS, TIP=logging.INFO)


def level_number(level: LevelSpec) -> int:
    """A level name (runpod's, ``"WARNING"``, ``"TIP"``) or a logging number."""
    if isinstance(level, bool):
        raise ValueError(f"Invalid debug level: {level}")
    if isinstance(level, int):
        if level < 0:
            raise ValueError(f"Invalid debug level: {level}")
        return int(level)
    if isinstance(level, str):
        number = _NAMED.get(level.strip().upper())
        if number is not None:
            return number
    raise ValueError(f"Invalid debug level: {level}")


class JobLogger:
    """``serverless.log``: runpod's ``RunPodLogger`` surface on standard logging.

    ``log.info("message", job_id)``, ``job_id=`` or ``request_id=``; without
    an id, the current job's id is used. Every method goes through
    ``log(message, level, job_id)``, so a subclass overriding ``log`` sees
    every line. Lines are emitted on the ``wavespeed.handler`` logger.
    """

    def __init__(self, name: str = "handler") -> None:
        self._name = name

    # -- levels --

    @property
    def level(self) -> str:
        """The current level of the handler's lines, by name (``"DEBUG"``, ...)."""
        return level_name(logging.getLogger(f"{LOGGER_NAME}.{self._name}").getEffectiveLevel())

    @level.setter
    def level(self, new_level: LevelSpec) -> None:
        set_levels(self._level_for(new_level), chosen_by_user=True)

    def _level_for(self, level: LevelSpec) -> int:
        """How this logger reads a level given to ``set_level``.

        runpod's logger reads ints differently.
        """
        return level_number(level)

    def set_level(self, new_level: LevelSpec) -> None:
        """Set the level of every wavespeed line (the handler's and the SDK's)."""
        number = self._level_for(new_level)
        ensure_handler()
        set_levels(number, chosen_by_user=True)
        self.info(f"Log level set to {level_name(number)}")

    # -- lines --

    def log(
        self, message: Any, message_level: LevelSpec = "INFO", job_id: Optional[str] = None
    ) -> None:
        """Log ``message`` at a level given by name (``"WARN"``, ``"TIP"``, ...) or number."""
        label = message_level.strip().upper() if isinstance(message_level, str) else None
        self._emit(level_number(message_level), message, job_id, "TIP" if label == "TIP" else None)

    def _emit(
        self, level: int, message: Any, job_id: Optional[str], label: Optional[str] = None
    ) -> None:
        ensure_handler()
        target = logging.getLogger(f"{LOGGER_NAME}.{self._name}")
        if label == "TIP":
            # runpod shows tips at every level but NOTSET.
            effective = target.getEffectiveLevel()
            if effective > logging.CRITICAL:
                return
            level = max(level, effective)
        target.log(level, "%s", message, extra={"job_id": job_id, "level_name": label})

    def trace(
        self, message: Any, job_id: Optional[str] = None, *, request_id: Optional[str] = None
    ) -> None:
        self.log(message, "TRACE", job_id or request_id)

    def debug(
        self, message: Any, job_id: Optional[str] = None, *, request_id: Optional[str] = None
    ) -> None:
        self.log(message, "DEBUG", job_id or request_id)

    def info(
        self, message: Any, job_id: Optional[str] = None, *, request_id: Optional[str] = None
    ) -> None:
        self.log(message, "INFO", job_id or request_id)

    def warn(
        self, message: Any, job_id: Optional[str] = None, *, request_id: Optional[str] = None
    ) -> None:
        self.log(message, "WARN", job_id or request_id)

    def warning(
        self, message: Any, job_id: Optional[str] = None, *, request_id: Optional[str] = None
    ) -> None:
        self.log(message, "WARN", job_id or request_id)

    def error(
        self, message: Any, job_id: Optional[str] = None, *, request_id: Optional[str] = None
    ) -> None:
        self.log(message, "ERROR", job_id or request_id)

    def tip(self, message: Any) -> None:
        """A line shown at every level but NOTSET, labelled ``TIP``."""
        self.log(message, "TIP")

    def secret(self, secret_name: str, secret: Any) -> None:
        """Register ``secret`` for masking everywhere, and log that it is set.

        The line shows only its first and last characters, as runpod's does.
        """
        text = str(secret)
        REGISTRY.add(text)
        shown = text[0] + "*" * (len(text) - 2) + text[-1] if len(text) > 2 else "*" * len(text)
        self.info(f"{secret_name}: {shown}")


_Single = TypeVar("_Single", bound="SingletonJobLogger")


class SingletonJobLogger(JobLogger):
    """A ``JobLogger`` with one instance per class: ``Cls() is Cls()``.

    runpod's ``RunPodLogger`` and wavespeed 1.0's ``WaverlessLogger`` are
    built this way. A subclass gets its own instance, so a subclass's
    ``log`` override is the one its callers reach.
    """

    _instances: ClassVar[dict[type, "SingletonJobLogger"]] = {}
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()

    def __new__(cls: type[_Single]) -> _Single:
        instance = SingletonJobLogger._instances.get(cls)
        if instance is None:
            with SingletonJobLogger._instances_lock:
                instance = SingletonJobLogger._instances.get(cls)
                if instance is None:
                    instance = super().__new__(cls)
                    JobLogger.__init__(instance, "handler")
                    SingletonJobLogger._instances[cls] = instance
        return cast(_Single, instance)

    def __init__(self) -> None:
        # The state is set once, in __new__: Cls() again changes nothing.
        pass
