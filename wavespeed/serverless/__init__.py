"""wavespeed.serverless: run a handler as a RunPod or Waverless worker.

    import wavespeed.serverless as serverless

    def handler(job):
        return {"text": job["input"]["prompt"].upper()}

    serverless.start({"handler": handler})

Importing this module is cheap and inert: it reads no environment, starts no
thread, configures no logging and imports neither requests, flask nor
waitress. All of that happens inside ``start()``.
"""

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from .errors import ConfigError, JobCancelled, OutputNotSerializable, WavespeedError
from .fitness import register_fitness_check
from .logs import JobLogger
from .progress import progress_update

if TYPE_CHECKING:
    from .config import Config

__all__ = [
    "start",
    "progress_update",
    "register_fitness_check",
    "log",
    "Config",
    "ConfigError",
    "JobCancelled",
    "OutputNotSerializable",
    "WavespeedError",
]

log = JobLogger()  # stateless: every call goes through the standard logging module


def __getattr__(name: str) -> Any:
    if name == "Config":  # keep dataclasses/uuid off the import path until needed
        from .config import Config

        return Config
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def start(
    config: Union[Mapping[str, Any], Callable[..., Any]],
    *,
    argv: Optional[Sequence[str]] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> None:
    """Run the handler; blocks until the worker stops.

    ``config`` is ``{"handler": fn, ...}`` (see the README for the keys) or
    the handler itself. ``argv`` and ``environ`` default to ``sys.argv[1:]``
    and ``os.environ``; tests pass their own.

    With ``RUNPOD_WEBHOOK_GET_JOB`` or ``WAVERLESS_WEBHOOK_GET_JOB`` set, this
    runs the worker until SIGTERM/SIGINT or ``refresh_worker``, then returns.
    Otherwise it runs one local test job and exits the process (0 or 1), or
    serves the local HTTP API with ``--rp_serve_api``. A bad setting raises
    ``ConfigError`` naming the variable, flag or key.
    """
    import os
    import sys

    from .config import Config
    from .logs import setup_logging

    user = dict(config) if isinstance(config, Mapping) else {"handler": config}
    settings = Config.from_env(
        os.environ if environ is None else environ,
        sys.argv[1:] if argv is None else argv,
        user,
    )
    setup_logging(settings)

    if settings.mode == "test":
        from .local import run_local

        sys.exit(run_local(settings))
    if settings.api_reload and settings.mode != "api":
        from .logs import logger

        logger("api").warning(
            "--rp_api_reload applies to the local API only (--rp_serve_api); ignored"
        )
    if settings.mode == "api" and settings.api_reload:
        from .reload import serve_with_reload

        serve_with_reload(settings)
        return
    if settings.mode in ("api", "realtime"):
        from .devserver import serve

        serve(settings)
        return
    _run_worker(settings)


def _run_worker(settings: "Config") -> None:
    import os
    import sys

    from .fitness import run_fitness_checks
    from .signals import SignalGuard
    from .worker import Worker

    if not run_fitness_checks(settings):
        sys.exit(1)  # reported unhealthy on the ping URL; no job was taken
    worker = Worker(settings)
    with SignalGuard(worker) as guard:
        worker.start()
        # The main thread supervises: a dead thread role is noticed within a second.
        while not worker.wait_stop_requested(0.5):
            worker.supervise()
        clean = worker.stop()
    code = guard.exit_code or worker.exit_code
    if not clean:
        # Handler threads are still running after the drain deadline; their
        # jobs were reported FAILED. Non-daemon pool threads would keep the
        # process alive, so leave now.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a handler may have closed it
                pass
        os._exit(code)
    if code:
        sys.exit(code)
