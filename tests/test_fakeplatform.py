"""Self-tests of the fake job platform used by the worker tests."""

import threading
import time
from typing import Any, Iterator, Optional

import pytest
import requests

try:
    from tests.fakeplatform import FakePlatform, Fault
except ImportError:  # tests/ run as a plain directory on sys.path
    from fakeplatform import FakePlatform, Fault  # type: ignore[no-redef]

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def take_url(p: FakePlatform, worker: str = "pod-1", **query: Any) -> str:
    qs = "".join("&%s=%s" % kv for kv in query.items())
    return "%s/v2/%s/job-take/%s?gpu=test%s" % (p.url, p.endpoint, worker, qs)


def done_url(p: FakePlatform, job_id: str, route: str = "job-done", worker: str = "pod-1") -> str:
    return "%s/v2/%s/%s/%s/%s?gpu=test&isStream=false" % (p.url, p.endpoint, route, worker, job_id)


class Background:
    """Run one call in a thread and collect its result or exception."""

    def __init__(self, fn: Any) -> None:
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.elapsed = 0.0
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Any) -> None:
        start = time.monotonic()
        try:
            self.result = fn()
        except BaseException as e:  # noqa: B902 - reported to the test
            self.error = e
        self.elapsed = time.monotonic() - start

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


# -- job take -----------------------------------------------------------------


def test_single_take(fp: FakePlatform, session: requests.Session) -> None:
    job_id = fp.add_job({"x": 1}, webhook="http://hook")
    assert job_id == "job-1"
    r = session.get(take_url(fp, job_in_progress=0), headers={"Authorization": "test-key"}, timeout=5)
    assert r.status_code == 200
    assert r.json() == {"id": "job-1", "input": {"x": 1}, "webhook": "http://hook"}
    assert r.headers["Content-Length"] == str(len(r.content))
    assert fp.taken() == ["job-1"]
    (rec,) = fp.requests("job-take")
    assert rec.method == "GET" and rec.route == "job-take" and rec.worker_id == "pod-1"
    assert rec.query == {"gpu": "test", "job_in_progress": "0"}
    assert rec.headers["authorization"] == "test-key"
    assert rec.status == 200 and rec.body == b""
    # Queue drained: the next take is empty.
    assert session.get(take_url(fp), timeout=5).status_code == 204


def test_empty_take_answers_204_at_once(fp: FakePlatform, session: requests.Session) -> None:
    start = time.monotonic()
    r = session.get(take_url(fp), timeout=5)
    assert r.status_code == 204 and r.content == b""
    assert time.monotonic() - start < 1.0
    assert fp.taken() == []


def test_batch_take_bounded_by_batch_size(fp: FakePlatform, session: requests.Session) -> None:
    ids = fp.add_jobs(range(5))
    assert ids == ["job-1", "job-2", "job-3", "job-4", "job-5"]
    url = "%s/v2/ep/job-take-batch/pod-1?gpu=test&job_in_progress=1&batch_size=3" % fp.url
    first = session.get(url, timeout=5)
    assert first.status_code == 200
    assert [j["id"] for j in first.json()] == ids[:3]
    second = session.get(url, timeout=5).json()
    assert [j["input"] for j in second] == [3, 4]
    assert session.get(url, timeout=5).status_code == 204
    assert fp.taken() == ids
    assert fp.requests("job-take-batch")[0].query["batch_size"] == "3"


def test_raw_items_and_requeue(fp: FakePlatform, session: requests.Session) -> None:
    fp.add_raw({"input": 1})  # malformed: no id
    fp.add_raw([1, "x"])
    job = fp.add_job("again")
    assert session.get(take_url(fp), timeout=5).json() == {"input": 1}
    assert session.get(take_url(fp), timeout=5).json() == [1, "x"]
    assert session.get(take_url(fp), timeout=5).json()["id"] == job
    fp.requeue(job)
    assert fp.pending() == 1
    assert session.get(take_url(fp), timeout=5).json() == {"id": job, "input": "again"}
    assert fp.taken() == [job, job]
    with pytest.raises(KeyError):
        fp.requeue("nope")


def test_longpoll_returns_early_when_a_job_arrives() -> None:
    with FakePlatform(longpoll=5.0) as p:
        held = Background(lambda: requests.get(take_url(p), timeout=10))
        assert p.wait_for(lambda q: len(q.requests("job-take")) == 1, timeout=5)
        p.add_job("late")
        assert held.join(timeout=3)
        assert held.error is None
        assert held.result.status_code == 200 and held.result.json()["input"] == "late"
        assert held.elapsed < 3.0


def test_longpoll_times_out_with_204() -> None:
    with FakePlatform(longpoll=0.3) as p:
        start = time.monotonic()
        r = requests.get(take_url(p), timeout=5)
        elapsed = time.monotonic() - start
        assert r.status_code == 204
        assert 0.25 <= elapsed < 2.0


