"""Wire tests of transport.py with ``responses``: PROTOCOL §3 (job take), §4 (results),
§7 (ping), §8 (authorization) and §9 (job stop).

``responses`` replays urllib3's status retries without sleeping, so the
retry counts below are exact and the tests stay fast. The config still uses a
small result deadline, so a change that made these real sleeps stays short.
"""

import email.utils
import json
import time
from typing import Any, Dict, Iterator, List, Optional
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from urllib3.response import HTTPResponse

from wavespeed import __version__
from wavespeed.serverless.config import Config
from wavespeed.serverless.job import encode
from wavespeed.serverless.transport import (
    Transport,
    describe,
    job_url,
    parse_jobs,
    result_retry,
    retry_after_seconds,
    with_query,
)

pytestmark = pytest.mark.timeout(60)

BASE = "http://platform.test/v2/ep"
TAKE = f"{BASE}/job-take/pod-1"
TAKE_BATCH = f"{BASE}/job-take-batch/pod-1"
STOP = f"{BASE}/job-stop/pod-1"
DONE = f"{BASE}/job-done/pod-1"
STREAM = f"{BASE}/job-stream/pod-1"
PING = f"{BASE}/ping/pod-1"
KEY = "key-123"


def make_config(**overrides: Optional[str]) -> Config:
    env = {
        "RUNPOD_WEBHOOK_GET_JOB": f"{BASE}/job-take/$ID?gpu=x",
        "RUNPOD_WEBHOOK_POST_OUTPUT": f"{BASE}/job-done/$RUNPOD_POD_ID/$ID?gpu=x",
        "RUNPOD_WEBHOOK_POST_STREAM": f"{BASE}/job-stream/$RUNPOD_POD_ID/$ID?gpu=x",
        "RUNPOD_WEBHOOK_PING": f"{BASE}/ping/$RUNPOD_POD_ID?gpu=x",
        "RUNPOD_AI_API_KEY": KEY,
        "RUNPOD_POD_ID": "pod-1",
        "WAVESPEED_RESULT_DEADLINE": "2",
    }
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return Config.from_env(env, [], {"handler": lambda job: None})


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def transport() -> Iterator[Transport]:
    t = Transport(make_config())
    yield t
    t.close()


def query(url: str) -> Dict[str, List[str]]:
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


def path(url: str) -> str:
    return urlsplit(url).path


# -- helpers -------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, expected",
    [
        ("http://h/take/w?gpu=x", "http://h/take/w?gpu=x&a=1"),
        ("http://h/take/w?", "http://h/take/w?a=1"),
        ("http://h/take/w", "http://h/take/w?a=1"),
        ("http://h/take/w?gpu=x&", "http://h/take/w?gpu=x&a=1"),
    ],
)
def test_with_query(url: str, expected: str) -> None:
    assert with_query(url, {"a": 1}) == expected


def test_with_query_no_params() -> None:
    assert with_query("http://h/x?y=1", {}) == "http://h/x?y=1"


def test_job_url_quotes_the_job_id() -> None:
    assert job_url("http://h/done/w/$ID?x=1", "a/b c&d") == "http://h/done/w/a%2Fb%20c%26d?x=1"


def test_retry_after_seconds() -> None:
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("") is None
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(" 1.5 ") == 1.5
    assert retry_after_seconds("-4") == 0.0
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 20.0 <= retry_after_seconds(future) <= 31.0  # type: ignore[operator]
    past = email.utils.formatdate(time.time() - 300, usegmt=True)
    assert retry_after_seconds(past) == 0.0


@pytest.mark.parametrize("deadline", [1.0, 5.0, 60.0, 300.0])
def test_result_retry_sleeps_fit_the_deadline(deadline: float) -> None:
    # Walk the policy as urllib3 would on a run of 500s and add up its sleeps.
    retry = result_retry(deadline)
    slept = 0.0
    attempts = 1
    while True:
        try:
            retry = retry.increment(method="POST", url="/", response=HTTPResponse(status=500))
        except Exception:  # MaxRetryError: the policy gave up
            break
        slept += retry.get_backoff_time()
        attempts += 1
        assert attempts < 100
    assert attempts >= 2
    assert slept <= deadline + 8.0
    assert 500 in retry.status_forcelist and 429 in retry.status_forcelist


# -- job take: PROTOCOL §3, row by row ------------------------------------------


def _take(rsps: responses.RequestsMock, transport: Transport, **response: Any) -> Any:
    rsps.add(responses.GET, TAKE, **response)
    return transport.take(1, False)


