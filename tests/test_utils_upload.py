"""Uploads: boto3 faked at its import seam, and the no-bucket local fallback.

runpod's functions (``wavespeed.serverless.utils.upload``, the layer's
``rp_upload``) and wavespeed 1.0.14's (``wavespeed.serverless.utils``, with
explicit credentials) are both pinned here.
"""

import os
import sys
import threading
import time
import types
from typing import Any, Dict, List

import pytest

import wavespeed.serverless.utils as utils
from wavespeed.serverless.utils import (
    MissingExtra,
    bucket_upload,
    upload_files,
    upload_image,
    upload_in_memory_object,
)
from wavespeed.serverless.utils.upload import get_boto_client, upload_file_to_bucket

pytestmark = pytest.mark.timeout(30)

BUCKET_ENV = {
    "BUCKET_ENDPOINT_URL": "https://s3.us-west-2.amazonaws.com",
    "BUCKET_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "BUCKET_SECRET_ACCESS_KEY": "secret",
}


class FakeS3:
    """Records every call an S3 client gets."""

    def __init__(self, kwargs: Dict[str, Any]) -> None:
        self.kwargs = kwargs
        self.calls: List[Any] = []
        self.lock = threading.Lock()

    def _record(self, *call: Any) -> None:
        with self.lock:
            self.calls.append(call)

    def put_object(self, **kwargs: Any) -> None:
        body = kwargs.pop("Body")
        self._record("put_object", kwargs, body.read() if hasattr(body, "read") else body)

    def upload_file(self, **kwargs: Any) -> None:
        with open(kwargs["Filename"], "rb") as handle:
            self._record("upload_file", kwargs, handle.read())

    def upload_fileobj(self, Fileobj: Any, Bucket: str, Key: str, **kwargs: Any) -> None:  # noqa: N803 - boto3's names
        self._record("upload_fileobj", dict(kwargs, Bucket=Bucket, Key=Key), Fileobj.read())

    def download_file(self, **kwargs: Any) -> None:
        with open(kwargs["Filename"], "wb") as handle:
            handle.write(b"FROM-S3")
        self._record("download_file", kwargs, None)

    def generate_presigned_url(self, op: str, Params: Dict[str, str], ExpiresIn: int) -> str:  # noqa: N803
        assert op == "get_object"
        self.expires = ExpiresIn
        return f"https://signed.example/{Params['Bucket']}/{Params['Key']}"


@pytest.fixture
def fake_boto3(monkeypatch: pytest.MonkeyPatch) -> List[FakeS3]:
    """Install fake ``boto3`` and ``botocore.config`` modules; returns the clients made."""
    clients: List[FakeS3] = []

    class Session:
        def client(self, service: str, **kwargs: Any) -> FakeS3:
            assert service == "s3"
            client = FakeS3(kwargs)
            clients.append(client)
            return client

    class Config:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs

    class TransferConfig(Config):
        pass

    boto3 = types.ModuleType("boto3")
    boto3.session = types.SimpleNamespace(Session=Session)  # type: ignore[attr-defined]
    transfer = types.ModuleType("boto3.s3.transfer")
    transfer.TransferConfig = TransferConfig  # type: ignore[attr-defined]
    botocore = types.ModuleType("botocore")
    botocore_config = types.ModuleType("botocore.config")
    botocore_config.Config = Config  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "boto3", boto3)
    monkeypatch.setitem(sys.modules, "boto3.s3", types.ModuleType("boto3.s3"))
    monkeypatch.setitem(sys.modules, "boto3.s3.transfer", transfer)
    monkeypatch.setitem(sys.modules, "botocore", botocore)
    monkeypatch.setitem(sys.modules, "botocore.config", botocore_config)
    return clients


@pytest.fixture
def no_boto3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # `import boto3` raises ImportError


