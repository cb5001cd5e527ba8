"""Helpers for handlers: validation, downloads, uploads, a volume cache, cleanup, GPU probe, timers.

    from wavespeed.serverless.utils import validate, download_file, upload_image

======================================  ==============================================
``validate(input, schema)``             ``{"validated_input": ...}`` or ``{"errors": [...]}``
``download_file(url)``                  one URL into ``./job_files`` (zips extracted)
``download_files_from_urls(id, urls)``  several URLs into ``./jobs/<id>/downloaded_files``
``safe_get(url)``                       a streamed ``requests.Response`` under the download guard
``upload_image(job_id, path)``          S3 upload, presigned URL (local copy without a bucket)
``upload_files(job_id, paths)``         several, in parallel
``upload_in_memory_object(...)``        bytes (runpod's signature)
``bucket_upload(job_id, paths, creds)`` to an explicit bucket
``upload_file_to_bucket(...)``          wavespeed 1.0's: explicit endpoint and keys
``upload_file_to_bucket_or_local(...)`` the same, or a local copy without keys
``upload_bytes_to_bucket(...)``         bytes, wavespeed 1.0's signature
``download_file_from_bucket(...)``      an object to a local path
``create_boto_client(...)``             ``(s3 client, TransferConfig)``
``VolumeCache(dirs)``                   warm model folders through a network volume
``model_cache_path("org/model:rev")``   RunPod's model-cache path of a repository
``clean(folders)``                      remove the job folders the helpers wrote
``cuda_available()``                    a GPU is visible (no torch import)
``FunctionTimer`` / ``LineTimer``       timings shown with ``--rp_debugger``
======================================  ==============================================

The names and signatures are wavespeed 1.0's where 1.0 had the name
(``upload_file_to_bucket`` takes the file's location first and explicit
credentials); runpod's versions live in ``.upload`` and in the compatibility
layer's ``rp_upload``. Each name is imported on first use, so ``import
wavespeed.serverless.utils`` costs nothing and S3 support (boto3) is only
needed by the upload calls.
"""

import importlib
from typing import Any

# name -> (submodule, attribute)
_EXPORTS: dict[str, tuple[str, str]] = {
    "validate": ("validation", "validate"),
    "download_file": ("download", "download_file"),
    "download_files_from_urls": ("download", "download_files_from_urls"),
    "safe_get": ("download", "safe_get"),
    "DownloadError": ("download", "DownloadError"),
    "DownloadBlocked": ("download", "DownloadBlocked"),
    "DownloadRefused": ("download", "DownloadRefused"),
    "DownloadTooLarge": ("download", "DownloadTooLarge"),
    "UnsafeArchive": ("download", "UnsafeArchive"),
    "upload_image": ("upload", "upload_image"),
    "upload_files": ("upload", "upload_files"),
    "upload_in_memory_object": ("upload", "upload_in_memory_object"),
    "bucket_upload": ("upload", "bucket_upload"),
    "MissingExtra": ("upload", "MissingExtra"),
    "create_boto_client": ("boto3_utils", "create_boto_client"),
    "download_file_from_bucket": ("boto3_utils", "download_file_from_bucket"),
    "extract_region_from_url": ("boto3_utils", "extract_region_from_url"),
    "upload_bytes_to_bucket": ("boto3_utils", "upload_bytes_to_bucket"),
    "upload_file_to_bucket": ("boto3_utils", "upload_file_to_bucket"),
    "upload_file_to_bucket_or_local": ("boto3_utils", "upload_file_to_bucket_or_local"),
    "VolumeCache": ("volume_cache", "VolumeCache"),
    "model_cache_path": ("model_cache", "model_cache_path"),
    "clean": ("cleanup", "clean"),
    "cuda_available": ("cuda", "is_available"),
    "FunctionTimer": ("debugger", "FunctionTimer"),
    "LineTimer": ("debugger", "LineTimer"),
}

_SUBMODULES = frozenset(
    {
        "boto3_utils",
        "cleanup",
        "cuda",
        "debugger",
        "download",
        "model_cache",
        "upload",
        "validation",
        "validator",
        "volume_cache",
    }
)

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    try:
        module_name, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
