"""Wire tests of transport.py over real loopback sockets: PROTOCOL §3 (job take),
§4 (results), §5 (stream), §6 (progress), §7 (ping), §8 (authorization),
§9 (job stop), §17 (header-safe ids, bounded delivery), issue 9 (unreadable
job-take bodies, 3xx refusals, wall-clock result deadline, abort at shutdown)
and issue 15 (outcomes as enums).

The transport talks to the urllib3 pools under its ``requests`` sessions
directly, so ``responses`` (which patches the ``requests`` adapter) cannot
see its traffic: every test here runs against ``tests/fakeplatform.py``.
The retry tests therefore wait real backoffs (the result policy for a 2 s
deadline sleeps at most 1.5 s in all).
"""

import email.utils
import json
import socket
import threading
import time
from typing import Any, Iterator, List, Optional
from urllib.parse import unquote

import pytest
import requests
from urllib3.response import HTTPResponse

try:
    from tests.fakeplatform import FakePlatform, Fault
    from tests.helpers import wait_until
except ImportError:  # tests/ run as a plain directory on sys.path
    from fakeplatform import FakePlatform, Fault  # type: ignore[no-redef]
    from helpers import wait_until  # type: ignore[no-redef]

from wavespeed import __version__
from wavespeed.serverless.config import Config
from wavespeed.serverless.job import encode
from wavespeed.serverless.transport import (
    CancelKind,
    CancelPoll,
    Delivery,
    Outcome,
    TakeKind,
    Transport,
    describe,
    header_safe,
    job_url,
    parse_jobs,
    read_take_body,
    result_retry,
    retry_after_seconds,
    with_query,
)

pytestmark = pytest.mark.timeout(60)

KEY = "key-123"


