"""``runpod.serverless.utils.rp_upload``: S3 uploads (boto3 via ``wavespeed[s3]``)."""

from typing import Any, Mapping, Optional, Tuple

from wavespeed.serverless.utils.upload import (
    MissingExtra,
    _client,
    _credentials,
    _region,
    bucket_upload,
    files,
    upload_file_to_bucket,
    upload_image,
    upload_in_memory_object,
)

__all__ = [
    "upload_image",
    "files",
    "bucket_upload",
    "upload_file_to_bucket",
    "upload_in_memory_object",
    "get_boto_client",
    "extract_region_from_url",
    "MissingExtra",
]


def get_boto_client(bucket_creds: Optional[Mapping[str, Any]] = None) -> Tuple[Any, None]:
    """``(s3 client, None)``, or ``(None, None)`` when no bucket is configured.

    The second item (runpod's TransferConfig) is always None here.
    """
    creds = _credentials(bucket_creds)
    return (_client(creds) if creds else None), None


def extract_region_from_url(endpoint_url: str) -> Optional[str]:
    """The region named by an S3-style endpoint URL, if any."""
    return _region(endpoint_url)
