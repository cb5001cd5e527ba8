"""Upload a job's output files to S3-compatible storage; get back a URL.

Configured by ``BUCKET_ENDPOINT_URL``, ``BUCKET_ACCESS_KEY_ID`` and
``BUCKET_SECRET_ACCESS_KEY`` (or a ``bucket_creds`` dict with
``endpointUrl``, ``accessId``, ``accessSecret``). The functions return a
presigned GET URL valid for 7 days.

With no bucket configured they behave as runpod's do: the file is copied
into a local folder (``simulated_uploaded/`` for images, ``local_upload/``
otherwise) and that relative path is returned, with a warning, so a handler
runs unchanged on a laptop.

S3 needs boto3, an optional extra: ``pip install 'wavespeed[s3]'``. It is
imported only when an upload to a configured bucket happens; without it,
such an upload raises ``MissingExtra`` naming the extra.
"""

import io
import mimetypes
import os
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional

from ..errors import WavespeedError
from ..logs import ensure_handler, logger

__all__ = [
    "upload_image",
    "upload_files",
    "files",
    "bucket_upload",
    "upload_file_to_bucket",
    "upload_in_memory_object",
    "get_boto_client",
    "region_from_url",
    "MissingExtra",
    "PRESIGN_SECONDS",
]

log = logger("utils.upload")

PRESIGN_SECONDS = 7 * 24 * 3600
ENV_ENDPOINT = "BUCKET_ENDPOINT_URL"
ENV_KEY_ID = "BUCKET_ACCESS_KEY_ID"
ENV_SECRET = "BUCKET_SECRET_ACCESS_KEY"


class MissingExtra(WavespeedError, ImportError):
    """An optional dependency is needed for this call."""


def load_boto3() -> tuple[Any, Any]:
    """Import boto3 and botocore's Config class, or explain which extra to install.

    This is the one place boto3 is imported (tests replace ``boto3`` and
    ``botocore.config`` in ``sys.modules``).
    """
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise MissingExtra(
            "uploading to a bucket needs boto3: pip install 'wavespeed[s3]'"
        ) from exc
    return boto3, Config


def load_transfer_config() -> Any:
    """boto3's ``TransferConfig`` class (boto3 is imported here, on first use)."""
    load_boto3()
    from boto3.s3.transfer import TransferConfig

    return TransferConfig


def transfer_config() -> Any:
    """The multipart settings of large transfers: 8 MiB parts, 8 at a time."""
    TransferConfig = load_transfer_config()
    return TransferConfig(
        multipart_threshold=8 * 1024 * 1024,
        multipart_chunksize=8 * 1024 * 1024,
        max_concurrency=8,
        use_threads=True,
    )


def _credentials(bucket_creds: Optional[Mapping[str, Any]]) -> Optional[tuple[str, str, str]]:
    if bucket_creds:
        try:
            return (
                str(bucket_creds["endpointUrl"]),
                str(bucket_creds["accessId"]),
                str(bucket_creds["accessSecret"]),
            )
        except KeyError as exc:
            raise ValueError(
                f"bucket_creds needs endpointUrl, accessId and accessSecret; {exc} is missing"
            ) from None
    endpoint = os.environ.get(ENV_ENDPOINT)
    key_id = os.environ.get(ENV_KEY_ID)
    secret = os.environ.get(ENV_SECRET)
    if endpoint and key_id and secret:
        return endpoint, key_id, secret
    return None


def region_from_url(endpoint_url: str) -> Optional[str]:
    """The region an S3-style endpoint URL names (AWS, Backblaze, DigitalOcean), if any."""
    from urllib.parse import urlsplit

    host = (urlsplit(endpoint_url).hostname or "").lower()
    labels = host.split(".")
    if "s3" in labels:
        index = labels.index("s3")
        if index + 1 < len(labels) and labels[index + 1] not in ("amazonaws", "com"):
            return labels[index + 1]
    if host.endswith(".digitaloceanspaces.com") and len(labels) >= 3:
        return labels[-3]
    return None


def _client(creds: tuple[str, str, str]) -> Any:
    boto3, Config = load_boto3()
    endpoint, key_id, secret = creds
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        region_name=region_from_url(endpoint),
        config=Config(signature_version="s3v4", retries={"max_attempts": 3, "mode": "standard"}),
    )


def get_boto_client(bucket_creds: Optional[Mapping[str, Any]] = None) -> tuple[Any, Any]:
    """runpod's ``(s3 client, TransferConfig)`` for ``bucket_creds`` or the ``BUCKET_*`` variables.

    The client is None when no bucket is configured; both are None (with a
    warning) when boto3 is not installed.
    """
    try:
        config = transfer_config()
    except MissingExtra:
        ensure_handler()
        log.warning("boto3 is not installed, so S3 uploads are off: pip install 'wavespeed[s3]'")
        return None, None
    creds = _credentials(bucket_creds)
    return (_client(creds) if creds else None), config


def _default_bucket() -> str:
    return time.strftime("%m-%y")  # runpod's default: one bucket per month


def _keep_locally(folder: str, name: str, source: Optional[str], data: Optional[bytes]) -> str:
    ensure_handler()
    log.warning(
        "no bucket configured (%s, %s, %s); keeping the file in ./%s instead",
        ENV_ENDPOINT,
        ENV_KEY_ID,
        ENV_SECRET,
        folder,
    )
    os.makedirs(folder, exist_ok=True)
    path = f"{folder}/{os.path.basename(name)}"
    if source is not None:
        shutil.copyfile(source, path)
    else:
        with open(path, "wb") as out:
            out.write(data or b"")
    return path