@pytest.fixture
def bucket_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in BUCKET_ENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def no_bucket(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for key in BUCKET_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def image(tmp_path: Any) -> str:
    path = os.path.join(str(tmp_path), "out.png")
    with open(path, "wb") as handle:
        handle.write(b"PNGDATA")
    return path


# -- no bucket configured: runpod's local fallback, boto3 not needed ---------------


def test_upload_image_without_bucket_keeps_a_local_copy(no_bucket: None, no_boto3: None, image: str) -> None:
    results: List[Any] = [None, None]
    location = upload_image("job-1", image, result_index=1, results_list=results)
    assert location.startswith("simulated_uploaded/") and location.endswith(".png")
    assert results == [None, location]
    with open(location, "rb") as handle:
        assert handle.read() == b"PNGDATA"


def test_file_and_memory_uploads_without_bucket(no_bucket: None, no_boto3: None, image: str) -> None:
    assert upload_file_to_bucket("result.png", image) == "local_upload/result.png"
    assert upload_in_memory_object("blob.bin", b"\x00\x01") == "local_upload/blob.bin"
    with open("local_upload/blob.bin", "rb") as handle:
        assert handle.read() == b"\x00\x01"


def test_upload_files_without_bucket_keeps_order(no_bucket: None, tmp_path: Any) -> None:
    paths = []
    for i in range(5):
        path = os.path.join(str(tmp_path), f"f{i}.jpg")
        with open(path, "wb") as handle:
            handle.write(bytes([i]))
        paths.append(path)
    locations = upload_files("job-2", paths)
    for i, location in enumerate(locations):
        with open(location, "rb") as handle:
            assert handle.read() == bytes([i])


# -- a bucket configured: boto3 through the seam ----------------------------------


def test_upload_image_to_bucket(bucket_env: None, fake_boto3: List[FakeS3], image: str) -> None:
    url = upload_image("job-7", image)
    (client,) = fake_boto3
    assert client.kwargs["endpoint_url"] == BUCKET_ENV["BUCKET_ENDPOINT_URL"]
    assert client.kwargs["aws_access_key_id"] == "AKIDEXAMPLE"
    assert client.kwargs["aws_secret_access_key"] == "secret"
    assert client.kwargs["region_name"] == "us-west-2"
    ((name, args, body),) = client.calls
    bucket = time.strftime("%m-%y")
    assert name == "put_object" and body == b"PNGDATA"
    assert args["Bucket"] == bucket and args["ContentType"] == "image/png"
    assert args["Key"].startswith("job-7/") and args["Key"].endswith(".png")
    assert url == f"https://signed.example/{bucket}/{args['Key']}"


def test_upload_image_named_bucket(bucket_env: None, fake_boto3: List[FakeS3], image: str) -> None:
    assert upload_image("j", image, bucket_name="outputs").startswith("https://signed.example/outputs/j/")


def test_upload_file_to_bucket_with_creds_prefix_and_extra_args(
    no_bucket: None, fake_boto3: List[FakeS3], image: str
) -> None:
    creds = {"endpointUrl": "https://nyc3.digitaloceanspaces.com", "accessId": "id", "accessSecret": "s"}
    url = upload_file_to_bucket(
        "final.png", image, bucket_creds=creds, bucket_name="b", prefix="runs/1", extra_args={"ACL": "public-read"}
    )
    assert url == "https://signed.example/b/runs/1/final.png"
    (client,) = fake_boto3
    assert client.kwargs["region_name"] == "nyc3"
    ((name, args, body),) = client.calls
    assert name == "upload_file" and body == b"PNGDATA"
    assert args["ExtraArgs"] == {"ACL": "public-read"} and args["Key"] == "runs/1/final.png"


def test_upload_in_memory_object_to_bucket(bucket_env: None, fake_boto3: List[FakeS3]) -> None:
    url = upload_in_memory_object("a.bin", b"bytes!", bucket_name="mem")
    assert url == "https://signed.example/mem/a.bin"
    ((name, args, body),) = fake_boto3[0].calls
    assert (name, args, body) == ("upload_fileobj", {"Bucket": "mem", "Key": "a.bin"}, b"bytes!")
    assert fake_boto3[0].expires == 604800


def test_bucket_upload_returns_plain_urls(no_bucket: None, fake_boto3: List[FakeS3], tmp_path: Any) -> None:
    with open("x.txt", "wb") as handle:
        handle.write(b"X")
    creds = {"endpointUrl": "https://s3.example", "accessId": "i", "accessSecret": "s", "bucketName": "bk"}
    assert bucket_upload("job-5", ["x.txt"], creds) == ["https://s3.example/bk/job-5/x.txt"]
    ((name, args, body),) = fake_boto3[0].calls
    assert name == "put_object" and args == {"Bucket": "bk", "Key": "job-5/x.txt"} and body == b"X"


def test_upload_files_to_bucket_in_parallel_keeps_order(
    bucket_env: None, fake_boto3: List[FakeS3], tmp_path: Any
) -> None:
    paths = []
    for i in range(4):
        path = os.path.join(str(tmp_path), f"{i}.png")
        with open(path, "wb") as handle:
            handle.write(str(i).encode())
        paths.append(path)
    urls = upload_files("job-8", paths)
    bodies = {args["Key"]: body for client in fake_boto3 for _n, args, body in client.calls}
    assert [bodies[url.split("/", 4)[4]] for url in urls] == [b"0", b"1", b"2", b"3"]


# -- errors --------------------------------------------------------------------------


def test_missing_boto3_names_the_extra(bucket_env: None, no_boto3: None, image: str) -> None:
    with pytest.raises(MissingExtra) as info:
        upload_image("job", image)
    assert "pip install 'wavespeed[s3]'" in str(info.value)
    assert isinstance(info.value, ImportError)
    with pytest.raises(ImportError):
        upload_in_memory_object("a", b"a")


def test_incomplete_bucket_creds(no_bucket: None, fake_boto3: List[FakeS3], image: str) -> None:
    with pytest.raises(ValueError, match="accessSecret"):
        upload_file_to_bucket("a", image, bucket_creds={"endpointUrl": "https://x", "accessId": "i"})
    with pytest.raises(ValueError, match="bucketName"):
        bucket_upload("j", [image], {"endpointUrl": "https://x", "accessId": "i", "accessSecret": "s"})


# -- runpod's get_boto_client -----------------------------------------------------------


def test_get_boto_client_returns_client_and_transfer_config(bucket_env: None, fake_boto3: List[FakeS3]) -> None:
    client, config = get_boto_client()
    assert client is fake_boto3[0] and client.kwargs["region_name"] == "us-west-2"
    assert type(config).__name__ == "TransferConfig" and config.kwargs["use_threads"] is True
    creds = {"endpointUrl": "https://ams3.digitaloceanspaces.com", "accessId": "i", "accessSecret": "s"}
    other, _ = get_boto_client(creds)
    assert other.kwargs["endpoint_url"] == creds["endpointUrl"] and other.kwargs["region_name"] == "ams3"


def test_get_boto_client_without_bucket_or_boto3(no_bucket: None, fake_boto3: List[FakeS3], monkeypatch: pytest.MonkeyPatch) -> None:
    client, config = get_boto_client()
    assert client is None and type(config).__name__ == "TransferConfig"  # runpod: (None, config)
    monkeypatch.setitem(sys.modules, "boto3", None)
    assert get_boto_client() == (None, None)  # runpod: boto3 missing


# -- wavespeed 1.0.14's names and signatures ----------------------------------------------

CREDS = {
    "endpoint_url": "https://bucket.s3.eu-west-1.amazonaws.com",
    "access_key_id": "AKID",
    "secret_access_key": "SECRET",
}


def test_wavespeed_names_are_1_0_14s() -> None:
    import inspect

    expected = {
        "create_boto_client": ["endpoint_url", "access_key_id", "secret_access_key", "region"],
        "upload_file_to_bucket": [
            "file_location", "file_name", "endpoint_url", "access_key_id", "secret_access_key",
            "bucket_name", "prefix", "extra_args", "region", "presigned_url_expiry", "progress_callback",
        ],
        "upload_file_to_bucket_or_local": [
            "file_location", "file_name", "bucket_name", "endpoint_url", "access_key_id",
            "secret_access_key", "prefix", "extra_args", "region", "presigned_url_expiry",
            "progress_callback", "local_fallback_dir",
        ],
        "upload_bytes_to_bucket": [
            "file_data", "file_name", "endpoint_url", "access_key_id", "secret_access_key",
            "bucket_name", "prefix", "extra_args", "region", "presigned_url_expiry",
        ],
        "download_file_from_bucket": [
            "file_name", "destination_path", "endpoint_url", "access_key_id", "secret_access_key",
            "bucket_name", "prefix", "region", "progress_callback",
        ],
        "extract_region_from_url": ["endpoint_url"],
    }
    for name, params in expected.items():
        assert list(inspect.signature(getattr(utils, name)).parameters) == params, name
    from wavespeed.serverless.utils.boto3_utils import upload_file_to_bucket as ws_upload

    assert utils.upload_file_to_bucket is ws_upload


def test_create_boto_client(fake_boto3: List[FakeS3]) -> None:
    client, config = utils.create_boto_client(**CREDS)
    assert client.kwargs["region_name"] == "eu-west-1"
    assert client.kwargs["config"].kwargs["signature_version"] == "s3v4"
    assert config.kwargs["multipart_threshold"] == 8 * 1024 * 1024
    client, _ = utils.create_boto_client(**CREDS, region="us-east-2")
    assert client.kwargs["region_name"] == "us-east-2"


def test_wavespeed_upload_file_to_bucket(fake_boto3: List[FakeS3], image: str) -> None:
    seen: List[int] = []
    url = utils.upload_file_to_bucket(
        image, "out.png", **CREDS, bucket_name="outs", prefix="p", extra_args={"ContentType": "image/png"},
        presigned_url_expiry=60, progress_callback=seen.append,
    )
    assert url == "https://signed.example/outs/p/out.png"
    ((name, args, body),) = fake_boto3[0].calls
    assert name == "upload_file" and body == b"PNGDATA"
    assert args["Key"] == "p/out.png" and args["ExtraArgs"] == {"ContentType": "image/png"}
    assert args["Callback"] == seen.append and type(args["Config"]).__name__ == "TransferConfig"
    assert fake_boto3[0].expires == 60


def test_wavespeed_upload_or_local(no_bucket: None, no_boto3: None, image: str, tmp_path: Any) -> None:
    path = utils.upload_file_to_bucket_or_local(image, "../escape.png", "b", local_fallback_dir="kept")
    assert path == os.path.join("kept", "escape.png")  # the name cannot leave the folder
    with open(path, "rb") as handle:
        assert handle.read() == b"PNGDATA"


def test_wavespeed_upload_bytes_small_and_large(fake_boto3: List[FakeS3]) -> None:
    small = utils.upload_bytes_to_bucket(b"tiny", "t.txt", **CREDS, bucket_name="b", extra_args={"ContentType": "text/plain"})
    assert small == "https://signed.example/b/t.txt"
    ((name, args, body),) = fake_boto3[0].calls
    assert name == "put_object" and body == b"tiny" and args["ContentType"] == "text/plain"
    big = b"x" * (8 * 1024 * 1024)
    utils.upload_bytes_to_bucket(big, "big.bin", **CREDS, bucket_name="b", prefix="d")
    ((name, args, body),) = fake_boto3[1].calls
    assert name == "upload_fileobj" and len(body) == len(big) and args["Key"] == "d/big.bin"


def test_wavespeed_download_file_from_bucket(fake_boto3: List[FakeS3], tmp_path: Any) -> None:
    target = str(tmp_path / "got.bin")
    assert utils.download_file_from_bucket("o.bin", target, **CREDS, bucket_name="b", prefix="in") == target
    ((name, args, _body),) = fake_boto3[0].calls
    assert name == "download_file" and args["Key"] == "in/o.bin" and args["Bucket"] == "b"
    with open(target, "rb") as handle:
        assert handle.read() == b"FROM-S3"


@pytest.mark.parametrize(
    "url, region",
    [
        ("https://bucket.s3.us-west-2.amazonaws.com", "us-west-2"),  # runpod and 1.0.14 agree
        ("https://bucket.nyc3.digitaloceanspaces.com", "nyc3"),
        ("https://minio.local:9000", None),
        ("https://s3.eu-central-1.amazonaws.com", "eu-central-1"),  # both references: None
    ],
)
def test_extract_region_from_url(url: str, region: Any) -> None:
    assert utils.extract_region_from_url(url) == region


def test_wavespeed_upload_without_boto3_names_the_extra(no_boto3: None, image: str) -> None:
    with pytest.raises(MissingExtra):
        utils.upload_file_to_bucket(image, "x", **CREDS, bucket_name="b")