def closed_port() -> int:
    """A loopback port nothing listens on (bind, note, close)."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return int(port)


def make_config(fp: FakePlatform, **overrides: Optional[str]) -> Config:
    env = fp.env(WAVESPEED_RESULT_DEADLINE="2")
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return Config.from_env(env, [], {"handler": lambda job: None})


@pytest.fixture
def fp() -> Iterator[FakePlatform]:
    with FakePlatform(api_key=KEY) as platform:
        yield platform


@pytest.fixture
def transport(fp: FakePlatform) -> Iterator[Transport]:
    t = Transport(make_config(fp))
    yield t
    t.close()


def one(fp: FakePlatform, route: str) -> Any:
    (request,) = fp.requests(route)
    return request


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


@pytest.mark.parametrize(
    "job_id, expected",
    [
        ("job-42", "job-42"),
        ("a/b?c&d=e#f", "a/b?c&d=e#f"),
        ("line\nbreak", "line%0Abreak"),
        ("crlf\r\nX-Evil: 1", "crlf%0D%0AX-Evil:%201"),
        ("50%", "50%25"),
        ("ünï", "%C3%BCn%C3%AF"),
        ("🚀", "%F0%9F%9A%80"),
        (" padded ", "%20padded%20"),
        ("tab\there", "tab%09here"),
    ],
)
def test_header_safe(job_id: str, expected: str) -> None:
    assert header_safe(job_id) == expected
    assert unquote(header_safe(job_id)) == job_id


def test_describe_names_the_root_cause_without_the_url_noise() -> None:
    with pytest.raises(requests.ConnectionError) as info:
        requests.get(f"http://127.0.0.1:{closed_port()}/x", timeout=2)
    text = describe(info.value)
    assert text.startswith("ConnectionError: ")
    assert "Connection refused" in text
    assert "Max retries" not in text and "/x" not in text


# -- outcomes are enums (issue 15) ---------------------------------------------


def test_delivery_ok_and_refused_follow_the_outcome_and_are_read_only() -> None:
    assert [(d.ok, d.refused) for d in (Delivery(o) for o in Outcome)] == [
        (True, False),
        (False, True),
        (False, False),
    ]
    delivery = Delivery(Outcome.FAILED, 503, "busy", 3)
    with pytest.raises(AttributeError):
        delivery.ok = True  # type: ignore[misc]
    with pytest.raises(AttributeError):
        delivery.outcome = Outcome.DELIVERED  # type: ignore[misc]


def test_the_kinds_are_distinct_enum_members() -> None:
    assert {k.name for k in TakeKind} == {"JOBS", "EMPTY", "THROTTLED", "ERROR"}
    assert {k.name for k in Outcome} == {"DELIVERED", "REFUSED", "FAILED"}
    assert {k.name for k in CancelKind} == {"NO_URL", "ERROR", "NONE", "JOBS"}
    # Not strings: a comparison with the old string values must not pass silently.
    assert TakeKind.EMPTY != "empty" and CancelKind.NONE != "none"  # type: ignore[comparison-overlap]


# -- job take: PROTOCOL §3, row by row ------------------------------------------


def take_answering(fp: FakePlatform, transport: Transport, fault: Fault) -> Any:
    fp.script("job-take", fault)
    return transport.take(1, False)


def test_take_one_job(fp: FakePlatform, transport: Transport) -> None:
    job_id = fp.add_job({"prompt": "hi"}, webhook="http://hook", batchId="b")
    result = transport.take(1, False)
    assert result.kind is TakeKind.JOBS
    assert result.jobs == [
        {"id": job_id, "input": {"prompt": "hi"}, "webhook": "http://hook", "batchId": "b"}
    ]  # extra fields are kept
    assert result.malformed == []


def test_take_batch(fp: FakePlatform, transport: Transport) -> None:
    ids = fp.add_jobs([1, None])
    result = transport.take(4, False)
    assert (result.kind, result.jobs) == (
        TakeKind.JOBS,
        [{"id": ids[0], "input": 1}, {"id": ids[1], "input": None}],
    )


def test_take_empty_list(fp: FakePlatform, transport: Transport) -> None:
    result = take_answering(fp, transport, Fault.json([]))
    assert (result.kind, result.jobs) == (TakeKind.EMPTY, [])


def test_take_missing_id(fp: FakePlatform, transport: Transport) -> None:
    result = take_answering(fp, transport, Fault.json({"input": {"x": 1}}))
    assert (result.kind, result.jobs, result.malformed) == (TakeKind.EMPTY, [], [])


def test_take_missing_input_is_malformed(fp: FakePlatform, transport: Transport) -> None:
    result = take_answering(fp, transport, Fault.json({"id": "j9"}))
    assert result.kind is TakeKind.JOBS  # the worker must still answer it
    assert result.jobs == []
    assert [job_id for job_id, _ in result.malformed] == ["j9"]
    assert "input" in result.malformed[0][1]


def test_take_list_with_good_bad_and_junk(fp: FakePlatform, transport: Transport) -> None:
    body = [{"id": "ok", "input": 1}, {"id": "bad"}, {"input": 2}, "junk", 7]
    result = take_answering(fp, transport, Fault.json(body))
    assert result.kind is TakeKind.JOBS
    assert result.jobs == [{"id": "ok", "input": 1}]
    assert [job_id for job_id, _ in result.malformed] == ["bad"]


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fault(204), id="204"),
        pytest.param(Fault(200, b""), id="empty-body"),
        pytest.param(Fault(200, b"  \n"), id="blank-body"),
        pytest.param(Fault(200, b"<html>busy</html>"), id="non-json"),
        pytest.param(Fault(200, b'{"id": '), id="truncated-json"),
        pytest.param(Fault(200, b'"just a string"'), id="json-string"),
        pytest.param(Fault(400, b"flashboot"), id="400"),
    ],
)
def test_take_no_job(fp: FakePlatform, transport: Transport, fault: Fault) -> None:
    result = take_answering(fp, transport, fault)
    assert (result.kind, result.jobs, result.malformed) == (TakeKind.EMPTY, [], [])


def test_take_429_without_retry_after(fp: FakePlatform, transport: Transport) -> None:
    result = take_answering(fp, transport, Fault(429))
    assert (result.kind, result.retry_after) == (TakeKind.THROTTLED, None)


def test_take_429_retry_after_seconds(fp: FakePlatform, transport: Transport) -> None:
    result = take_answering(fp, transport, Fault(429, headers={"Retry-After": "7"}))
    assert (result.kind, result.retry_after) == (TakeKind.THROTTLED, 7.0)


def test_take_429_retry_after_http_date(fp: FakePlatform, transport: Transport) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    result = take_answering(fp, transport, Fault(429, headers={"Retry-After": when}))
    assert result.kind is TakeKind.THROTTLED
    assert result.retry_after is not None and 20.0 <= result.retry_after <= 31.0


@pytest.mark.parametrize("status", [301, 302, 401, 403, 404, 500, 502, 503])
def test_take_http_error(fp: FakePlatform, transport: Transport, status: int) -> None:
    fault = Fault(status, headers={"Location": f"{fp.url}/elsewhere"})
    result = take_answering(fp, transport, fault)
    assert result.kind is TakeKind.ERROR
    assert str(status) in result.detail
    assert len(fp.requests()) == 1  # the fetcher owns the backoff; redirects are not followed


def test_take_connection_refused(fp: FakePlatform) -> None:
    dead = f"http://127.0.0.1:{closed_port()}/v2/ep/job-take/$ID"
    t = Transport(make_config(fp, RUNPOD_WEBHOOK_GET_JOB=dead))
    try:
        result = t.take(1, False)
    finally:
        t.close()
    assert result.kind is TakeKind.ERROR
    assert "Connection refused" in result.detail


def test_take_reset_connection(fp: FakePlatform, transport: Transport) -> None:
    result = take_answering(fp, transport, Fault(reset=True))
    assert result.kind is TakeKind.ERROR and result.detail


def test_parse_jobs_direct() -> None:
    assert parse_jobs({"id": "a", "input": {}}).jobs == [{"id": "a", "input": {}}]
    assert parse_jobs({"id": "", "input": {}}).kind is TakeKind.EMPTY


# -- job take: bodies that cannot be parsed (issue 9) -------------------------------


# Too deep for json.loads on every supported Python: 3.9-3.12 stop near 1,000
# levels, 3.13 parses 5,000 and stops before 10,000.
TOO_DEEP = 20_000


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def test_a_body_nested_too_deeply_is_a_malformed_job(
    fp: FakePlatform, transport: Transport
) -> None:
    body = b'{"id": "deep-1", "input": {"x": ' + deep(100_000) + b"}}"
    with pytest.raises(RecursionError):
        json.loads(body)  # what killed the fetcher thread before
    result = take_answering(fp, transport, Fault(200, body))
    assert result.kind is TakeKind.JOBS
    assert result.jobs == []
    [(job_id, why)] = result.malformed
    assert job_id == "deep-1"
    assert "RecursionError" in why


def test_the_top_level_id_is_read_even_after_the_nesting_and_not_a_nested_one() -> None:
    body = b'{"input": {"id": "inner", "v": ' + deep(TOO_DEEP) + b'}, "id": 42, "x": "}{\\""}'
    result = read_take_body(body)
    assert [job_id for job_id, _ in result.malformed] == ["42"]


def test_a_batch_with_one_unreadable_job_still_runs_the_others() -> None:
    body = (
        b'[{"id": "a", "input": 1}, {"id": "b", "input": '
        + deep(TOO_DEEP)
        + b'}, {"id": "c", "input": "\\u00e9,]"}]'
    )
    result = read_take_body(body)
    assert result.kind is TakeKind.JOBS
    assert result.jobs == [{"id": "a", "input": 1}, {"id": "c", "input": "é,]"}]
    assert [job_id for job_id, _ in result.malformed] == ["b"]


@pytest.mark.parametrize(
    "body, ids",
    [
        pytest.param(b'{"id": "u1", "input": "\xff\xfe"}', ["u1"], id="invalid-utf8"),
        pytest.param(b'{"id": "t1", "input": {"prompt": "cut', ["t1"], id="truncated"),
        pytest.param(b'[{"id": "a", "input": 1}, {"id": "b", "inp', ["b"], id="truncated-batch"),
        pytest.param(b'{"input": ' + deep(TOO_DEEP) + b"}", [], id="deep-without-id"),
        pytest.param(b"\x00\x01garbage{", [], id="garbage"),
    ],
)
def test_unreadable_bodies_never_raise(body: bytes, ids: List[str]) -> None:
    result = read_take_body(body)
    assert [job_id for job_id, _ in result.malformed] == ids
    assert result.kind is (TakeKind.JOBS if ids or result.jobs else TakeKind.EMPTY)


def test_salvage_stays_linear_on_a_body_cut_inside_an_escaped_string() -> None:
    # 200,000 escaped quotes, cut before the string closes: a scanner that retried
    # from every quote would run for hours (the test's timeout ends it).
    body = b'[{"id": "ok", "input": 1}, {"id": "cut-1", "input": {"json": "' + b'\\"' * 200_000
    result = read_take_body(body)
    assert result.jobs == [{"id": "ok", "input": 1}]
    assert [job_id for job_id, _ in result.malformed] == ["cut-1"]


def test_the_id_is_found_after_a_large_string() -> None:
    body = (
        b'{"input": {"image": "'
        + b"QUJD" * (2 << 20)
        + b'"}, "id": "after-8mb", "x": '
        + deep(TOO_DEEP)
        + b"}"
    )
    assert [job_id for job_id, _ in read_take_body(body).malformed] == ["after-8mb"]


# -- job take: URL shape ---------------------------------------------------------


def test_take_url_single(fp: FakePlatform, transport: Transport) -> None:
    transport.take(1, False)
    transport.take(1, True)
    first, second = fp.requests("job-take")
    assert first.path == "/v2/ep/job-take/pod-1?gpu=test&job_in_progress=0"
    assert second.path == "/v2/ep/job-take/pod-1?gpu=test&job_in_progress=1"


@pytest.mark.parametrize("free", [2, 4, 16])
def test_take_url_batch(fp: FakePlatform, transport: Transport, free: int) -> None:
    ids = fp.add_jobs(["a", "b"])
    result = transport.take(free, True)
    assert [job["id"] for job in result.jobs] == ids
    request = one(fp, "job-take-batch")
    assert request.path.split("?")[0] == "/v2/ep/job-take-batch/pod-1"
    assert request.query == {"gpu": "test", "job_in_progress": "1", "batch_size": str(free)}


@pytest.mark.parametrize(
    "template, expected",
    [
        (
            "http://p.test/v2/ep/job-take/$ID",
            "http://p.test/v2/ep/job-take/pod-1?job_in_progress=0",
        ),
        (
            "http://p.test/v2/ep/job-take/$ID?",
            "http://p.test/v2/ep/job-take/pod-1?job_in_progress=0",
        ),
        (
            "http://p.test/v2/ep/job-take/$ID?gpu=x",
            "http://p.test/v2/ep/job-take/pod-1?gpu=x&job_in_progress=0",
        ),
    ],
)
def test_take_url_query_joining(fp: FakePlatform, template: str, expected: str) -> None:
    t = Transport(make_config(fp, RUNPOD_WEBHOOK_GET_JOB=template))
    try:
        assert t.take_url(1, False) == expected  # builds the URL; sends nothing
    finally:
        t.close()


def test_take_url_batch_from_bare_template(fp: FakePlatform) -> None:
    t = Transport(make_config(fp, RUNPOD_WEBHOOK_GET_JOB="http://p.test/v2/ep/job-take/$ID"))
    try:
        assert (
            t.take_url(3, False)
            == "http://p.test/v2/ep/job-take-batch/pod-1?job_in_progress=0&batch_size=3"
        )
    finally:
        t.close()


def test_take_url_without_job_take_path_never_batches(fp: FakePlatform) -> None:
    t = Transport(make_config(fp, RUNPOD_WEBHOOK_GET_JOB="http://p.test/custom/$ID?q=1"))
    try:
        assert t.take_url(5, False) == "http://p.test/custom/pod-1?q=1&job_in_progress=0"
    finally:
        t.close()


def test_take_headers(fp: FakePlatform, transport: Transport) -> None:
    transport.take(1, False)
    headers = one(fp, "job-take").headers
    assert headers["authorization"] == KEY  # raw, no "Bearer"
    assert "wavespeed" in headers["user-agent"]
    assert "x-request-id" not in headers


def test_abort_fetch_cuts_an_open_long_poll() -> None:
    with FakePlatform(api_key=KEY, longpoll=30) as held:
        t = Transport(make_config(held))
        results: List[Any] = []
        thread = threading.Thread(target=lambda: results.append(t.take(1, False)))
        thread.start()
        try:
            assert held.wait_for(lambda f: len(f.requests("job-take")) == 1, 5)
            cut = time.monotonic()
            t.abort_fetch()
            thread.join(5)
            assert not thread.is_alive()
            assert time.monotonic() - cut < 1.0
            assert results[0].kind is TakeKind.ERROR
        finally:
            t.close()


# -- results: PROTOCOL §4 --------------------------------------------------------


def test_post_result_url_body_and_headers(fp: FakePlatform, transport: Transport) -> None:
    payload = encode({"output": {"text": "héllo 世界"}})
    delivery = transport.post_result("job-42", payload)
    assert (delivery.outcome, delivery.status, delivery.tries) == (Outcome.DELIVERED, 200, 1)
    assert delivery.ok and not delivery.refused
    request = one(fp, "job-done")
    assert request.path == "/v2/ep/job-done/pod-1/job-42?gpu=test&isStream=false"
    assert request.body == payload  # the exact bytes, no re-encoding
    assert request.headers["authorization"] == KEY
    assert request.headers["x-request-id"] == "job-42"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.headers["content-length"] == str(len(payload))
    assert "wavespeed" in request.headers["user-agent"]


def test_post_result_stream_flag(fp: FakePlatform, transport: Transport) -> None:
    assert transport.post_result("j1", b'{"output":[]}', is_stream=True).ok
    assert one(fp, "job-done").query["isStream"] == "true"


def test_post_result_quotes_job_id(fp: FakePlatform, transport: Transport) -> None:
    assert transport.post_result("a/b", b"{}").ok
    request = one(fp, "job-done")
    assert request.path.split("?")[0] == "/v2/ep/job-done/pod-1/a%2Fb"
    assert request.job_id == "a/b"


@pytest.mark.parametrize(
    "job_id",
    ["line\nbreak", "crlf\r\nX-Injected: yes", "ünïcödé", "🚀-job", "50% done", "a/b?c#d"],
)
def test_header_unsafe_job_ids_are_delivered(
    fp: FakePlatform, transport: Transport, job_id: str
) -> None:
    # Each of these ids used to make http.client refuse the header: the result was lost.
    delivery = transport.post_result(job_id, b'{"output":1}')
    assert delivery.ok, delivery
    assert transport.post_chunk(job_id, b'{"output":2}').ok
    assert transport.post_progress(job_id, b'{"status":"IN_PROGRESS","output":3}').ok
    for request in fp.requests("job-done") + fp.requests("job-stream"):
        assert request.job_id == job_id  # the path segment, percent-decoded
        assert unquote(request.headers["x-request-id"]) == job_id
        assert "x-injected" not in request.headers


def test_request_id_is_per_request(fp: FakePlatform, transport: Transport) -> None:
    transport.post_result("a", b"{}")
    transport.post_result("b", b"{}")
    transport.post_chunk("c", b'{"output":1}')
    transport.take(1, True)
    transport.ping(["b"])
    ids = [r.headers.get("x-request-id") for r in sorted(fp.requests(), key=lambda r: r.time)]
    assert ids == ["a", "b", "c", None, None]
    for session in (transport.fetch, transport.result, transport.stream, transport.best_effort):
        assert "X-Request-ID" not in session.headers
        assert "Authorization" not in session.headers


def test_concurrent_posts_keep_their_own_headers(fp: FakePlatform, transport: Transport) -> None:
    def post(n: int) -> None:
        for k in range(10):
            job_id = f"job-{n}-{k}"
            assert transport.post_result(job_id, encode({"output": job_id})).ok

    threads = [threading.Thread(target=post, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    requests_ = fp.requests("job-done")
    assert len(requests_) == 80
    for request in requests_:
        assert request.headers["x-request-id"] == request.job_id
        assert request.json() == {"output": request.job_id}


def test_sequential_posts_reuse_one_connection(fp: FakePlatform, transport: Transport) -> None:
    for n in range(5):
        assert transport.post_result(f"j{n}", b"{}").ok
    assert len({r.conn_id for r in fp.requests("job-done")}) == 1


def test_no_authorization_without_key(fp: FakePlatform) -> None:
    t = Transport(make_config(fp, RUNPOD_AI_API_KEY=None))
    try:
        t.take(1, False)
        t.post_result("j1", b"{}")
        t.ping([])
        assert len(fp.requests()) == 3
        for request in fp.requests():
            assert "authorization" not in request.headers
    finally:
        t.close()


def test_an_api_key_that_would_inject_a_header_is_never_sent(fp: FakePlatform) -> None:
    """http.client refused it at each request; the transport's prepared headers refuse it too."""
    t = Transport(make_config(fp, RUNPOD_AI_API_KEY="key\r\nX-Injected: 1"))
    try:
        taken = t.take(1, False)
        assert taken.kind is TakeKind.ERROR and "Invalid header" in taken.detail
        for delivery in (
            t.post_result("j1", b"{}"),
            t.post_chunk("j1", b"{}"),
            t.post_progress("j1", b"{}"),
        ):
            assert delivery.outcome is Outcome.FAILED and "Invalid header" in delivery.detail
        polled = t.poll_cancels()
        assert polled.kind is CancelKind.ERROR and "Invalid header" in polled.detail
        assert t.ping([]) is False
        assert fp.requests() == []
    finally:
        t.close()


