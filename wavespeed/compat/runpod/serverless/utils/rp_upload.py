"""``runpod.serverless.utils.rp_upload``: runpod's S3 uploads (boto3 via ``wavespeed[s3]``).

``get_boto_client(bucket_creds=None)`` returns ``(client, TransferConfig)``:
the client is None when no bucket is configured, both are None when boto3
is not installed. ``upload_file_to_bucket(file_name, file_location,
bucket_creds=None, ...)`` is runpod's signature (wavespeed 1.0's, with the
location first and explicit keys, is ``wavespeed.serverless.utils``').
"""

from typing import Optional

from wavespeed.serverless.utils.upload import (
    MissingExtra,
    bucket_upload,
    files,
    get_boto_client,
    region_from_url,
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


def extract_region_from_url(endpoint_url: str) -> Optional[str]:
    """The region an S3-style endpoint URL names (AWS, Backblaze, DigitalOcean), if any."""
    return region_from_url(endpoint_url)
