"""``wavespeed.serverless.modules``: the module path wavespeed 1.0 workers import from.

Code written for wavespeed 1.0.x keeps working::

    from wavespeed.serverless.modules import progress_update, log, LogLevel

``progress_update``/``async_progress_update`` send through this package's
worker (ordered, never after the result) and return True when the update
was accepted; ``log`` is a ``WaverlessLogger`` on wavespeed's logging.
Names are imported on first use.
"""

import importlib
from typing import Any

_EXPORTS: dict[str, tuple[str, str]] = {
    "progress_update": ("progress", "progress_update"),
    "async_progress_update": ("progress", "async_progress_update"),
    "log": ("logger", "log"),
    "LogLevel": ("logger", "LogLevel"),
    "WaverlessLogger": ("logger", "WaverlessLogger"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in ("logger", "progress"):
        return importlib.import_module(f"{__name__}.{name}")
    try:
        module_name, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    return getattr(importlib.import_module(f"{__name__}.{module_name}"), attribute)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
