"""``wavespeed.serverless.modules.logger``: wavespeed 1.0's ``WaverlessLogger`` and ``LogLevel``.

The 1.0 surface on wavespeed's logging: one instance per class,
``trace/debug/info/warn/error(message, job_id=None)``, ``log(message,
level=LogLevel.INFO, job_id=None)``, ``set_level(name or LogLevel)``. Lines
are runpod's format (see ``wavespeed.serverless.logs``), not 1.0's
timestamped one, and go to stdout (stderr in local test mode).
"""

from enum import IntEnum
from typing import Any, Optional, Union

from ..logs import JobLogger, SingletonJobLogger, set_levels

__all__ = ["LogLevel", "WaverlessLogger"]  # and `log`, made on first use (see __getattr__)


class LogLevel(IntEnum):
    """wavespeed 1.0's levels; the numbers are the standard logging ones."""

    NOTSET = 0
    TRACE = 5
    DEBUG = 10
    INFO = 20
    WARN = 30
    ERROR = 40


_BY_NAME = {
    "NOTSET": LogLevel.NOTSET,
    "TRACE": LogLevel.TRACE,
    "DEBUG": LogLevel.DEBUG,
    "INFO": LogLevel.INFO,
    "WARN": LogLevel.WARN,
    "WARNING": LogLevel.WARN,
    "ERROR": LogLevel.ERROR,
}


class WaverlessLogger(SingletonJobLogger):
    """wavespeed 1.0's logger: a single instance per class, every line through ``log()``."""

    def _level_for(self, level: Union[str, int]) -> int:
        # 1.0's rule: an unknown name means INFO, never an error.
        if isinstance(level, str):
            return int(_BY_NAME.get(level.strip().upper(), LogLevel.INFO))
        return int(level)

    def set_level(self, level: Union[str, int]) -> None:
        """Set the level of every wavespeed line (a name or a ``LogLevel``)."""
        set_levels(self._level_for(level), chosen_by_user=True)

    def log(
        self, message: Any, level: Union[str, int] = LogLevel.INFO, job_id: Optional[str] = None
    ) -> None:
        """Log at ``level`` (a ``LogLevel`` or a name)."""
        JobLogger.log(self, message, level if isinstance(level, str) else int(level), job_id)


def __getattr__(name: str) -> Any:
    # `log` is made on first use: importing this module creates nothing.
    if name == "log":
        return WaverlessLogger()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
