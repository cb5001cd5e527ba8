"""``runpod.serverless``: ``start``, ``progress_update``, ``register_fitness_check``,
``VolumeCache``, ``runpod_version`` (``"1.12.0"``) and ``log`` (the ``RunPodLogger``).

``start(config)`` runs ``wavespeed.serverless.start``: same config keys
(``handler``, ``concurrency_modifier``, ``return_aggregate_stream``,
``refresh_worker``; the legacy ``concurrency_controller`` is ignored with a
warning), same flags and environment. A ``JOB_DONE_URL`` assigned on
``runpod.serverless.modules.rp_http`` before ``start()`` is used as the
job-done URL template.
"""

import importlib
import os
from typing import Any

from wavespeed.serverless import progress_update
from wavespeed.serverless.fitness import register_fitness_check

from ..version import __version__ as runpod_version

__all__ = ["start", "progress_update", "register_fitness_check", "runpod_version", "VolumeCache"]

_SUBMODULES = ("utils", "modules")


def start(config: dict[str, Any]) -> None:
    """Start the worker (blocks; in local test mode it exits the process)."""
    from wavespeed.serverless import start as wavespeed_start

    from .modules import rp_http

    wavespeed_start(config, environ=rp_http.environ_with_overrides(os.environ))


def __getattr__(name: str) -> Any:
    # runpod makes runpod.serverless.utils reachable after `import runpod`;
    # import the subpackages on first use so `import runpod` stays cheap.
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name == "VolumeCache":
        from .utils.rp_volume_cache import VolumeCache

        return VolumeCache
    if name == "log":
        from .modules.rp_logger import RunPodLogger

        return RunPodLogger()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES) | {"VolumeCache", "log"})
