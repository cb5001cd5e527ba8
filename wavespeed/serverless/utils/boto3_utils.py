"""S3 helpers with wavespeed 1.0's names and signatures (``wavespeed.serverless.utils``).

Workers written for wavespeed 1.0.x call these with explicit credentials::

    from wavespeed.serverless.utils import upload_file_to_bucket

    url = upload_file_to_bucket(
        file_location="out.png", file_name="out.png",
        endpoint_url=..., access_key_id=..., secret_access_key=..., bucket_name="outputs",
    )

Each returns a presigned URL (7 days unless ``presigned_url_expiry`` says
otherwise); ``upload_file_to_bucket_or_local`` copies the file into
``local_fallback_dir`` when no credentials are given. runpod's functions of
the same purpose (``upload_file_to_bucket(file_name, file_location,
bucket_creds=...)``) live in ``wavespeed.serverless.utils.upload`` and
``runpod.serverless.utils.rp_upload``.

boto3 comes with ``pip install 'wavespeed[s3]'``; it is imported on the first
call, and its absence raises ``MissingExtra``.
"""

import io
import os
import shutil
from typing import Any, Callable, Optional

from ..logs import ensure_handler, logger
from .upload import (
    load_boto3,
    object_key,
    presigned_url,
    region_from_url,
    transfer_config,
    transfer_kwargs,
)

__all__ = [
    "create_boto_client",
    "download_file_from_bucket",
    "extract_region_from_url",
    "upload_bytes_to_bucket",
    "upload_file_to_bucket",
    "upload_file_to_bucket_or_local",
]

log = logger("utils.boto3")

SEVEN_DAYS = 604800
_PUT_LIMIT = 8 * 1024 * 1024  # smaller byte uploads go in one put_object


def extract_region_from_url(endpoint_url: str) -> Optional[str]:
    """The region an S3-style endpoint URL names (AWS, Backblaze, DigitalOcean), or None."""
    return region_from_url(endpoint_url)


def create_boto_client(
    endpoint_url: str,
    access_key_id: str,
    secret_access_key: str,
    region: Optional[str] = None,
) -> tuple[Any, Any]:
    """``(s3 client, TransferConfig)`` for an endpoint.

    The region is read from the URL when not given.
    """
    boto3, Config = load_boto3()
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=Config(
            signature_version="s3v4",
            retries={"max_attempts": 3, "mode": "standard"},
            tcp_keepalive=True,
        ),
        region_name=region if region is not None else region_from_url(endpoint_url),
    )
    return client, transfer_config()


def upload_file_to_bucket(
    file_location: str,
    file_name: str,
    endpoint_url: str,
    access_key_id: str,
    secret_access_key: str,
    bucket_name: str,
    prefix: Optional[str] = None,
    extra_args: Optional[dict[str, Any]] = None,
    region: Optional[str] = None,
    presigned_url_expiry: int = SEVEN_DAYS,
    progress_callback: Optional[Callable[[int], Any]] = None,
) -> str:
    """Upload the file at ``file_location`` as ``[prefix/]file_name``; returns a presigned URL."""
    client, config = create_boto_client(endpoint_url, access_key_id, secret_access_key, region)
    key = object_key(file_name, prefix)
    log.debug("uploading %s to s3://%s/%s", file_location, bucket_name, key)
    client.upload_file(
        **transfer_kwargs(
            bucket_name, key, extra_args, progress_callback, Filename=file_location, Config=config
        )
    )
    return presigned_url(client, bucket_name, key, presigned_url_expiry)


def upload_file_to_bucket_or_local(
    file_location: str,
    file_name: str,
    bucket_name: str,
    endpoint_url: Optional[str] = None,
    access_key_id: Optional[str] = None,
    secret_access_key: Optional[str] = None,
    prefix: Optional[str] = None,
    extra_args: Optional[dict[str, Any]] = None,
    region: Optional[str] = None,
    presigned_url_expiry: int = SEVEN_DAYS,
    progress_callback: Optional[Callable[[int], Any]] = None,
    local_fallback_dir: str = "local_upload",
) -> str:
    """``upload_file_to_bucket``, or without credentials a copy in ``local_fallback_dir``.

    Returns the presigned URL, or the copy's path.
    """
    if not (endpoint_url and access_key_id and secret_access_key):
        ensure_handler()
        log.warning(
            "no S3 credentials given: keeping %s in %s instead", file_name, local_fallback_dir
        )
        os.makedirs(local_fallback_dir, exist_ok=True)
        # The name is a label: keep it inside the fallback folder.
        target = os.path.join(
            local_fallback_dir, os.path.basename(file_name.replace("\\", "/")) or "upload"
        )
        shutil.copyfile(file_location, target)
        return target
    return upload_file_to_bucket(
        file_location=file_location,
        file_name=file_name,
        endpoint_url=endpoint_url,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        bucket_name=bucket_name,
        prefix=prefix,
        extra_args=extra_args,
        region=region,
        presigned_url_expiry=presigned_url_expiry,
        progress_callback=progress_callback,
    )


def upload_bytes_to_bucket(
    file_data: bytes,
    file_name: str,
    endpoint_url: str,
    access_key_id: str,
    secret_access_key: str,
    bucket_name: str,
    prefix: Optional[str] = None,
    extra_args: Optional[dict[str, Any]] = None,
    region: Optional[str] = None,
    presigned_url_expiry: int = SEVEN_DAYS,
) -> str:
    """Upload bytes as ``[prefix/]file_name``; returns a presigned URL.

    One request under 8 MiB, multipart above.
    """
    client, config = create_boto_client(endpoint_url, access_key_id, secret_access_key, region)
    key = object_key(file_name, prefix)
    data = bytes(file_data)
    if len(data) < _PUT_LIMIT:
        put: dict[str, Any] = dict(extra_args or {})
        put["Body"] = data
        client.put_object(Bucket=bucket_name, Key=key, **put)
    else:
        kwargs = transfer_kwargs(bucket_name, key, extra_args, Config=config)
        client.upload_fileobj(io.BytesIO(data), **kwargs)
    return presigned_url(client, bucket_name, key, presigned_url_expiry)


def download_file_from_bucket(
    file_name: str,
    destination_path: str,
    endpoint_url: str,
    access_key_id: str,
    secret_access_key: str,
    bucket_name: str,
    prefix: Optional[str] = None,
    region: Optional[str] = None,
    progress_callback: Optional[Callable[[int], Any]] = None,
) -> str:
    """Download ``[prefix/]file_name`` from the bucket to ``destination_path``.

    Returns that path.
    """
    client, config = create_boto_client(endpoint_url, access_key_id, secret_access_key, region)
    key = object_key(file_name, prefix)
    client.download_file(
        **transfer_kwargs(
            bucket_name, key, None, progress_callback, Filename=destination_path, Config=config
        )
    )
    return destination_path