def test_stop_wakes_held_longpoll_promptly() -> None:
    p = FakePlatform(longpoll=30.0).start()
    try:
        held = Background(lambda: requests.get(take_url(p), timeout=20))
        assert p.wait_for(lambda q: len(q.requests("job-take")) == 1, timeout=5)
    finally:
        start = time.monotonic()
        p.stop()
        stop_took = time.monotonic() - start
    assert held.join(timeout=3)
    assert stop_took < 2.0
    assert held.error is None, held.error
    assert held.result.status_code == 204
    # Stopping twice is harmless.
    p.stop()


# -- faults ---------------------------------------------------------------------


def test_scripted_faults_apply_in_order_then_normal(fp: FakePlatform, session: requests.Session) -> None:
    fp.add_job("kept")
    fp.script("job-take", Fault(500, b"boom"), Fault.json([1, "x"]), Fault(429, headers={"Retry-After": "1"}))
    r1 = session.get(take_url(fp), timeout=5)
    assert (r1.status_code, r1.content) == (500, b"boom")
    r2 = session.get(take_url(fp), timeout=5)
    assert r2.status_code == 200 and r2.json() == [1, "x"]
    r3 = session.get(take_url(fp), timeout=5)
    assert r3.status_code == 429 and r3.headers["Retry-After"] == "1"
    # Faults never consumed the queued job; normal behaviour resumes.
    r4 = session.get(take_url(fp), timeout=5)
    assert r4.json()["input"] == "kept"
    recs = fp.requests("job-take")
    assert [r.status for r in recs] == [500, 200, 429, 200]
    assert [r.faulted for r in recs] == [True, True, True, False]
    # Every request went over one keep-alive connection.
    assert len({r.conn_id for r in recs}) == 1


def test_reset_raises_connection_error(fp: FakePlatform, session: requests.Session) -> None:
    fp.script("job-done", Fault(reset=True))
    with pytest.raises(requests.ConnectionError):
        session.post(done_url(fp, "j1"), data=b'{"output": 1}', timeout=5)
    # The next post goes through on a fresh connection.
    assert session.post(done_url(fp, "j1"), data=b'{"output": 2}', timeout=5).status_code == 200
    recs = fp.requests("job-done")
    assert [r.status for r in recs] == [None, 200]
    assert recs[0].conn_id != recs[1].conn_id
    assert fp.results("j1") == [{"output": 2}]
    assert fp.results("j1", include_rejected=True) == [{"output": 1}, {"output": 2}]


def test_delay_fault_outlasts_client_timeout(fp: FakePlatform, session: requests.Session) -> None:
    fp.script("ping", Fault(200, b"{}", delay=1.0), Fault(200, b"{}", delay=0.2))
    with pytest.raises(requests.Timeout):
        session.get("%s/v2/ep/ping/pod-1" % fp.url, timeout=0.3)
    start = time.monotonic()
    r = session.get("%s/v2/ep/ping/pod-1" % fp.url, timeout=5)
    assert r.status_code == 200 and time.monotonic() - start >= 0.19
    assert len(fp.pings()) == 2


def test_route_delay_holds_every_request_then_answers_normally(
    fp: FakePlatform, session: requests.Session
) -> None:
    fp.delay("job-stream", 0.3)
    url = done_url(fp, "j1", route="job-stream")
    for i in range(2):
        start = time.monotonic()
        r = session.post(url, data=b'{"output": %d}' % i, timeout=5)
        assert r.status_code == 200 and time.monotonic() - start >= 0.29
    fp.delay("job-stream", 0)
    start = time.monotonic()
    assert session.post(url, data=b'{"output": 2}', timeout=5).status_code == 200
    assert time.monotonic() - start < 0.29
    assert fp.stream("j1") == [0, 1, 2]
    with pytest.raises(ValueError):
        fp.delay("no-such-route", 1)


def test_unknown_paths_and_wrong_methods(fp: FakePlatform, session: requests.Session) -> None:
    assert session.get("%s/health" % fp.url, timeout=5).status_code == 404
    assert session.get("%s/v2/other-ep/job-take/pod-1" % fp.url, timeout=5).status_code == 404
    assert session.post(take_url(fp), data=b"{}", timeout=5).status_code == 405
    assert [r.route for r in fp.requests()] == ["other", "other", "job-take"]


def test_require_auth() -> None:
    with FakePlatform(require_auth=True) as p:
        assert requests.get(take_url(p), timeout=5).status_code == 401
        assert requests.get(take_url(p), headers={"Authorization": "test-key"}, timeout=5).status_code == 204
        assert requests.get(take_url(p), headers={"Authorization": "Bearer test-key"}, timeout=5).status_code == 204


