"""``progress_update(job, data)``: tell the platform how a job is going."""

import threading
import weakref
from typing import Any, Optional

from .job import Job, current_job
from .logs import logger

log = logger("progress")


class RunningJobs:
    """The jobs running in this process, by id (weak references only).

    runpod's ``progress_update(job, ...)`` takes any dict with the job's id,
    from any thread, so a copy such as ``{"id": job["id"]}`` passed to a
    thread the handler started must find its job. Engines register each job
    while it runs.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, weakref.ref[Job]] = {}

    def track(self, job: Job, running: bool) -> None:
        with self._lock:
            if running:
                self._jobs[job.id] = weakref.ref(job)
            else:
                ref = self._jobs.get(job.id)
                if ref is not None and ref() in (None, job):
                    del self._jobs[job.id]

    def find(self, job_id: Any) -> Optional[Job]:
        with self._lock:
            ref = self._jobs.get(str(job_id))
        return ref() if ref is not None else None


# The one process-wide registry (the fitness-check registry is the other):
# a job dict copy carries nothing but an id, and threads do not inherit
# context variables, so this lookup cannot be passed down.
_RUNNING = RunningJobs()


def running_jobs() -> RunningJobs:
    return _RUNNING


def _target(job: Any) -> Optional[Job]:
    if isinstance(job, Job) and job.channel is not None:
        return job
    job_id = job.get("id") if isinstance(job, dict) else job
    running = current_job.get()
    if running is not None and job_id in (None, running.id):
        return running
    if job_id is not None:
        return _RUNNING.find(job_id)
    return None


def progress_update(job: Any, progress: Any) -> None:
    """Post ``{"status": "IN_PROGRESS", "output": progress}`` for a running job.

    ``job`` is the job dict the handler received, or any dict with its
    ``id`` (a copy passed to another thread works too). Callable from any
    thread. Updates of one job are sent in order and never after its final
    result. It never raises into the handler: a failure is logged.
    """
    try:
        target = _target(job)
        if target is None or target.channel is None:
            job_id = job.get("id") if isinstance(job, dict) else job
            log.warning("progress_update: job %s is not running in this worker; dropped", job_id)
            return
        target.channel.send_progress(target, progress)
    except Exception:  # noqa: BLE001 - never raise into the handler
        log.exception("progress_update failed")
