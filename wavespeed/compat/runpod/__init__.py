"""``runpod``, as wavespeed's compatibility layer answers it.

The worker side of runpod-python (``runpod.serverless`` and its utils)
runs on ``wavespeed.serverless``. The client side (``runpod.Endpoint``,
``runpod.create_pod``, ...) is not provided: install runpod-python for it.
"""

import os
from typing import Any

from . import serverless
from .serverless.modules.rp_logger import RunPodLogger
from .version import __version__

__all__ = ["serverless", "RunPodLogger", "__version__", "api_key", "profile", "SSH_KEY_PATH"]

#: Set by users who also call runpod's API; kept only so the assignment works.
api_key = None
profile = "default"
SSH_KEY_PATH = os.path.expanduser("~/.runpod/ssh")

# Names of runpod-python's client API, which this layer does not implement.
_CLIENT_API = frozenset(
    {
        "Endpoint",
        "AsyncioEndpoint",
        "AsyncioJob",
        "create_container_registry_auth",
        "create_endpoint",
        "create_pod",
        "create_template",
        "delete_container_registry_auth",
        "get_endpoints",
        "get_gpu",
        "get_gpus",
        "get_pod",
        "get_pods",
        "get_user",
        "resume_pod",
        "stop_pod",
        "terminate_pod",
        "update_container_registry_auth",
        "update_endpoint_template",
        "update_user_settings",
        "check_credentials",
        "get_credentials",
        "set_credentials",
    }
)


def __getattr__(name: str) -> Any:
    if name == "endpoint_url_base":
        return os.environ.get("RUNPOD_ENDPOINT_BASE_URL", "https://api.runpod.ai/v2")
    if name in _CLIENT_API:
        raise AttributeError(
            f"runpod.{name} is part of runpod-python's client API, which wavespeed's "
            "compatibility layer does not provide; run with the installed runpod "
            "(python -m wavespeed.run --runpod=installed ...) or use its client separately"
        )
    raise AttributeError(f"module 'runpod' has no attribute {name!r}")