@pytest.mark.parametrize(
    "statuses",
    [[503, 200], [500, 502, 200], [429, 200], [504, 500, 503, 200]],
    ids=["503", "500-502", "429", "three-5xx"],
)
def test_result_retried_until_success(
    fp: FakePlatform, transport: Transport, statuses: List[int]
) -> None:
    fp.script("job-done", *(Fault(status) for status in statuses[:-1]))
    payload = b'{"output":1}'
    delivery = transport.post_result("j1", payload)
    assert delivery.ok and delivery.status == 200
    assert delivery.tries == len(statuses)
    assert [r.status for r in fp.requests("job-done")] == statuses
    assert all(r.body == payload for r in fp.requests("job-done"))


def test_result_gives_up_after_the_policy(fp: FakePlatform, transport: Transport) -> None:
    fp.result_status = 500
    delivery = transport.post_result("j1", b"{}")
    assert delivery.outcome is Outcome.FAILED
    assert delivery.status == 500
    assert len(fp.requests("job-done")) == result_retry(2.0).total + 1  # type: ignore[operator]


@pytest.mark.parametrize("status", [400, 401, 404, 413])
def test_result_4xx_not_retried_and_refused(
    fp: FakePlatform, transport: Transport, status: int
) -> None:
    fp.script("job-done", Fault(status, b"output must be an object"))
    delivery = transport.post_result("j1", b"[1]")
    assert delivery.outcome is Outcome.REFUSED and delivery.refused
    assert delivery.status == status
    assert "output must be an object" in delivery.detail
    assert len(fp.requests("job-done")) == 1


