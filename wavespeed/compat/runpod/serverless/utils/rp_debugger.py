"""``runpod.serverless.utils.rp_debugger``: ``FunctionTimer``, ``LineTimer``, ``Checkpoints``.

Timings are collected per job and appear in the job's ``debugger`` output
when the worker runs with ``--rp_debugger``. Outside a job, or without the
flag, the timers do nothing.
"""

from typing import Any, Dict, List

from wavespeed.serverless.utils.debugger import FunctionTimer, LineTimer, current_timings

__all__ = ["FunctionTimer", "LineTimer", "Checkpoints", "get_debugger_output", "clear_debugger_output"]


class Checkpoints:
    """runpod's named start/stop checkpoints, recorded in the current job's timings."""

    def add(self, name: str) -> None:
        """Kept for runpod code; a checkpoint needs no declaration here."""

    def start(self, name: str) -> None:
        timings = current_timings()
        if timings is not None:
            timings.begin(name)

    def stop(self, name: str) -> None:
        timings = current_timings()
        if timings is not None:
            timings.end(name)

    def get_checkpoints(self) -> List[Dict[str, Any]]:
        timings = current_timings()
        return timings.entries() if timings is not None else []

    def clear(self) -> None:
        timings = current_timings()
        if timings is not None:
            timings.clear()


def get_debugger_output() -> Dict[str, Any]:
    """The current job's timings and system info (empty outside a debugged job)."""
    timings = current_timings()
    if timings is None:
        return {"timestamps": [], "system_info": {}}
    return timings.report()


def clear_debugger_output() -> None:
    Checkpoints().clear()