def test_take_one_job(rsps: responses.RequestsMock, transport: Transport) -> None:
    job = {"id": "j1", "input": {"prompt": "hi"}, "webhook": "http://hook", "batchId": "b"}
    result = _take(rsps, transport, json=job)
    assert result.kind == "jobs"
    assert result.jobs == [job]  # extra fields are kept
    assert result.malformed == []


def test_take_list(rsps: responses.RequestsMock, transport: Transport) -> None:
    jobs = [{"id": "j1", "input": 1}, {"id": "j2", "input": None}]
    result = _take(rsps, transport, json=jobs)
    assert (result.kind, result.jobs) == ("jobs", jobs)


def test_take_empty_list(rsps: responses.RequestsMock, transport: Transport) -> None:
    result = _take(rsps, transport, json=[])
    assert (result.kind, result.jobs) == ("empty", [])


def test_take_missing_id(rsps: responses.RequestsMock, transport: Transport) -> None:
    result = _take(rsps, transport, json={"input": {"x": 1}})
    assert (result.kind, result.jobs, result.malformed) == ("empty", [], [])


def test_take_missing_input_is_malformed(
    rsps: responses.RequestsMock, transport: Transport
) -> None:
    result = _take(rsps, transport, json={"id": "j9"})
    assert result.kind == "jobs"  # the worker must still answer it
    assert result.jobs == []
    assert [job_id for job_id, _ in result.malformed] == ["j9"]
    assert "input" in result.malformed[0][1]


def test_take_list_with_good_bad_and_junk(
    rsps: responses.RequestsMock, transport: Transport
) -> None:
    body = [{"id": "ok", "input": 1}, {"id": "bad"}, {"input": 2}, "junk", 7]
    result = _take(rsps, transport, json=body)
    assert result.kind == "jobs"
    assert result.jobs == [{"id": "ok", "input": 1}]
    assert [job_id for job_id, _ in result.malformed] == ["bad"]


@pytest.mark.parametrize(
    "response",
    [
        pytest.param({"status": 204}, id="204"),
        pytest.param({"status": 200, "body": b""}, id="empty-body"),
        pytest.param({"status": 200, "body": b"  \n"}, id="blank-body"),
        pytest.param({"status": 200, "body": b"<html>busy</html>"}, id="non-json"),
        pytest.param({"status": 200, "body": b"{\"id\": "}, id="truncated-json"),
        pytest.param({"status": 400, "body": b"flashboot"}, id="400"),
    ],
)
def test_take_no_job(
    rsps: responses.RequestsMock, transport: Transport, response: Dict[str, Any]
) -> None:
    result = _take(rsps, transport, **response)
    assert (result.kind, result.jobs, result.malformed) == ("empty", [], [])


def test_take_429_without_retry_after(rsps: responses.RequestsMock, transport: Transport) -> None:
    result = _take(rsps, transport, status=429)
    assert (result.kind, result.retry_after) == ("throttled", None)


def test_take_429_retry_after_seconds(rsps: responses.RequestsMock, transport: Transport) -> None:
    result = _take(rsps, transport, status=429, headers={"Retry-After": "7"})
    assert (result.kind, result.retry_after) == ("throttled", 7.0)


def test_take_429_retry_after_http_date(
    rsps: responses.RequestsMock, transport: Transport
) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    result = _take(rsps, transport, status=429, headers={"Retry-After": when})
    assert result.kind == "throttled"
    assert result.retry_after is not None and 20.0 <= result.retry_after <= 31.0


@pytest.mark.parametrize("status", [401, 403, 404, 500, 502, 503])
def test_take_http_error(
    rsps: responses.RequestsMock, transport: Transport, status: int
) -> None:
    result = _take(rsps, transport, status=status)
    assert result.kind == "error"
    assert str(status) in result.detail
    assert len(rsps.calls) == 1  # the fetcher owns the backoff, not urllib3


@pytest.mark.parametrize(
    "exc",
    [requests.ConnectionError("refused"), requests.ReadTimeout("slow")],
    ids=["connection", "timeout"],
)
def test_take_network_error(
    rsps: responses.RequestsMock, transport: Transport, exc: Exception
) -> None:
    result = _take(rsps, transport, body=exc)
    assert result.kind == "error"
    assert type(exc).__name__ in result.detail


def test_parse_jobs_direct() -> None:
    assert parse_jobs({"id": "a", "input": {}}).jobs == [{"id": "a", "input": {}}]
    assert parse_jobs({"id": "", "input": {}}).kind == "empty"