def test_refusal_detail_masks_the_api_key(fp: FakePlatform, transport: Transport) -> None:
    fp.script("job-done", Fault(400, f"bad request, Authorization: {KEY}"))
    delivery = transport.post_result("j1", b"{}")
    assert delivery.refused and KEY not in delivery.detail and "***" in delivery.detail


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_on_job_done_is_a_refusal_not_followed(
    fp: FakePlatform, transport: Transport, status: int
) -> None:
    target = f"{fp.url}/v2/ep/job-done/pod-1/moved?gpu=test"
    fp.script("job-done", Fault(status, headers={"Location": target}))
    delivery = transport.post_result("j1", b'{"output":1}')
    assert delivery.outcome is Outcome.REFUSED
    assert (delivery.status, delivery.tries) == (status, 1)
    assert "moved" in delivery.detail
    assert [r.job_id for r in fp.requests()] == ["j1"]  # not retried, not followed


def test_result_connection_refused_is_failed(fp: FakePlatform) -> None:
    dead = f"http://127.0.0.1:{closed_port()}/v2/ep/job-done/$RUNPOD_POD_ID/$ID"
    t = Transport(make_config(fp, RUNPOD_WEBHOOK_POST_OUTPUT=dead, WAVESPEED_RESULT_DEADLINE="1"))
    try:
        delivery = t.post_result("j1", b"{}")
    finally:
        t.close()
    assert delivery.outcome is Outcome.FAILED
    assert "Connection refused" in delivery.detail
    assert delivery.tries >= 2  # connection errors are retried