# The S3 calls both APIs make (runpod's here, wavespeed 1.0's in boto3_utils).


def object_key(file_name: str, prefix: Optional[str]) -> str:
    """``prefix/file_name``, or ``file_name`` without a prefix."""
    return f"{prefix}/{file_name}" if prefix else file_name


def presigned_url(client: Any, bucket: str, key: str, expiry: int = PRESIGN_SECONDS) -> str:
    """A GET URL of the object, valid for ``expiry`` seconds."""
    return str(
        client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expiry
        )
    )


def transfer_kwargs(
    bucket: str,
    key: str,
    extra_args: Optional[Mapping[str, Any]] = None,
    callback: Optional[Callable[[int], Any]] = None,
    **more: Any,
) -> dict[str, Any]:
    """Keyword arguments of boto3's ``upload_file``, ``upload_fileobj`` and ``download_file``.

    ``ExtraArgs`` and ``Callback`` are passed only when given.
    """
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, **more}
    if extra_args:
        kwargs["ExtraArgs"] = dict(extra_args)
    if callback is not None:
        kwargs["Callback"] = callback
    return kwargs


def upload_image(
    job_id: str,
    image_location: str,
    result_index: int = 0,
    results_list: Optional[list[Any]] = None,
    bucket_name: Optional[str] = None,
) -> str:
    """Upload one file as ``<job_id>/<random><ext>``; returns its URL (or local path).

    ``results_list[result_index]`` is set to the same value when given.
    """
    extension = os.path.splitext(image_location)[1]
    name = f"{uuid.uuid4().hex[:8]}{extension}"
    creds = _credentials(None)
    if creds is None:
        location = _keep_locally("simulated_uploaded", name, image_location, None)
    else:
        client = _client(creds)
        bucket = bucket_name or _default_bucket()
        key = f"{job_id}/{name}"
        content_type = mimetypes.guess_type(image_location)[0] or (
            "image/" + extension.lstrip(".") if extension else "application/octet-stream"
        )
        with open(image_location, "rb") as body:
            client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
        location = presigned_url(client, bucket, key)
    if results_list is not None:
        results_list[result_index] = location
    return location


def upload_files(
    job_id: str, file_list: Sequence[str], bucket_name: Optional[str] = None
) -> list[str]:
    """Upload several files in parallel with ``upload_image``; URLs in input order."""
    if not file_list:
        return []
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(
        max_workers=min(8, len(file_list)), thread_name_prefix="wavespeed-up"
    ) as pool:
        return list(
            pool.map(lambda path: upload_image(job_id, path, bucket_name=bucket_name), file_list)
        )


#: runpod's name for ``upload_files``.
files = upload_files


def bucket_upload(
    job_id: str, file_list: Sequence[str], bucket_creds: Mapping[str, Any]
) -> list[str]:
    """Upload files to the bucket ``bucket_creds["bucketName"]`` as ``<job_id>/<path>``.

    Returns plain (not presigned) URLs ``<endpointUrl>/<bucketName>/<job_id>/<path>``,
    as runpod does. Always needs boto3.
    """
    if not bucket_creds or "bucketName" not in bucket_creds:
        raise ValueError(
            "bucket_upload() needs bucket_creds with endpointUrl, accessId, accessSecret"
            " and bucketName"
        )
    creds = _credentials(bucket_creds)
    assert creds is not None  # non-empty bucket_creds always give credentials or raise
    bucket = str(bucket_creds["bucketName"])
    client = _client(creds)
    urls: list[str] = []
    for path in file_list:
        key = f"{job_id}/{path}"
        with open(path, "rb") as body:
            client.put_object(Bucket=bucket, Key=key, Body=body)
        urls.append(f"{creds[0]}/{bucket}/{key}")
    return urls


def upload_file_to_bucket(
    file_name: str,
    file_location: str,
    bucket_creds: Optional[Mapping[str, Any]] = None,
    bucket_name: Optional[str] = None,
    prefix: Optional[str] = None,
    extra_args: Optional[dict[str, Any]] = None,
) -> str:
    """Upload the file at ``file_location`` as ``[prefix/]file_name``; returns a presigned URL."""
    creds = _credentials(bucket_creds)
    if creds is None:
        return _keep_locally("local_upload", file_name, file_location, None)
    client = _client(creds)
    bucket = bucket_name or _default_bucket()
    key = object_key(file_name, prefix)
    client.upload_file(**transfer_kwargs(bucket, key, extra_args, Filename=file_location))
    return presigned_url(client, bucket, key)


def upload_in_memory_object(
    file_name: str,
    file_data: bytes,
    bucket_creds: Optional[Mapping[str, Any]] = None,
    bucket_name: Optional[str] = None,
    prefix: Optional[str] = None,
) -> str:
    """Upload ``file_data`` as ``[prefix/]file_name``; returns a presigned URL."""
    creds = _credentials(bucket_creds)
    if creds is None:
        return _keep_locally("local_upload", file_name, None, bytes(file_data))
    client = _client(creds)
    bucket = bucket_name or _default_bucket()
    key = object_key(file_name, prefix)
    client.upload_fileobj(io.BytesIO(bytes(file_data)), bucket, key)
    return presigned_url(client, bucket, key)
