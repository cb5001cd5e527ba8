"""Unit tests of job.py: the normalisation table (PROTOCOL §4), error payloads, encoding, Job."""

import copy
import json
import pickle
import threading
from typing import Any, Dict

import pytest

import wavespeed
from wavespeed.serverless.errors import OutputNotSerializable, WavespeedError
from wavespeed.serverless.job import (
    Job,
    JobResult,
    encode,
    error_payload,
    error_text,
    normalize_output,
)

pytestmark = pytest.mark.timeout(60)


# PROTOCOL §4, row by row: (handler returns, body posted, stopPod).
TABLE = [
    pytest.param(None, {"output": None}, False, id="none"),
    pytest.param({"a": 1}, {"output": {"a": 1}}, False, id="dict"),
    pytest.param({"output": 1}, {"output": {"output": 1}}, False, id="output-not-unwrapped"),
    pytest.param({}, {}, False, id="empty-dict"),
    pytest.param({"error": "x"}, {"error": "x"}, False, id="error"),
    pytest.param({"error": "x", "b": 2}, {"output": {"b": 2}, "error": "x"}, False, id="error+more"),
    pytest.param({"error": ""}, {}, False, id="falsy-error"),
    pytest.param({"error": None, "a": 1}, {"output": {"a": 1}}, False, id="none-error"),
    pytest.param(
        {"refresh_worker": True, "a": 1}, {"output": {"a": 1}, "stopPod": True}, True, id="refresh"
    ),
    pytest.param({"refresh_worker": False, "a": 1}, {"output": {"a": 1}}, False, id="refresh-false"),
    pytest.param({"refresh_worker": True}, {"stopPod": True}, True, id="refresh-only"),
    pytest.param({"refresh_worker": False}, {}, False, id="refresh-false-only"),
    pytest.param(
        {"refresh_worker": True, "error": "x"}, {"error": "x", "stopPod": True}, True, id="refresh+error"
    ),
    pytest.param([1, "two"], {"output": [1, "two"]}, False, id="list"),
    pytest.param([], {"output": []}, False, id="empty-list"),
    pytest.param("text", {"output": "text"}, False, id="str"),
    pytest.param("", {"output": ""}, False, id="empty-str"),
    pytest.param(3, {"output": 3}, False, id="int"),
    pytest.param(2.5, {"output": 2.5}, False, id="float"),
    pytest.param(0, {"output": 0}, False, id="zero"),
    pytest.param(True, {"output": True}, False, id="true"),
    pytest.param(False, {"output": False}, False, id="false"),
]


@pytest.mark.parametrize("value, body, refresh", TABLE)
def test_normalization_table(value: Any, body: Dict[str, Any], refresh: bool) -> None:
    before = copy.deepcopy(value)
    got_body, got_stop = normalize_output(value)
    assert got_body == body
    assert got_stop is refresh
    assert value == before  # the user's value is never mutated


@pytest.mark.parametrize("value, body, refresh", TABLE)
def test_refresh_worker_from_config_adds_stop_pod(
    value: Any, body: Dict[str, Any], refresh: bool
) -> None:
    got_body, got_stop = normalize_output(value, refresh_worker=True)
    assert got_stop is True
    assert got_body == {**body, "stopPod": True}


def test_users_dict_is_the_same_object_and_untouched() -> None:
    nested = {"deep": [1, 2]}
    value = {"error": "x", "refresh_worker": True, "data": nested}
    body, _ = normalize_output(value)
    assert value == {"error": "x", "refresh_worker": True, "data": nested}
    assert body["output"] is not value


@pytest.mark.parametrize(
    "error",
    [["bad", "input"], {"code": 3, "why": "bad"}, {"msg": "héllo"}, ("a", 1)],
)
def test_non_string_error_becomes_json_string(error: Any) -> None:
    body, _ = normalize_output({"error": error})
    assert isinstance(body["error"], str)
    assert json.loads(body["error"]) == json.loads(json.dumps(error))


def test_non_string_error_keeps_non_ascii() -> None:
    body, _ = normalize_output({"error": {"msg": "héllo"}})
    assert "héllo" in body["error"]


@pytest.mark.parametrize("error, text", [(42, "42"), (True, "True"), (3.5, "3.5")])
def test_scalar_error_becomes_string(error: Any, text: str) -> None:
    assert normalize_output({"error": error})[0] == {"error": text}


def test_error_text_keeps_strings() -> None:
    assert error_text("plain") == "plain"


class CustomError(Exception):
    pass


