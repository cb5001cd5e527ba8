"""``RunPodLogger`` on wavespeed's logging, with runpod's behaviour.

- One instance: ``RunPodLogger() is RunPodLogger()`` (a subclass has its
  own single instance, so its ``log`` override is the one that runs).
- ``.level`` names the current level (``"DEBUG"`` by default, as in
  runpod); ``set_level`` takes a name or runpod's index (0 = NOTSET ...
  5 = ERROR), sets the level of every wavespeed line and says so.
- ``debug/info/warn/error/trace(message, request_id)`` and ``tip`` all go
  through ``log(message, message_level, job_id)``; ``job_id=`` and
  ``request_id=`` are accepted too. Without an id, the running job's is used.
- ``secret(name, value)`` logs ``name: v***e`` and registers the value: it
  is masked in every log line and error payload from then on.

Lines are runpod's: ``INFO   | job-1 | message`` on stdout (stderr in
local test mode), JSON lines when an endpoint id is set. Before ``start()``
has configured logging (a model loading at import time), the first line
installs a provisional handler so it is not lost.
"""

from typing import Any, Optional, Union

from wavespeed.serverless.logs import (
    MAX_MESSAGE_LENGTH,
    JobLogger,
    SingletonJobLogger,
    level_number,
)

__all__ = ["RunPodLogger", "LOG_LEVELS", "MAX_MESSAGE_LENGTH"]

#: runpod's level names, in the order its ``set_level(int)`` indexes them.
LOG_LEVELS = ["NOTSET", "TRACE", "DEBUG", "INFO", "WARN", "ERROR"]


def _validate_log_level(log_level: Union[str, int]) -> str:
    """runpod's rule: a name from LOG_LEVELS (any case) or an index into it."""
    if isinstance(log_level, str):
        name = log_level.upper()
        if name not in LOG_LEVELS:
            raise ValueError(f"Invalid debug level: {name}")
        return name
    if isinstance(log_level, int) and not isinstance(log_level, bool):
        if log_level < 0 or log_level >= len(LOG_LEVELS):
            raise ValueError(f"Invalid debug level: {log_level}")
        return LOG_LEVELS[log_level]
    raise ValueError(f"Invalid debug level: {log_level}")


class RunPodLogger(SingletonJobLogger):
    """runpod's logger: a single instance per class, every line through ``log()``."""

    def _level_for(self, level: Union[str, int]) -> int:
        return level_number(_validate_log_level(level))

    def log(
        self, message: Any, message_level: Union[str, int] = "INFO", job_id: Optional[str] = None
    ) -> None:
        """Log at a level given by name: ``"TRACE"``, ``"DEBUG"``, ``"INFO"``, ``"WARN"``,
        ``"ERROR"`` or ``"TIP"`` (shown at every level but NOTSET); a number is refused."""
        if message_level != "TIP" and message_level not in LOG_LEVELS:
            raise ValueError(f"{message_level!r} is not in list")
        JobLogger.log(self, message, message_level, job_id)