# -- results, progress, stream ---------------------------------------------------------


def test_results_progress_and_stream(fp: FakePlatform, session: requests.Session) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    post = lambda url, body: session.post(url, data=body.encode(), headers=headers, timeout=5)  # noqa: E731
    assert post(done_url(fp, "j1"), '{"status": "IN_PROGRESS", "output": "25%"}').json() == {}
    post(done_url(fp, "j1", route="job-stream"), '{"output": "a"}')
    post(done_url(fp, "j1", route="job-stream"), '{"output": {"b": 2}}')
    post(done_url(fp, "j1"), '{"status": "IN_PROGRESS", "output": {"pct": 50}}')
    post(done_url(fp, "j1"), '{"output": ["a", {"b": 2}]}')
    post(done_url(fp, "j2"), '{"error": "bad"}')
    assert fp.progress("j1") == ["25%", {"pct": 50}]
    assert fp.stream("j1") == ["a", {"b": 2}]
    assert fp.results("j1") == [{"output": ["a", {"b": 2}]}]
    assert fp.results() == {"j1": [{"output": ["a", {"b": 2}]}], "j2": [{"error": "bad"}]}
    assert fp.results("missing") == [] and fp.progress("missing") == [] and fp.stream("missing") == []
    (final,) = fp.result_requests("j1")
    assert final.job_id == "j1" and final.worker_id == "pod-1"
    assert final.query["isStream"] == "false"
    assert final.headers["content-type"] == "application/x-www-form-urlencoded"
    assert len(fp.requests("job-done")) == 4 and len(fp.requests("job-stream")) == 2


def test_rejected_posts_are_not_results(fp: FakePlatform, session: requests.Session) -> None:
    fp.script("job-done", Fault(500))
    assert session.post(done_url(fp, "j1"), data=b'{"output": 1}', timeout=5).status_code == 500
    assert fp.results() == {}
    assert session.post(done_url(fp, "j1"), data=b'{"output": 1}', timeout=5).status_code == 200
    assert fp.results("j1") == [{"output": 1}]
    fp.result_status = 400  # emulate Waverless refusing a result
    assert session.post(done_url(fp, "j2"), data=b'{"output": 1}', timeout=5).status_code == 400
    assert fp.results("j2") == []
    assert fp.result_requests("j2", include_rejected=True)[0].status == 400
    assert not fp.wait_results(2, timeout=0.05)


def test_wait_results_wakes_on_posts(fp: FakePlatform) -> None:
    ids = fp.add_jobs(["a", "b", "c"])

    def worker() -> None:
        with requests.Session() as s:
            while True:
                r = s.get(take_url(fp), timeout=5)
                if r.status_code == 204:
                    return
                job = r.json()
                s.post(done_url(fp, job["id"]), data=b'{"status": "IN_PROGRESS", "output": 1}', timeout=5)
                s.post(done_url(fp, job["id"]), json={"output": job["input"]}, timeout=5)

    Background(worker)
    assert fp.wait_results(3, timeout=5)
    assert fp.results() == {i: [{"output": v}] for i, v in zip(ids, "abc")}
    assert fp.wait_for(lambda p: len(p.requests("job-take")) == 4, timeout=5)


def test_many_jobs_over_keepalive(fp: FakePlatform, session: requests.Session) -> None:
    n = 300
    fp.add_jobs(range(n))
    start = time.monotonic()
    url = "%s/v2/ep/job-take-batch/pod-1?gpu=test&batch_size=4" % fp.url
    while True:
        r = session.get(url, timeout=5)
        if r.status_code == 204:
            break
        for job in r.json():
            session.post(done_url(fp, job["id"]), json={"output": job["input"]}, timeout=5)
    assert fp.wait_results(n, timeout=5)
    assert time.monotonic() - start < 5.0
    assert len({r.conn_id for r in fp.requests()}) == 1


# -- job stop ---------------------------------------------------------------------


def test_stop_job(fp: FakePlatform, session: requests.Session) -> None:
    url = "%s/v2/ep/job-stop/pod-1?gpu=test&job_in_progress=1" % fp.url
    assert session.get(url, timeout=5).status_code == 204
    fp.stop_job("j1")
    fp.stop_job("j2")
    r = session.get(url, timeout=5)
    assert r.status_code == 200 and r.json() == {"jobsToStop": ["j1", "j2"]}
    assert session.get(url, timeout=5).status_code == 204
    assert fp.requests("job-stop")[0].worker_id == "pod-1"


def test_held_job_stop_wakes_on_stop_job() -> None:
    with FakePlatform(longpoll=5.0) as p:
        url = "%s/v2/ep/job-stop/pod-1?gpu=test" % p.url
        held = Background(lambda: requests.get(url, timeout=10))
        assert p.wait_for(lambda q: len(q.requests("job-stop")) == 1, timeout=5)
        p.stop_job("j9")
        assert held.join(timeout=3) and held.error is None
        assert held.result.json() == {"jobsToStop": ["j9"]}


