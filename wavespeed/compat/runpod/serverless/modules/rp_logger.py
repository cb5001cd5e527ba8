"""``RunPodLogger`` on wavespeed's logging.

``info/debug/warn/error/trace(message, job_id)`` with the job id
positional, as ``job_id=`` or as ``request_id=``; without one, the id of
the job running in this thread is used. Lines go to stderr as wavespeed's
text lines (``INFO    | job-1 | message``), or JSON lines on a platform.

Before ``start()`` has configured logging (a model loading at import time),
the first call installs a plain stderr handler so the line is not lost;
``start()`` replaces it.
"""

import logging
import os
import sys
import threading
from typing import Any, Optional, Union

from wavespeed.serverless.config import LOG_LEVELS, TRACE
from wavespeed.serverless.logs import LOGGER_NAME
from wavespeed.serverless.logs import JobLogger, LineFormatter

__all__ = ["RunPodLogger", "LOG_LEVELS_NAMES"]

LOG_LEVELS_NAMES = ["NOTSET", "TRACE", "DEBUG", "INFO", "WARN", "ERROR"]

_BOOTSTRAP_LOCK = threading.Lock()


def _level_number(level: Union[str, int]) -> int:
    """runpod's levels by name, or by their index in runpod's list (0 = NOTSET ... 5 = ERROR)."""
    if isinstance(level, bool):
        raise ValueError(f"Invalid debug level: {level}")
    if isinstance(level, int):
        if 0 <= level < len(LOG_LEVELS_NAMES):
            return LOG_LEVELS[LOG_LEVELS_NAMES[level]]
        raise ValueError(f"Invalid debug level: {level}")
    if isinstance(level, str):
        name = level.strip().upper()
        if name == "TIP":
            return logging.INFO
        if name in LOG_LEVELS:
            return LOG_LEVELS[name]
    raise ValueError(f"Invalid debug level: {level}")


def _ensure_output() -> None:
    """Give the ``wavespeed`` logger a handler if nothing will print its records yet."""
    base = logging.getLogger(LOGGER_NAME)
    if base.handlers or logging.getLogger().handlers:
        return
    with _BOOTSTRAP_LOCK:
        if base.handlers:
            return
        handler = logging.StreamHandler(sys.stderr)
        json_lines = bool(os.environ.get("RUNPOD_ENDPOINT_ID") or os.environ.get("WAVERLESS_ENDPOINT_ID"))
        handler.setFormatter(LineFormatter(json_lines, None))
        handler._wavespeed = True  # type: ignore[attr-defined]  # start() replaces it
        logging.addLevelName(TRACE, "TRACE")
        level = os.environ.get("RUNPOD_LOG_LEVEL") or os.environ.get("RUNPOD_DEBUG_LEVEL") or "INFO"
        try:
            base.setLevel(_level_number(level))
        except ValueError:
            base.setLevel(logging.INFO)
        base.addHandler(handler)
        base.propagate = False


class RunPodLogger(JobLogger):
    """runpod's logger surface; every instance logs to the same place."""

    def __init__(self) -> None:
        super().__init__("handler")

    def _log(
        self,
        level: int,
        message: Any,
        job_id: Optional[str] = None,
        request_id: Optional[str] = None,
    ) -> None:
        _ensure_output()
        super()._log(level, message, job_id, request_id)

    def log(self, message: Any, message_level: str = "INFO", job_id: Optional[str] = None) -> None:
        """Log at a level given by name (``"INFO"``, ``"WARN"``, ``"TIP"``, ...)."""
        self._log(_level_number(message_level), message, job_id)

    def set_level(self, new_level: Union[str, int]) -> None:
        """Change the level of every wavespeed log line (a name, or runpod's index 0-5)."""
        number = _level_number(new_level)
        _ensure_output()
        base = logging.getLogger(LOGGER_NAME)
        base.setLevel(number)
        base.disabled = number == logging.NOTSET

    def secret(self, secret_name: str, secret: Any) -> None:
        """Log that a secret is set, showing only its first and last characters."""
        text = str(secret)
        shown = text[0] + "*" * (len(text) - 2) + text[-1] if len(text) > 2 else "*" * len(text)
        self.info(f"{secret_name}: {shown}")

    def tip(self, message: Any) -> None:
        self._log(logging.INFO, message)
