"""``runpod.serverless.modules.rp_http``: the job-done and stream URLs.

``JOB_DONE_URL`` and ``JOB_STREAM_URL`` read as in runpod (the platform's
template with the pod id filled in). A worker may assign either before
``start()``; the assigned value is then the template the worker posts to
(``$ID`` becomes the job id).
"""

import os
from collections.abc import Mapping
from typing import Any, Optional

__all__ = ["environ_with_overrides"]  # JOB_DONE_URL and JOB_STREAM_URL are read lazily

# attribute -> (RunPod variable, Waverless variable, runpod's placeholder when unset)
_URLS = {
    "JOB_DONE_URL": ("RUNPOD_WEBHOOK_POST_OUTPUT", "WAVERLESS_WEBHOOK_POST_OUTPUT", "JOB_DONE_URL"),
    "JOB_STREAM_URL": (
        "RUNPOD_WEBHOOK_POST_STREAM",
        "WAVERLESS_WEBHOOK_POST_STREAM",
        "JOB_STREAM_URL",
    ),
}


def _platform_variable(attribute: str, environ: Mapping[str, str]) -> str:
    from wavespeed.serverless.config import detect_platform

    runpod_name, waverless_name, _unset = _URLS[attribute]
    return waverless_name if detect_platform(environ) == "waverless" else runpod_name


def _current(attribute: str) -> str:
    name = _platform_variable(attribute, os.environ)
    template = os.environ.get(name)
    if not template:
        return _URLS[attribute][2]
    from wavespeed.serverless.config import fill_pod, resolve_worker_id

    return fill_pod(template, resolve_worker_id(os.environ, None))


def __getattr__(name: str) -> Any:
    # Read when asked, not at import: a value assigned by the worker shadows this.
    if name in _URLS:
        return _current(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def environ_with_overrides(environ: Mapping[str, str]) -> Optional[dict[str, str]]:
    """``environ`` with the URLs a worker assigned on this module, or None when it assigned none."""
    assigned = {name: globals()[name] for name in _URLS if name in globals()}
    if not assigned:
        return None
    changed = dict(environ)
    for attribute, value in assigned.items():
        if value:
            changed[_platform_variable(attribute, environ)] = str(value)
    return changed
