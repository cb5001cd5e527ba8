"""``runpod.serverless.utils.rp_download``: ``file(url)`` and ``download_files_from_urls``.

Every error is a ``DownloadError``, which is a ``requests.RequestException``
as runpod's are; a URL refused by the address guard or a body over the size
cap raises ``DownloadBlocked`` (runpod's ``rp_ssrf.SSRFError``, a
``ValueError``).
"""

from collections.abc import Mapping
from typing import Any

from wavespeed import __version__ as _version
from wavespeed.serverless.utils.download import (
    DownloadBlocked,
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
    "calculate_chunk_size",
    "parse_content_length",
    "extract_disposition_params",
    "HEADERS",
    "DownloadError",
    "DownloadBlocked",
    "DownloadRefused",
    "DownloadTooLarge",
    "UnsafeArchive",
]

HEADERS = {"User-Agent": f"wavespeed/{_version} (runpod-python compatible)"}

_KIB = 1024
_MIB = 1024 * _KIB


def calculate_chunk_size(file_size: int) -> int:
    """runpod's read size for a body of ``file_size`` bytes: 1 KiB, 1 MiB or 10 MiB."""
    if file_size <= _MIB:
        return _KIB
    if file_size <= 1024 * _MIB:
        return _MIB
    return 10 * _MIB


def parse_content_length(headers: Mapping[str, Any]) -> int:
    """``Content-Length`` as an int; 0 when absent or not a number.

    The header is the server's word, not a measurement.
    """
    try:
        return int(headers.get("Content-Length", 0))
    except (TypeError, ValueError):
        return 0


def extract_disposition_params(content_disposition: str) -> dict[str, str]:
    """The ``key=value`` parameters of a ``Content-Disposition`` header.

    Keys are lowercased and quotes removed.
    """
    params: dict[str, str] = {}
    for part in content_disposition.split(";"):
        if "=" not in part:
            continue
        key, value = part.split("=", 1)
        params[key.strip().lower()] = value.strip().strip('"')
    return params

