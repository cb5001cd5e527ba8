"""Helpers for handlers: input validation, downloads, uploads, cleanup, GPU probe, timers.

    from wavespeed.serverless.utils import validate, download_file, upload_image

=====================================  ==============================================
``validate(input, schema)``            ``{"validated_input": ...}`` or ``{"errors": [...]}``
``download_file(url)``                 one URL into ``./job_files`` (zips extracted)
``download_files_from_urls(id, urls)`` several URLs into ``./jobs/<id>/downloaded_files``
``upload_image(job_id, path)``         S3 upload, presigned URL (local copy without a bucket)
``upload_files(job_id, paths)``        several, in parallel
``upload_file_to_bucket(...)``         a file under a name/prefix of your choice
``upload_in_memory_object(...)``       bytes
``bucket_upload(job_id, paths, creds)`` to an explicit bucket
``clean(folders)``                     remove the job folders the helpers wrote
``cuda_available()``                   a GPU is visible (no torch import)
``FunctionTimer`` / ``LineTimer``      timings shown with ``--rp_debugger``
=====================================  ==============================================

Each name is imported on first use, so ``import wavespeed.serverless.utils``
costs nothing and S3 support (boto3) is only needed by the upload calls.
"""

import importlib
from typing import Any, Dict, List, Tuple

# name -> (submodule, attribute)
_EXPORTS: Dict[str, Tuple[str, str]] = {
    "validate": ("validation", "validate"),
    "download_file": ("download", "download_file"),
    "download_files_from_urls": ("download", "download_files_from_urls"),
    "DownloadError": ("download", "DownloadError"),
    "DownloadRefused": ("download", "DownloadRefused"),
    "DownloadTooLarge": ("download", "DownloadTooLarge"),
    "UnsafeArchive": ("download", "UnsafeArchive"),
    "upload_image": ("upload", "upload_image"),
    "upload_files": ("upload", "upload_files"),
    "upload_file_to_bucket": ("upload", "upload_file_to_bucket"),
    "upload_in_memory_object": ("upload", "upload_in_memory_object"),
    "bucket_upload": ("upload", "bucket_upload"),
    "MissingExtra": ("upload", "MissingExtra"),
    "clean": ("cleanup", "clean"),
    "cuda_available": ("cuda", "is_available"),
    "FunctionTimer": ("debugger", "FunctionTimer"),
    "LineTimer": ("debugger", "LineTimer"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_EXPORTS))
