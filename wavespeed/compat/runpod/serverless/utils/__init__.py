"""``runpod.serverless.utils``: runpod's helper modules, on wavespeed.serverless.utils."""

import importlib
from typing import Any

_SUBMODULES = (
    "rp_validator",
    "rp_upload",
    "rp_download",
    "rp_cleanup",
    "rp_cuda",
    "rp_debugger",
    "rp_model_cache",
    "rp_ssrf",
    "rp_volume_cache",
)

_EXPORTS: dict[str, tuple[str, str]] = {
    "download_files_from_urls": ("rp_download", "download_files_from_urls"),
    "upload_file_to_bucket": ("rp_upload", "upload_file_to_bucket"),
    "upload_in_memory_object": ("rp_upload", "upload_in_memory_object"),
    "VolumeCache": ("rp_volume_cache", "VolumeCache"),
    "validate": ("rp_validator", "validate"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _EXPORTS:
        module, attribute = _EXPORTS[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES) | set(_EXPORTS))
