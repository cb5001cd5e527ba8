"""``progress_update(job, data)``: tell the platform how a job is going."""

from typing import Any

from .job import current_job
from .logs import logger

log = logger("progress")


def progress_update(job: Any, progress: Any) -> None:
    """Post ``{"status": "IN_PROGRESS", "output": progress}`` for a running job.

    Callable from any thread, including threads the handler started (pass
    the job dict the handler received). Updates of one job are sent in
    order and never after its final result. It never raises into the
    handler: a failure is logged.
    """
    try:
        target = job
        channel = getattr(job, "channel", None)
        if channel is None:
            # A plain-dict copy of the job: use the job this thread runs.
            running = current_job.get()
            job_id = job.get("id") if isinstance(job, dict) else None
            if running is not None and job_id in (None, running.id):
                target, channel = running, running.channel
        if channel is None:
            job_id = job.get("id") if isinstance(job, dict) else job
            log.warning("progress_update: job %s is not running in this worker; dropped", job_id)
            return
        channel.send_progress(target, progress)
    except Exception:  # noqa: BLE001 - never raise into the handler
        log.exception("progress_update failed")
