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
from typing import Any, Optional, Union

from wavespeed.serverless.config import LOG_LEVELS
from wavespeed.serverless.logs import LOGGER_NAME
from wavespeed.serverless.logs import JobLogger, ensure_handler

__all__ = ["RunPodLogger", "LOG_LEVELS_NAMES"]

LOG_LEVELS_NAMES = ["NOTSET", "TRACE", "DEBUG", "INFO", "WARN", "ERROR"]


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


class RunPodLogger(JobLogger):
    """runpod's logger surface; every instance logs to the same place."""

    def __init__(self) -> None:
        super().__init__("handler")

    def log(self, message: Any, message_level: str = "INFO", job_id: Optional[str] = None) -> None:
        """Log at a level given by name (``"INFO"``, ``"WARN"``, ``"TIP"``, ...)."""
        self._log(_level_number(message_level), message, job_id)

    def set_level(self, new_level: Union[str, int]) -> None:
        """Change the level of every wavespeed log line (a name, or runpod's index 0-5)."""
        number = _level_number(new_level)
        ensure_handler()
        base = logging.getLogger(LOGGER_NAME)
        # NOTSET means silence, as in setup_logging.
        base.setLevel(number if number != logging.NOTSET else logging.CRITICAL + 1)

    def secret(self, secret_name: str, secret: Any) -> None:
        """Log that a secret is set, showing only its first and last characters."""
        text = str(secret)
        shown = text[0] + "*" * (len(text) - 2) + text[-1] if len(text) > 2 else "*" * len(text)
        self.info(f"{secret_name}: {shown}")

    def tip(self, message: Any) -> None:
        self._log(logging.INFO, message)