def test_post_chunk_goes_to_stream_url(fp: FakePlatform, transport: Transport) -> None:
    payload = encode({"output": "chunk"})
    assert transport.post_chunk("j1", payload).ok
    request = one(fp, "job-stream")
    assert request.path == "/v2/ep/job-stream/pod-1/j1?gpu=test&isStream=false"
    assert request.body == payload
    assert request.headers["x-request-id"] == "j1"


def test_post_chunk_retries_a_few_times(fp: FakePlatform, transport: Transport) -> None:
    fp.script("job-stream", Fault(503), Fault(502))
    delivery = transport.post_chunk("j1", b'{"output":1}')
    assert delivery.ok and delivery.tries == 3


def test_post_chunk_without_stream_url_is_refused(fp: FakePlatform) -> None:
    t = Transport(make_config(fp, RUNPOD_WEBHOOK_POST_STREAM=None))
    try:
        delivery = t.post_chunk("j1", b"{}")
        assert delivery.outcome is Outcome.REFUSED
        assert fp.requests() == []
    finally:
        t.close()


def test_post_progress_goes_to_done_url(fp: FakePlatform, transport: Transport) -> None:
    payload = encode({"status": "IN_PROGRESS", "output": {"pct": 50}})
    assert transport.post_progress("j1", payload).ok
    request = one(fp, "job-done")
    assert request.path == "/v2/ep/job-done/pod-1/j1?gpu=test&isStream=false"
    assert request.json() == {"status": "IN_PROGRESS", "output": {"pct": 50}}