# -- env -------------------------------------------------------------------------


def fill(template: str, worker: str, job: str, pod_var: str) -> str:
    """What a worker does with a template (PROTOCOL.md section 2)."""
    return template.replace("$" + pod_var, worker).replace("$ID", job)


def test_env_runpod(fp: FakePlatform, session: requests.Session) -> None:
    env = fp.env("w-7", RUNPOD_PING_INTERVAL="500")
    base = fp.url + "/v2/ep"
    assert env == {
        "RUNPOD_WEBHOOK_GET_JOB": base + "/job-take/$ID?gpu=test",
        "RUNPOD_WEBHOOK_POST_OUTPUT": base + "/job-done/$RUNPOD_POD_ID/$ID?gpu=test",
        "RUNPOD_WEBHOOK_POST_STREAM": base + "/job-stream/$RUNPOD_POD_ID/$ID?gpu=test",
        "RUNPOD_WEBHOOK_PING": base + "/ping/$RUNPOD_POD_ID?gpu=test",
        "RUNPOD_POD_ID": "w-7",
        "RUNPOD_ENDPOINT_ID": "ep",
        "RUNPOD_AI_API_KEY": "test-key",
        "RUNPOD_PING_INTERVAL": "500",
    }
    job = fp.add_job(1)
    take = fill(env["RUNPOD_WEBHOOK_GET_JOB"], "w-7", "w-7", "RUNPOD_POD_ID") + "&job_in_progress=0"
    assert session.get(take, timeout=5).json()["id"] == job
    done = fill(env["RUNPOD_WEBHOOK_POST_OUTPUT"], "w-7", job, "RUNPOD_POD_ID") + "&isStream=false"
    assert session.post(done, json={"output": 1}, timeout=5).status_code == 200
    assert fp.result_requests(job)[0].worker_id == "w-7"
    assert session.get(fill(env["RUNPOD_WEBHOOK_PING"], "w-7", "", "RUNPOD_POD_ID"), timeout=5).status_code == 200
    assert fp.requests("job-take")[0].worker_id == "w-7"


def test_env_waverless_and_no_key() -> None:
    with FakePlatform(style="waverless", api_key=None, endpoint="wv") as p:
        env = p.env("pod-a")
        base = p.url + "/v2/wv"
        assert env == {
            "WAVERLESS_WEBHOOK_GET_JOB": base + "/job-take/$ID?",
            "WAVERLESS_WEBHOOK_POST_OUTPUT": base + "/job-done/$WAVERLESS_POD_ID/$ID?",
            "WAVERLESS_WEBHOOK_POST_STREAM": base + "/job-stream/$WAVERLESS_POD_ID/$ID?",
            "WAVERLESS_WEBHOOK_PING": base + "/ping/$WAVERLESS_POD_ID",
            "WAVERLESS_POD_ID": "pod-a",
            "WAVERLESS_ENDPOINT_ID": "wv",
        }
        job = p.add_job({"k": "v"})
        take = fill(env["WAVERLESS_WEBHOOK_GET_JOB"], "pod-a", "pod-a", "WAVERLESS_POD_ID") + "&job_in_progress=0"
        assert requests.get(take, timeout=5).json()["input"] == {"k": "v"}
        assert p.requests("job-take")[0].query == {"job_in_progress": "0"}
        stream = fill(env["WAVERLESS_WEBHOOK_POST_STREAM"], "pod-a", job, "WAVERLESS_POD_ID") + "&isStream=false"
        assert requests.post(stream, json={"output": "chunk"}, timeout=5).status_code == 200
        assert p.stream(job) == ["chunk"]
        assert requests.get(fill(env["WAVERLESS_WEBHOOK_PING"], "pod-a", "", "WAVERLESS_POD_ID"), timeout=5).ok
    with FakePlatform(style="waverless") as p:
        assert p.env()["WAVERLESS_API_KEY"] == "test-key"


def test_recorded_json_and_chunked_body(fp: FakePlatform, session: requests.Session) -> None:
    def gen() -> Iterator[bytes]:
        yield b'{"output": '
        yield b'"chunked"}'

    assert session.post(done_url(fp, "j1"), data=gen(), timeout=5).status_code == 200
    # The connection stayed usable after a chunked body.
    assert session.get(take_url(fp), timeout=5).status_code == 204
    (rec,) = fp.requests("job-done")
    assert rec.headers.get("transfer-encoding") == "chunked"
    assert rec.json() == {"output": "chunked"}
    assert fp.results("j1") == [{"output": "chunked"}]
