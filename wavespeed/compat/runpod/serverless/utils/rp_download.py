"""``runpod.serverless.utils.rp_download``: ``file(url)`` and ``download_files_from_urls``."""

from wavespeed.serverless.utils.download import (
    DownloadError,
    DownloadRefused,
    DownloadTooLarge,
    UnsafeArchive,
    download_files_from_urls,
    file,
)

__all__ = [
    "file",
    "download_files_from_urls",
    "DownloadError",
    "DownloadRefused",
    "DownloadTooLarge",
    "UnsafeArchive",
]