def test_post_progress_is_retried_once_only(fp: FakePlatform, transport: Transport) -> None:
    fp.result_status = 503
    assert transport.post_progress("j1", b"{}").outcome is Outcome.FAILED
    assert len(fp.requests("job-done")) == 2


# -- results: a wall-clock deadline (issue 9 §2) ---------------------------------------


def test_a_retry_after_beyond_the_deadline_gives_up_at_once(
    fp: FakePlatform, transport: Transport
) -> None:
    fp.script("job-done", Fault(429, headers={"Retry-After": "120"}))
    start = time.monotonic()
    delivery = transport.post_result("j1", b"{}", deadline=time.monotonic() + 5)
    assert time.monotonic() - start < 1.0
    assert delivery.outcome is Outcome.FAILED and delivery.status == 429
    assert "deadline" in delivery.detail
    assert len(fp.requests("job-done")) == 1


def test_a_short_retry_after_is_honoured(fp: FakePlatform, transport: Transport) -> None:
    fp.script("job-done", Fault(429, headers={"Retry-After": "1"}))
    delivery = transport.post_result("j1", b"{}", deadline=time.monotonic() + 5)
    assert delivery.ok and delivery.tries == 2
    first, second = fp.requests("job-done")
    assert second.time - first.time >= 0.9


def test_a_platform_that_never_answers_is_bounded_by_the_deadline(
    fp: FakePlatform, transport: Transport
) -> None:
    fp.script("job-done", *[Fault(200, delay=20)] * 5)
    start = time.monotonic()
    delivery = transport.post_result("j1", b"{}", deadline=time.monotonic() + 1.0)
    elapsed = time.monotonic() - start
    assert 0.9 <= elapsed < 2.0, elapsed  # the read timeout was min(30 s, what remained)
    assert delivery.outcome is Outcome.FAILED
    assert "timed out" in delivery.detail.lower()


def test_without_a_deadline_the_configured_result_deadline_applies(fp: FakePlatform) -> None:
    t = Transport(make_config(fp, WAVESPEED_RESULT_DEADLINE="1"))
    fp.script("job-done", *[Fault(200, delay=20)] * 5)
    try:
        start = time.monotonic()
        delivery = t.post_result("j1", b"{}")
        assert time.monotonic() - start < 2.0
        assert delivery.outcome is Outcome.FAILED
    finally:
        t.close()


def test_a_deadline_already_passed_sends_nothing(fp: FakePlatform, transport: Transport) -> None:
    delivery = transport.post_result("j1", b"{}", deadline=time.monotonic() - 1)
    assert (delivery.outcome, delivery.tries) == (Outcome.FAILED, 0)
    assert fp.requests() == []