def _raise(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:  # noqa: BLE001 - the test wants any exception
        return caught


RUNPOD_KEYS = ["error_type", "error_message", "error_traceback", "hostname", "worker_id", "runpod_version"]
WAVESPEED_KEYS = ["error_type", "error_message", "error_traceback", "hostname", "worker_id", "wavespeed_version"]


def test_error_payload_on_runpod_is_runpods() -> None:
    # runpod 1.12's rp_job.run_job: str(type(err)) and runpod_version; ours adds wavespeed_version.
    exc = _raise(ValueError("bad input"))
    payload = error_payload(exc, "worker-1", "host-1")
    assert list(payload)[:6] == RUNPOD_KEYS
    assert payload["error_type"] == "<class 'ValueError'>"
    assert payload["runpod_version"] == "1.12.0"
    assert payload["wavespeed_version"] == wavespeed.__version__
    assert payload["error_message"] == "bad input"
    assert "Traceback" in payload["error_traceback"] and "ValueError" in payload["error_traceback"]
    assert (payload["hostname"], payload["worker_id"]) == ("host-1", "worker-1")
    json.dumps(payload)  # the payload itself is JSON


def test_error_payload_on_runpod_names_the_module_of_other_types() -> None:
    payload = error_payload(_raise(CustomError("x")), "w", "h", platform="runpod")
    assert payload["error_type"] == f"<class '{__name__}.CustomError'>"


def test_error_payload_on_waverless_is_wavespeed_1_0s() -> None:
    # wavespeed 1.0.14's modules/job.py: type(e).__name__ and wavespeed_version.
    payload = error_payload(_raise(CustomError("x")), "w", "h", platform="waverless")
    assert list(payload) == WAVESPEED_KEYS
    assert payload["error_type"] == "CustomError"
    assert payload["wavespeed_version"] == wavespeed.__version__


def test_error_payload_uses_given_traceback() -> None:
    assert error_payload(ValueError("x"), "w", "h", tb="TB")["error_traceback"] == "TB"


def test_error_payload_survives_an_unprintable_exception() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert error_payload(Unprintable(), "w", "h")["error_message"] == "<unprintable Unprintable>"


@pytest.mark.parametrize("secret", ["sk-plain-0123456789", 'sk-"quoted"\\back', "sk-ünï-çødé"])
def test_error_payload_masks_the_key_before_encoding(secret: str) -> None:
    exc = _raise(RuntimeError(f"auth failed for {secret}"))
    payload = error_payload(exc, "w", "h", secrets=(secret,))
    encoded = json.dumps(payload)
    assert secret not in json.dumps(payload, ensure_ascii=False)
    assert json.dumps(secret)[1:-1] not in encoded  # nor its escaped form
    assert payload["error_message"] == "auth failed for ***"
    assert "***" in payload["error_traceback"]


def test_error_payload_and_error_text_mask_registered_secrets() -> None:
    from wavespeed.serverless.masking import REGISTRY

    REGISTRY.add("registered-secret-value")
    exc = _raise(RuntimeError("token registered-secret-value rejected"))
    assert error_payload(exc, "w", "h")["error_message"] == "token *** rejected"
    assert error_text("registered-secret-value leaked") == "*** leaked"
    assert error_text({"why": "registered-secret-value"}) == '{"why": "***"}'
    body, _ = normalize_output({"error": "registered-secret-value", "partial": 1})
    assert body == {"output": {"partial": 1}, "error": "***"}


# -- encode --------------------------------------------------------------------


def test_encode_keeps_non_ascii() -> None:
    data = encode({"output": "héllo 世界 🚀"})
    assert "世界 🚀".encode("utf-8") in data
    assert b"\\u" not in data
    assert json.loads(data.decode("utf-8")) == {"output": "héllo 世界 🚀"}


def test_encode_is_plain_json() -> None:
    body = {"output": {"a": [1, 2.5, None, True, "s"]}, "stopPod": True}
    assert json.loads(encode(body)) == body


@pytest.mark.parametrize(
    "body, type_name",
    [
        ({"output": b"raw bytes"}, "bytes"),
        ({"output": {"nested": [{1, 2}]}}, "set"),
        ({"output": object()}, "object"),
        ({"output": {"k": bytearray(b"x")}}, "bytearray"),
    ],
)
def test_encode_refuses_non_json(body: Any, type_name: str) -> None:
    with pytest.raises(OutputNotSerializable) as info:
        encode(body)
    assert type_name in info.value.value_type
    assert isinstance(info.value, WavespeedError) and isinstance(info.value, TypeError)
    assert "JSON" in str(info.value)


# -- Job -----------------------------------------------------------------------


def test_job_is_a_dict_with_hooks() -> None:
    channel = object()
    job = Job({"id": "j1", "input": {"x": 1}, "webhook": "http://hook"}, channel)
    assert isinstance(job, dict)
    assert job["input"] == {"x": 1} and job["webhook"] == "http://hook"
    assert job.id == "j1"
    assert job.channel is channel
    assert isinstance(job.cancelled, threading.Event) and not job.cancelled.is_set()
    assert json.loads(json.dumps(job)) == {"id": "j1", "input": {"x": 1}, "webhook": "http://hook"}


def test_job_id_is_a_string() -> None:
    assert Job({"id": 123, "input": None}).id == "123"


@pytest.mark.parametrize(
    "make_copy",
    [copy.copy, copy.deepcopy, lambda j: pickle.loads(pickle.dumps(j))],
    ids=["copy", "deepcopy", "pickle"],
)
def test_job_copies_are_plain_dicts(make_copy: Any) -> None:
    job = Job({"id": "j1", "input": {"x": [1]}}, channel=object())
    dup = make_copy(job)
    assert type(dup) is dict
    assert dup == {"id": "j1", "input": {"x": [1]}}


def test_job_deepcopy_is_deep() -> None:
    job = Job({"id": "j1", "input": {"x": [1]}})
    dup = copy.deepcopy(job)
    dup["input"]["x"].append(2)
    assert job["input"]["x"] == [1]


def test_job_result_is_frozen() -> None:
    result = JobResult("j1", {"output": 1}, b'{"output":1}')
    assert (result.is_stream, result.refresh, result.failed, result.cancelled) == (
        False,
        False,
        False,
        False,
    )
    with pytest.raises(Exception):
        result.failed = True  # type: ignore[misc]