# -- job take: URL shape ---------------------------------------------------------


def test_take_url_single(rsps: responses.RequestsMock, transport: Transport) -> None:
    rsps.add(responses.GET, TAKE, status=204)
    transport.take(1, False)
    transport.take(1, True)
    first, second = (call.request.url for call in rsps.calls)
    assert first == f"{TAKE}?gpu=x&job_in_progress=0"
    assert second == f"{TAKE}?gpu=x&job_in_progress=1"


@pytest.mark.parametrize("free", [2, 4, 16])
def test_take_url_batch(rsps: responses.RequestsMock, transport: Transport, free: int) -> None:
    rsps.add(responses.GET, TAKE_BATCH, json=[{"id": "a", "input": 1}, {"id": "b", "input": 2}])
    result = transport.take(free, True)
    assert [job["id"] for job in result.jobs] == ["a", "b"]
    url = rsps.calls[0].request.url
    assert path(url) == "/v2/ep/job-take-batch/pod-1"
    assert query(url) == {"gpu": ["x"], "job_in_progress": ["1"], "batch_size": [str(free)]}


@pytest.mark.parametrize(
    "template, expected",
    [
        ("http://p.test/v2/ep/job-take/$ID", "http://p.test/v2/ep/job-take/pod-1?job_in_progress=0"),
        ("http://p.test/v2/ep/job-take/$ID?", "http://p.test/v2/ep/job-take/pod-1?job_in_progress=0"),
        (
            "http://p.test/v2/ep/job-take/$ID?gpu=x",
            "http://p.test/v2/ep/job-take/pod-1?gpu=x&job_in_progress=0",
        ),
    ],
)
def test_take_url_query_joining(template: str, expected: str) -> None:
    t = Transport(make_config(RUNPOD_WEBHOOK_GET_JOB=template))
    try:
        assert t.take_url(1, False) == expected
    finally:
        t.close()


def test_take_url_batch_from_bare_template() -> None:
    t = Transport(make_config(RUNPOD_WEBHOOK_GET_JOB="http://p.test/v2/ep/job-take/$ID"))
    try:
        assert (
            t.take_url(3, False)
            == "http://p.test/v2/ep/job-take-batch/pod-1?job_in_progress=0&batch_size=3"
        )
    finally:
        t.close()


def test_take_url_without_job_take_path_never_batches() -> None:
    t = Transport(make_config(RUNPOD_WEBHOOK_GET_JOB="http://p.test/custom/$ID?q=1"))
    try:
        assert t.take_url(5, False) == "http://p.test/custom/pod-1?q=1&job_in_progress=0"
    finally:
        t.close()


def test_take_headers(rsps: responses.RequestsMock, transport: Transport) -> None:
    rsps.add(responses.GET, TAKE, status=204)
    transport.take(1, False)
    headers = rsps.calls[0].request.headers
    assert headers["Authorization"] == KEY  # raw, no "Bearer"
    assert "wavespeed" in headers["User-Agent"]
    assert "X-Request-ID" not in headers


# -- results: PROTOCOL §4 --------------------------------------------------------


def test_post_result_url_body_and_headers(
    rsps: responses.RequestsMock, transport: Transport
) -> None:
    rsps.add(responses.POST, f"{DONE}/job-42", status=200)
    payload = encode({"output": {"text": "héllo 世界"}})
    delivery = transport.post_result("job-42", payload)
    assert delivery.ok and delivery.status == 200
    request = rsps.calls[0].request
    assert request.url == f"{DONE}/job-42?gpu=x&isStream=false"
    assert request.body == payload  # the exact bytes, no re-encoding
    assert request.headers["Authorization"] == KEY
    assert request.headers["X-Request-ID"] == "job-42"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert "wavespeed" in request.headers["User-Agent"]


def test_post_result_stream_flag(rsps: responses.RequestsMock, transport: Transport) -> None:
    rsps.add(responses.POST, f"{DONE}/j1", status=200)
    assert transport.post_result("j1", b'{"output":[]}', is_stream=True).ok
    assert query(rsps.calls[0].request.url)["isStream"] == ["true"]


def test_post_result_quotes_job_id(rsps: responses.RequestsMock, transport: Transport) -> None:
    rsps.add(responses.POST, f"{DONE}/a%2Fb", status=200)
    assert transport.post_result("a/b", b"{}").ok
    assert path(rsps.calls[0].request.url) == "/v2/ep/job-done/pod-1/a%2Fb"