# -- abort_posts: bounded shutdown (issue 9 §2) ------------------------------------------


def post_in_thread(
    transport: Transport, results: List[Delivery], **kwargs: Any
) -> threading.Thread:
    thread = threading.Thread(
        target=lambda: results.append(transport.post_result("j1", b"{}", **kwargs)), daemon=True
    )
    thread.start()
    return thread


def assert_cut_within_a_second(
    transport: Transport, thread: threading.Thread, results: List[Delivery]
) -> None:
    cut = time.monotonic()
    transport.abort_posts()
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - cut < 1.0
    assert results[0].outcome is Outcome.FAILED
    assert "abort" in results[0].detail


def test_abort_posts_cuts_a_post_waiting_for_its_answer(
    fp: FakePlatform, transport: Transport
) -> None:
    fp.script("job-done", Fault(200, delay=30))
    results: List[Delivery] = []
    thread = post_in_thread(transport, results, deadline=time.monotonic() + 30)
    assert fp.wait_for(lambda f: len(f.requests("job-done")) == 1, 5)
    assert_cut_within_a_second(transport, thread, results)


def test_abort_posts_wakes_a_post_waiting_to_retry(fp: FakePlatform, transport: Transport) -> None:
    fp.script("job-done", Fault(503, headers={"Retry-After": "20"}))
    results: List[Delivery] = []
    thread = post_in_thread(transport, results, deadline=time.monotonic() + 30)
    assert fp.wait_for(lambda f: len(f.requests("job-done")) == 1, 5)
    assert_cut_within_a_second(transport, thread, results)
    assert len(fp.requests("job-done")) == 1


def syn_sent_to(port: int) -> bool:
    """Whether a socket of this host is in SYN_SENT towards 127.0.0.1:port."""
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[3] == "02" and fields[2].endswith(":%04X" % port):
                return True
    return False


def test_abort_posts_cuts_a_post_still_connecting(fp: FakePlatform) -> None:
    # A listener that never accepts, its queue full: the kernel drops further
    # SYNs, so a connect() to it hangs (as to a platform that is down).
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.2)  # let the handshakes that can complete, complete
        probe = socket.socket()
        probe.settimeout(0.5)
        try:
            probe.connect(("127.0.0.1", port))
            pytest.skip("this kernel accepted a connection past a full backlog")
        except socket.timeout:
            pass
        finally:
            probe.close()
        done = f"http://127.0.0.1:{port}/v2/ep/job-done/$RUNPOD_POD_ID/$ID"
        t = Transport(
            make_config(fp, RUNPOD_WEBHOOK_POST_OUTPUT=done, WAVESPEED_RESULT_DEADLINE="30")
        )
        try:
            results: List[Delivery] = []
            thread = post_in_thread(t, results)
            assert wait_until(lambda: syn_sent_to(port), 5), "the post never started connecting"
            assert thread.is_alive()
            assert_cut_within_a_second(t, thread, results)
        finally:
            t.close()
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_after_abort_posts_every_post_fails_at_once(fp: FakePlatform, transport: Transport) -> None:
    transport.abort_posts()
    for delivery in (
        transport.post_result("j1", b"{}"),
        transport.post_chunk("j1", b"{}"),
        transport.post_progress("j1", b"{}"),
    ):
        assert (delivery.outcome, delivery.tries) == (Outcome.FAILED, 0)
    assert fp.requests() == []
    # Taking jobs and the heartbeat are not posts: they still work.
    assert transport.ping([]) is True
    assert transport.take(1, False).kind is TakeKind.EMPTY


def test_close_makes_later_requests_fail_without_raising(fp: FakePlatform) -> None:
    t = Transport(make_config(fp))
    assert t.post_result("j1", b"{}").ok
    t.close()
    assert t.post_result("j2", b"{}").outcome is Outcome.FAILED
    assert t.take(1, False).kind is TakeKind.ERROR
    assert t.ping([]) is False


# -- ping: PROTOCOL §7, §17 ------------------------------------------------------------


def test_ping_idle_omits_job_id(fp: FakePlatform, transport: Transport) -> None:
    assert transport.ping([]) is True
    request = one(fp, "ping")
    assert request.path.split("?")[0] == "/v2/ep/ping/pod-1"
    assert request.query == {
        "gpu": "test",
        "runpod_version": "1.12.0",  # the runpod protocol version spoken
        "wavespeed_version": __version__,
    }
    assert request.headers["authorization"] == KEY


def test_ping_busy_lists_job_ids(fp: FakePlatform, transport: Transport) -> None:
    assert transport.ping(["j1", "j2", "j3"]) is True
    request = one(fp, "ping")
    assert "job_id=j1,j2,j3" in request.path
    assert request.query["job_id"] == "j1,j2,j3"
    assert request.query["runpod_version"] == "1.12.0"


