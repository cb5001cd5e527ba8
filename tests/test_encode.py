"""``job.encode()``: every body that leaves the worker.

- NaN and Infinity become ``null`` wherever they sit (issue 12 item 6); other
  values JSON cannot hold still raise ``OutputNotSerializable``.
- A body holding a large string (a base64 image) is written into a single
  buffer of its final size: the bytes are those of ``json.dumps`` and the
  memory used is about the payload itself (issue 13).
"""

import json
import tracemalloc
from typing import Any

import pytest

try:
    from tests.fakeplatform import FakePlatform
    from tests.helpers import running_worker
except ImportError:  # tests/ run as a plain directory on sys.path
    from fakeplatform import FakePlatform  # type: ignore[no-redef]
    from helpers import running_worker  # type: ignore[no-redef]

from wavespeed.serverless.errors import OutputNotSerializable
from wavespeed.serverless.job import encode

MB = 1 << 20
NAN, INF = float("nan"), float("inf")


def reference(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    "body, expected",
    [
        ({"output": NAN}, {"output": None}),
        ({"output": [1, INF, -INF, 2.5]}, {"output": [1, None, None, 2.5]}),
        ({"output": {"a": {"b": (NAN, "x")}}}, {"output": {"a": {"b": [None, "x"]}}}),
        ({"output": {NAN: 1, 2.5: 2}}, {"output": {"null": 1, "2.5": 2}}),
        (NAN, None),
    ],
    ids=["top", "list", "nested-tuple", "keys", "bare"],
)
def test_nan_and_infinity_become_null(body: Any, expected: Any) -> None:
    payload = encode(body)
    assert b"NaN" not in payload and b"Infinity" not in payload
    assert json.loads(payload) == expected


def test_nan_does_not_alter_the_callers_value() -> None:
    body = {"output": [NAN]}
    encode(body)
    assert body["output"][0] != body["output"][0]  # still NaN


@pytest.mark.parametrize(
    "body",
    [
        {"output": {"a": [1, 2.5, None, True, "s"]}, "stopPod": True},
        {"output": "héllo 世界 🚀"},
        {"output": [1e308, -0.0, 5e-324]},
        [],
        "plain",
    ],
)
def test_ordinary_bodies_are_exactly_strict_json(body: Any) -> None:
    assert encode(body) == reference(body)


@pytest.mark.parametrize(
    "body, type_name",
    [
        ({"output": b"raw bytes"}, "bytes"),
        ({"output": {"nested": [{1, 2}], "nan": NAN}}, "set"),
        ({"output": "\ud800"}, ""),
        ({"output": "x" * (2 * MB) + "\ud800"}, ""),  # the large-string path too
    ],
    ids=["bytes", "set-beside-nan", "lone-surrogate", "large-lone-surrogate"],
)
def test_what_json_cannot_hold_still_raises(body: Any, type_name: str) -> None:
    with pytest.raises(OutputNotSerializable) as info:
        encode(body)
    assert type_name in info.value.value_type


def test_a_circular_body_raises() -> None:
    loop: Any = []
    loop.append(loop)
    with pytest.raises(OutputNotSerializable):
        encode({"output": loop})


LARGE = "QUJD" * (3 * MB // 4) + "xyz"  # 3 MB of base64-like text


@pytest.mark.parametrize(
    "body",
    [
        {"output": LARGE},
        LARGE,
        {"output": {"image": LARGE, "seed": 7, "meta": {"w": 512, "tags": ["a", "é"]}}},
        {"output": [LARGE, "small", LARGE + 'quote " back \\ newline \n bell \x07']},
        {"output": ("é" * MB) + "🚀\n" + ("z" * MB)},
        {"output": {"ключ": LARGE, "n": None, "ok": True}, "stopPod": True},
        {"output": {"images": [{"b64": LARGE}, {"b64": LARGE[::-1]}]}},
        {"output": {"big": LARGE, 1: "int key"}},
        {"output": [LARGE] * 40},
    ],
    ids=["string", "bare", "dict", "list-escapes", "non-ascii", "keys", "deep", "int-key", "many"],
)
def test_large_strings_encode_to_the_same_bytes(body: Any) -> None:
    assert encode(body) == reference(body)


def test_large_string_with_nan_beside_it() -> None:
    payload = encode({"output": {"image": LARGE, "score": NAN}})
    assert json.loads(payload) == {"output": {"image": LARGE, "score": None}}


def test_a_large_string_is_encoded_into_one_buffer() -> None:
    text = "QUJD" * (2 * MB)  # 8 MB
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        payload = encode({"output": text})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(payload) == len(text) + len(b'{"output":""}')
    # The payload and a few small slices; json.dumps(...).encode() peaks at 2x.
    assert peak < len(text) + 2 * MB, peak


def test_a_nan_output_is_posted_as_null(fp: FakePlatform, tmp_path: Any) -> None:
    job_id = fp.add_job({})
    with running_worker(fp, lambda job: {"score": NAN, "ok": True}, tmp_path):
        assert fp.wait_results(1, 10)
    assert fp.results(job_id) == [{"output": {"score": None, "ok": True}}]
