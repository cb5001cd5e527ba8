"""``wavespeed.serverless.modules.progress``: wavespeed 1.0's progress functions.

Both send through ``wavespeed.serverless.progress_update`` (ordered per
job, on the worker's HTTP pool, never after the job's result) and return
True when the update was taken, False when the job is not running here
(1.0 returned False when it could not send).
"""

from typing import Any

from ..progress import (
    _target,  # the one lookup rule: the job itself, the current job, or its id
    progress_update as _progress_update,
)

__all__ = ["progress_update", "async_progress_update"]


def progress_update(job: Any, progress: Any) -> bool:
    """Post ``{"status": "IN_PROGRESS", "output": progress}`` for a running job."""
    try:
        known = _target(job) is not None
    except Exception:  # noqa: BLE001 - never raise into the handler; _progress_update logs why
        known = False
    _progress_update(job, progress)
    return known


async def async_progress_update(session: Any, job: Any, progress: Any) -> bool:
    """The same, from async code; ``session`` (1.0's aiohttp session) is not needed and ignored."""
    return progress_update(job, progress)
