"""``runpod.serverless.modules``: the runpod module paths workers import from."""

import importlib
from typing import Any

_SUBMODULES = ("rp_logger", "rp_http", "rp_progress", "rp_fitness")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
