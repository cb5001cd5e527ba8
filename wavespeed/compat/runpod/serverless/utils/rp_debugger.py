"""``runpod.serverless.utils.rp_debugger``: ``FunctionTimer``, ``LineTimer``, ``Checkpoints``.

Timings are collected per job and appear in the job's output under
``"rp_debugger"`` when the worker runs with ``--rp_debugger``. Outside a
job, or without the flag, the timers only call through.

``Checkpoints()`` is one object, as in runpod. Inside a job it works on that
job's book (so concurrent jobs never mix and every job starts empty);
outside any job, on a book of its own. ``add`` of a known name, and
``start``/``stop`` of an unknown one or ``stop`` before ``start``, raise
``KeyError`` with runpod's messages.
"""

import threading
from typing import Any, Optional

from wavespeed.serverless.utils.debugger import FunctionTimer, LineTimer, Timings, current_timings

__all__ = [
    "FunctionTimer",
    "LineTimer",
    "Checkpoints",
    "get_debugger_output",
    "clear_debugger_output",
]


class Checkpoints:
    """runpod's named start/stop checkpoints, recorded in the current job's timings."""

    _instance: Optional["Checkpoints"] = None
    _instance_lock = threading.Lock()
    _outside: Timings

    def __new__(cls) -> "Checkpoints":
        instance = Checkpoints._instance
        if instance is None:
            with Checkpoints._instance_lock:
                instance = Checkpoints._instance
                if instance is None:
                    instance = super().__new__(cls)
                    # The book used outside any job (at import time, in tests).
                    instance._outside = Timings(enabled=False)
                    Checkpoints._instance = instance
        return instance

    def _book(self) -> Timings:
        timings = current_timings()
        return timings if timings is not None else self._outside

    def add(self, name: str) -> None:
        self._book().add(name)

    def start(self, name: str) -> None:
        self._book().start(name)

    def stop(self, name: str) -> None:
        self._book().stop(name)

    def get_checkpoints(self) -> list[dict[str, Any]]:
        """The finished checkpoints and timed spans.

        Each has ``name``, ``start_utc``, ``stop_utc`` and ``duration_ms``.
        """
        return self._book().entries()

    def clear(self) -> None:
        self._book().clear()


def get_debugger_output() -> dict[str, Any]:
    """``{"system_info": {...}, "timestamps": [...]}`` for the current job; clears its book."""
    book = Checkpoints()._book()
    report = book.report()
    book.clear()
    return report


def clear_debugger_output() -> None:
    Checkpoints().clear()
