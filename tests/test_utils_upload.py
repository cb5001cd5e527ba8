"""Uploads: boto3 faked at its import seam, and the no-bucket local fallback."""

import os
import sys
import threading
import time
import types
from typing import Any, Dict, List

import pytest

from wavespeed.serverless.utils import (
    MissingExtra,
    bucket_upload,
    upload_file_to_bucket,
    upload_files,
    upload_image,
    upload_in_memory_object,
)

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

    def upload_fileobj(self, fileobj: Any, bucket: str, key: str, **kwargs: Any) -> None:
        self._record("upload_fileobj", {"Bucket": bucket, "Key": key}, fileobj.read())

    def generate_presigned_url(self, op: str, Params: Dict[str, str], ExpiresIn: int) -> str:  # noqa: N803
        assert op == "get_object" and ExpiresIn == 604800
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

    boto3 = types.ModuleType("boto3")
    boto3.session = types.SimpleNamespace(Session=Session)  # type: ignore[attr-defined]
    botocore = types.ModuleType("botocore")
    botocore_config = types.ModuleType("botocore.config")
    botocore_config.Config = Config  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "boto3", boto3)
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