def test_ping_failure_is_false(fp: FakePlatform, transport: Transport) -> None:
    fp.script("ping", Fault(404))
    assert transport.ping([]) is False


def test_ping_connection_error_is_false(fp: FakePlatform) -> None:
    dead = f"http://127.0.0.1:{closed_port()}/v2/ep/ping/$RUNPOD_POD_ID"
    t = Transport(make_config(fp, RUNPOD_WEBHOOK_PING=dead))
    try:
        assert t.ping(["j1"]) is False
    finally:
        t.close()


def test_ping_without_url_sends_nothing(fp: FakePlatform) -> None:
    t = Transport(make_config(fp, RUNPOD_WEBHOOK_PING=None))
    try:
        assert t.ping(["j1"]) is False
        assert fp.requests() == []
    finally:
        t.close()


# -- job stop (cancel): PROTOCOL §9, issue 15 --------------------------------------------


@pytest.mark.parametrize(
    "fault, expected",
    [
        pytest.param(
            Fault.json({"jobsToStop": ["a", "b"]}),
            CancelPoll(CancelKind.JOBS, ["a", "b"]),
            id="ids",
        ),
        pytest.param(
            Fault.json({"jobsToStop": [1, None, "c"]}),
            CancelPoll(CancelKind.JOBS, ["1", "c"]),
            id="mixed-ids",
        ),
        pytest.param(Fault.json({"jobsToStop": []}), CancelPoll(CancelKind.NONE), id="empty-list"),
        pytest.param(Fault.json({"jobsToStop": None}), CancelPoll(CancelKind.NONE), id="null"),
        pytest.param(Fault.json({}), CancelPoll(CancelKind.NONE), id="no-key"),
        pytest.param(Fault(204), CancelPoll(CancelKind.NONE), id="204"),
        pytest.param(Fault(200, b""), CancelPoll(CancelKind.NONE), id="empty-body"),
    ],
)
def test_poll_cancels_shapes(
    fp: FakePlatform, transport: Transport, fault: Fault, expected: CancelPoll
) -> None:
    fp.script("job-stop", fault)
    assert transport.poll_cancels() == expected
    request = one(fp, "job-stop")
    assert request.path == "/v2/ep/job-stop/pod-1?gpu=test"
    assert request.headers["authorization"] == KEY


@pytest.mark.parametrize(
    "fault, detail",
    [
        pytest.param(Fault(500, b"internal error"), "HTTP 500", id="500"),
        pytest.param(Fault(404, b"no such route"), "HTTP 404", id="404"),
        pytest.param(Fault(200, b"nope"), "unreadable", id="non-json"),
        pytest.param(Fault.json(["a"]), "unreadable", id="list-body"),
        pytest.param(Fault.json({"jobsToStop": "a"}), "unreadable", id="string-ids"),
        pytest.param(
            Fault(200, b'{"jobsToStop": ' + deep(100_000) + b"}"), "unreadable", id="deep"
        ),
        pytest.param(Fault(reset=True), "Error", id="reset"),
    ],
)
def test_poll_cancels_errors(
    fp: FakePlatform, transport: Transport, fault: Fault, detail: str
) -> None:
    fp.script("job-stop", fault)
    poll = transport.poll_cancels()
    assert poll.kind is CancelKind.ERROR and poll.ids == []
    assert detail in poll.detail


def test_poll_cancels_without_a_channel_is_no_url_not_an_error(fp: FakePlatform) -> None:
    t = Transport(make_config(fp, RUNPOD_WEBHOOK_GET_JOB=f"{fp.url}/custom/$ID"))
    try:
        assert t.poll_cancels() == CancelPoll(CancelKind.NO_URL)
        assert fp.requests() == []
    finally:
        t.close()


def test_poll_cancels_request_failure_is_an_error_with_its_cause(fp: FakePlatform) -> None:
    dead = f"http://127.0.0.1:{closed_port()}/v2/ep/job-take/$ID"
    t = Transport(make_config(fp, RUNPOD_WEBHOOK_GET_JOB=dead))
    try:
        poll = t.poll_cancels()
    finally:
        t.close()
    assert poll.kind is CancelKind.ERROR
    assert "Connection refused" in poll.detail


def test_poll_cancels_real_stop(fp: FakePlatform, transport: Transport) -> None:
    fp.stop_job("job-7")
    assert transport.poll_cancels() == CancelPoll(CancelKind.JOBS, ["job-7"])


def test_answers_are_dicts_the_worker_expects(fp: FakePlatform, transport: Transport) -> None:
    # The take result carries the job dicts as parsed; nothing of urllib3 leaks out.
    job_id = fp.add_job({"k": [1, 2]})
    (job,) = transport.take(1, False).jobs
    assert type(job) is dict and job == {"id": job_id, "input": {"k": [1, 2]}}
    assert isinstance(transport.post_result(job_id, b"{}"), Delivery)