def test_request_id_is_per_request_not_on_session(
    rsps: responses.RequestsMock, transport: Transport
) -> None:
    rsps.add(responses.POST, f"{DONE}/a", status=200)
    rsps.add(responses.POST, f"{DONE}/b", status=200)
    rsps.add(responses.POST, f"{STREAM}/c", status=200)
    rsps.add(responses.GET, TAKE, status=204)
    rsps.add(responses.GET, PING, status=200)
    transport.post_result("a", b"{}")
    transport.post_result("b", b"{}")
    transport.post_chunk("c", b'{"output":1}')
    transport.take(1, True)
    transport.ping(["b"])
    ids = [call.request.headers.get("X-Request-ID") for call in rsps.calls]
    assert ids == ["a", "b", "c", None, None]
    for session in (transport.fetch, transport.result, transport.stream, transport.best_effort):
        assert "X-Request-ID" not in session.headers
        assert "Authorization" not in session.headers


def test_no_authorization_without_key(rsps: responses.RequestsMock) -> None:
    t = Transport(make_config(RUNPOD_AI_API_KEY=None))
    try:
        rsps.add(responses.GET, TAKE, status=204)
        rsps.add(responses.POST, f"{DONE}/j1", status=200)
        rsps.add(responses.GET, PING, status=200)
        t.take(1, False)
        t.post_result("j1", b"{}")
        t.ping([])
        assert len(rsps.calls) == 3
        for call in rsps.calls:
            assert "Authorization" not in call.request.headers
    finally:
        t.close()


@pytest.mark.parametrize(
    "statuses",
    [[503, 200], [500, 502, 200], [429, 200], [504, 500, 503, 200]],
    ids=["503", "500-502", "429", "three-5xx"],
)
def test_result_retried_until_success(
    rsps: responses.RequestsMock, transport: Transport, statuses: List[int]
) -> None:
    for status in statuses:
        rsps.add(responses.POST, f"{DONE}/j1", status=status)
    payload = b'{"output":1}'
    delivery = transport.post_result("j1", payload)
    assert delivery.ok and delivery.status == 200
    assert len(rsps.calls) == len(statuses)
    assert all(call.request.body == payload for call in rsps.calls)


def test_result_gives_up_after_the_policy(
    rsps: responses.RequestsMock, transport: Transport
) -> None:
    rsps.add(responses.POST, f"{DONE}/j1", status=500, body=b"boom")
    delivery = transport.post_result("j1", b"{}")
    assert not delivery.ok and not delivery.refused
    assert delivery.status == 500
    assert len(rsps.calls) == result_retry(2.0).total + 1  # type: ignore[operator]


@pytest.mark.parametrize("status", [400, 401, 404, 413])
def test_result_4xx_not_retried_and_refused(
    rsps: responses.RequestsMock, transport: Transport, status: int
) -> None:
    rsps.add(responses.POST, f"{DONE}/j1", status=status, body=b"output must be an object")
    delivery = transport.post_result("j1", b"[1]")
    assert not delivery.ok and delivery.refused
    assert delivery.status == status
    assert "output must be an object" in delivery.detail
    assert len(rsps.calls) == 1


def test_result_connection_error(rsps: responses.RequestsMock, transport: Transport) -> None:
    rsps.add(responses.POST, f"{DONE}/j1", body=requests.ConnectionError("down"))
    delivery = transport.post_result("j1", b"{}")
    assert not delivery.ok and not delivery.refused
    assert "ConnectionError" in delivery.detail


def test_post_chunk_goes_to_stream_url(rsps: responses.RequestsMock, transport: Transport) -> None:
    rsps.add(responses.POST, f"{STREAM}/j1", status=200)
    payload = encode({"output": "chunk"})
    assert transport.post_chunk("j1", payload).ok
    request = rsps.calls[0].request
    assert request.url == f"{STREAM}/j1?gpu=x&isStream=false"
    assert request.body == payload
    assert request.headers["X-Request-ID"] == "j1"


def test_post_chunk_without_stream_url_is_refused(rsps: responses.RequestsMock) -> None:
    t = Transport(make_config(RUNPOD_WEBHOOK_POST_STREAM=None))
    try:
        delivery = t.post_chunk("j1", b"{}")
        assert not delivery.ok and delivery.refused
        assert len(rsps.calls) == 0
    finally:
        t.close()


def test_post_progress_goes_to_done_url(
    rsps: responses.RequestsMock, transport: Transport
) -> None:
    rsps.add(responses.POST, f"{DONE}/j1", status=200)
    payload = encode({"status": "IN_PROGRESS", "output": {"pct": 50}})
    assert transport.post_progress("j1", payload).ok
    request = rsps.calls[0].request
    assert request.url == f"{DONE}/j1?gpu=x&isStream=false"
    assert json.loads(request.body) == {"status": "IN_PROGRESS", "output": {"pct": 50}}


# -- ping: PROTOCOL §7 -----------------------------------------------------------


def test_ping_idle_omits_job_id(rsps: responses.RequestsMock, transport: Transport) -> None:
    rsps.add(responses.GET, PING, status=200)
    assert transport.ping([]) is True
    request = rsps.calls[0].request
    assert path(request.url) == "/v2/ep/ping/pod-1"
    assert query(request.url) == {"gpu": ["x"], "runpod_version": [__version__]}
    assert request.headers["Authorization"] == KEY


def test_ping_busy_lists_job_ids(rsps: responses.RequestsMock, transport: Transport) -> None:
    rsps.add(responses.GET, PING, status=200)
    assert transport.ping(["j1", "j2", "j3"]) is True
    url = rsps.calls[0].request.url
    assert "job_id=j1,j2,j3" in url
    assert query(url)["job_id"] == ["j1,j2,j3"]
    assert query(url)["runpod_version"] == [__version__]


def test_ping_failure_is_false(rsps: responses.RequestsMock, transport: Transport) -> None:
    rsps.add(responses.GET, PING, status=404)
    assert transport.ping([]) is False


def test_ping_connection_error_is_false(
    rsps: responses.RequestsMock, transport: Transport
) -> None:
    rsps.add(responses.GET, PING, body=requests.ConnectionError("down"))
    assert transport.ping(["j1"]) is False


def test_ping_without_url_sends_nothing(rsps: responses.RequestsMock) -> None:
    t = Transport(make_config(RUNPOD_WEBHOOK_PING=None))
    try:
        assert t.ping(["j1"]) is False
        assert len(rsps.calls) == 0
    finally:
        t.close()


# -- job stop: PROTOCOL §9 -------------------------------------------------------


@pytest.mark.parametrize(
    "response, expected",
    [
        pytest.param({"json": {"jobsToStop": ["a", "b"]}}, ["a", "b"], id="ids"),
        pytest.param({"json": {"jobsToStop": [1, None, "c"]}}, ["1", "c"], id="mixed-ids"),
        pytest.param({"json": {"jobsToStop": []}}, [], id="empty-list"),
        pytest.param({"json": {"jobsToStop": None}}, [], id="null"),
        pytest.param({"json": {}}, [], id="no-key"),
        pytest.param({"status": 204}, [], id="204"),
        pytest.param({"status": 200, "body": b""}, [], id="empty-body"),
        pytest.param({"status": 500, "body": b"internal error"}, None, id="500"),
        pytest.param(
            {"status": 500},
            None,
            id="500-empty-body",
        ),
        pytest.param({"status": 404, "body": b"no such route"}, None, id="404"),
        pytest.param({"status": 200, "body": b"nope"}, None, id="non-json"),
        pytest.param({"json": ["a"]}, None, id="list-body"),
        pytest.param({"body": requests.ConnectionError("down")}, None, id="connection-error"),
    ],
)
def test_poll_stops_shapes(
    rsps: responses.RequestsMock,
    transport: Transport,
    response: Dict[str, Any],
    expected: Optional[List[str]],
) -> None:
    rsps.add(responses.GET, STOP, **response)
    assert transport.poll_stops() == expected
    request = rsps.calls[0].request
    assert request.url == f"{STOP}?gpu=x"
    assert request.headers["Authorization"] == KEY


def test_poll_stops_disabled_without_job_take_path(rsps: responses.RequestsMock) -> None:
    t = Transport(make_config(RUNPOD_WEBHOOK_GET_JOB="http://p.test/custom/$ID"))
    try:
        assert t.poll_stops() is None
        assert len(rsps.calls) == 0
    finally:
        t.close()


def test_describe_names_the_root_cause_without_the_url_noise() -> None:
    import socket

    # A port that nothing listens on: bind one, note it, close it.
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(requests.ConnectionError) as info:
        requests.get(f"http://127.0.0.1:{port}/x", timeout=2)
    text = describe(info.value)
    assert text.startswith("ConnectionError: ")
    assert "Connection refused" in text
    assert "Max retries" not in text and "/x" not in text
