"""The local HTTP API (wavespeed.serverless.devserver).

Most tests drive the Flask app through its test client; jobs still run on
the endpoint's real thread pool through the real Runner. A few go over real
sockets: waitress on a port picked by the OS, a loopback webhook receiver,
and a subprocess started with --rp_serve_api.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest
import requests

import wavespeed.serverless as serverless
from wavespeed.serverless.config import Config
from wavespeed.serverless.devserver import ApiOptions, JobStore, create_app, make_server

pytestmark = pytest.mark.timeout(60)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable  # whichever environment runs the tests (venv, tox, conda)
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}


class Harness:
    """Makes apps, and on teardown opens every gate and closes every endpoint."""

    def __init__(self) -> None:
        self.apps: List[Any] = []
        self.gates: List[threading.Event] = []

    def gate(self) -> threading.Event:
        event = threading.Event()
        self.gates.append(event)
        return event

    def client(
        self, handler: Callable[..., Any], options: Optional[ApiOptions] = None, **config: Any
    ) -> Any:
        app = create_app(Config(handler=handler, **config), options=options or ApiOptions())
        self.apps.append(app)
        return app.test_client()

    def close(self) -> None:
        for gate in self.gates:
            gate.set()
        for app in self.apps:
            app.extensions["wavespeed"].close(wait=True)


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


def run(client: Any, body: Any = None, prefix: str = "", **kwargs: Any) -> Dict[str, Any]:
    response = client.post(f"{prefix}/run", json={"input": {}} if body is None else body, **kwargs)
    assert response.status_code == 200, response.get_data(as_text=True)
    doc = response.get_json()
    assert doc["status"] == "IN_QUEUE"
    return doc


def wait_status(
    client: Any, job_id: str, statuses: Any, timeout: float = 5.0, prefix: str = ""
) -> Dict[str, Any]:
    """Poll /status until the job is in one of ``statuses`` (bounded in time)."""
    wanted = {statuses} if isinstance(statuses, str) else set(statuses)
    deadline = time.monotonic() + timeout
    doc: Dict[str, Any] = {}
    while time.monotonic() < deadline:
        doc = client.get(f"{prefix}/status/{job_id}").get_json()
        if doc["status"] in wanted:
            return doc
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} never reached {wanted}; last: {doc}")


# -- routes and status transitions ------------------------------------------------------


def test_run_queues_and_runs_in_background(h: Harness) -> None:
    client = h.client(lambda job: {"echo": job["input"]})
    doc = run(client, {"input": {"x": 1}})
    uuid.UUID(doc["id"], version=4)  # unguessable ids
    final = wait_status(client, doc["id"], "COMPLETED")
    assert final["output"] == {"echo": {"x": 1}}
    assert isinstance(final["delayTime"], int) and isinstance(final["executionTime"], int)
    assert "error" not in final
    # POST /status answers the same document.
    assert client.post(f"/status/{doc['id']}").get_json()["output"] == {"echo": {"x": 1}}


def test_status_goes_in_queue_in_progress_completed(h: Harness) -> None:
    gate = h.gate()
    started = threading.Event()

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        started.set()
        assert gate.wait(5)
        return {"n": job["input"]["n"]}

    client = h.client(handler)  # concurrency 1
    first = run(client, {"input": {"n": 1}})
    assert started.wait(5)
    second = run(client, {"input": {"n": 2}})
    running = client.get(f"/status/{first['id']}").get_json()
    queued = client.get(f"/status/{second['id']}").get_json()
    assert running["status"] == "IN_PROGRESS" and "output" not in running
    assert queued["status"] == "IN_QUEUE" and "executionTime" not in queued
    time.sleep(0.05)  # let the queued job accumulate a visible delay
    gate.set()
    done1 = wait_status(client, first["id"], "COMPLETED")
    done2 = wait_status(client, second["id"], "COMPLETED")
    assert done1["output"] == {"n": 1} and done2["output"] == {"n": 2}
    assert done2["delayTime"] >= 50  # it waited for the only slot


def test_handler_exception_and_returned_error_are_failed(h: Harness) -> None:
    def handler(job: Dict[str, Any]) -> Any:
        if job["input"]["kind"] == "raise":
            raise ValueError("boom")
        return {"error": "bad prompt"}

    client = h.client(handler)
    raised = client.post("/runsync", json={"input": {"kind": "raise"}}).get_json()
    assert raised["status"] == "FAILED"
    details = json.loads(raised["error"])
    assert details["error_type"] == "<class 'ValueError'>" and details["error_message"] == "boom"
    returned = client.post("/runsync", json={"input": {"kind": "error"}}).get_json()
    assert returned["status"] == "FAILED" and returned["error"] == "bad prompt"


def test_execution_timeout_is_timed_out_and_late_result_discarded(h: Harness) -> None:
    returned = threading.Event()

    def handler(job: Any) -> Dict[str, Any]:
        job.cancelled.wait(5)  # a cooperative handler notices the timeout
        returned.set()
        return {"late": True}

    client = h.client(handler)
    doc = run(client, {"input": {}, "policy": {"executionTimeout": 100}})
    final = wait_status(client, doc["id"], "TIMED_OUT")
    assert "timeout" in final["error"]
    assert returned.wait(5)
    after = client.get(f"/status/{doc['id']}").get_json()
    assert after["status"] == "TIMED_OUT" and "output" not in after


def test_config_job_timeout_applies_without_policy(h: Harness) -> None:
    client = h.client(lambda job: job.cancelled.wait(5) and {"late": 1}, job_timeout=0.1)
    doc = client.post("/runsync", json={"input": {}}).get_json()
    assert doc["status"] == "TIMED_OUT"


def test_runsync_completes_or_answers_in_progress_after_wait(h: Harness) -> None:
    gate = h.gate()

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        if job["input"].get("block"):
            assert gate.wait(5)
        return {"ok": job["input"]}

    client = h.client(handler, api_concurrency=2)
    done = client.post("/runsync", json={"input": {"a": 1}}).get_json()
    assert done["status"] == "COMPLETED" and done["output"] == {"ok": {"a": 1}}

    pending = client.post("/runsync?wait=50", json={"input": {"block": True}}).get_json()
    assert pending["status"] == "IN_PROGRESS" and pending["id"]
    gate.set()
    assert wait_status(client, pending["id"], "COMPLETED")["output"] == {"ok": {"block": True}}


def test_stream_returns_new_chunks_incrementally(h: Harness) -> None:
    steps = [h.gate() for _ in range(2)]

    def handler(job: Dict[str, Any]) -> Iterator[Dict[str, int]]:
        yield {"i": 0}
        assert steps[0].wait(5)
        yield {"i": 1}
        yield {"i": 2}
        assert steps[1].wait(5)

    client = h.client(handler)
    doc = run(client)
    first = client.get(f"/stream/{doc['id']}?wait=5000").get_json()
    assert first["status"] == "IN_PROGRESS" and first["stream"] == [{"output": {"i": 0}}]
    again = client.post(f"/stream/{doc['id']}").get_json()  # nothing new yet
    assert again["stream"] == [] and again["status"] == "IN_PROGRESS"
    steps[0].set()
    chunks: List[Any] = []
    deadline = time.monotonic() + 5
    while len(chunks) < 2 and time.monotonic() < deadline:
        part = client.get(f"/stream/{doc['id']}?wait=1000").get_json()
        chunks += [c["output"] for c in part["stream"]]
    assert chunks == [{"i": 1}, {"i": 2}]
    steps[1].set()
    wait_status(client, doc["id"], "COMPLETED")
    last = client.get(f"/stream/{doc['id']}").get_json()
    assert last == {"id": doc["id"], "status": "COMPLETED", "stream": []}


def test_async_handlers_and_aggregate_stream_run_through_the_same_runner(h: Harness) -> None:
    import asyncio

    async def agen(job: Dict[str, Any]) -> Any:
        for i in range(3):
            await asyncio.sleep(0)
            yield i

    client = h.client(agen, return_aggregate_stream=True)
    doc = client.post("/runsync", json={"input": {}}).get_json()
    assert doc["status"] == "COMPLETED" and doc["output"] == [0, 1, 2]
    streamed = client.get(f"/stream/{doc['id']}").get_json()["stream"]
    assert [c["output"] for c in streamed] == [0, 1, 2]

    async def coro(job: Dict[str, Any]) -> Dict[str, Any]:
        await asyncio.sleep(0)
        return {"async": True, "refresh_worker": True}

    client2 = h.client(coro)
    doc2 = client2.post("/runsync", json={"input": {}}).get_json()
    assert doc2 == {**doc2, "status": "COMPLETED", "output": {"async": True}}
    assert "stopPod" not in doc2


def test_progress_updates_show_in_status_while_running(h: Harness) -> None:
    gate = h.gate()
    sent = threading.Event()

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        serverless.progress_update(job, {"step": 1, "of": 2})
        sent.set()
        assert gate.wait(5)
        return {"done": True}

    client = h.client(handler)
    doc = run(client)
    assert sent.wait(5)
    running = client.get(f"/status/{doc['id']}").get_json()
    assert running["status"] == "IN_PROGRESS" and running["output"] == {"step": 1, "of": 2}
    gate.set()
    assert wait_status(client, doc["id"], "COMPLETED")["output"] == {"done": True}


# -- cancel and purge --------------------------------------------------------------------


def test_cancel_a_queued_job_never_runs_it(h: Harness) -> None:
    gate = h.gate()
    started = threading.Event()
    ran: List[Any] = []

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        ran.append(job["input"])
        started.set()
        assert gate.wait(5)
        return {}

    client = h.client(handler)
    first = run(client, {"input": 1})
    assert started.wait(5)
    second = run(client, {"input": 2})
    cancelled = client.post(f"/cancel/{second['id']}").get_json()
    assert cancelled == {"id": second["id"], "status": "CANCELLED"}
    gate.set()
    wait_status(client, first["id"], "COMPLETED")
    assert client.get(f"/status/{second['id']}").get_json()["status"] == "CANCELLED"
    assert ran == [1]


def test_cancel_a_running_job_sets_its_flag_and_discards_its_result(h: Harness) -> None:
    started, finished = threading.Event(), threading.Event()
    saw_cancel: List[bool] = []

    def handler(job: Any) -> Dict[str, Any]:
        started.set()
        saw_cancel.append(job.cancelled.wait(5))
        finished.set()
        return {"late": "result"}

    client = h.client(handler)
    doc = run(client)
    assert started.wait(5)
    assert client.post(f"/cancel/{doc['id']}").get_json()["status"] == "CANCELLED"
    assert finished.wait(5) and saw_cancel == [True]
    after = client.get(f"/status/{doc['id']}").get_json()
    assert after["status"] == "CANCELLED" and "output" not in after
    # Cancelling a finished job changes nothing.
    other = h.client(lambda job: {"quick": True})
    done = other.post("/runsync", json={"input": {}}).get_json()
    assert other.post(f"/cancel/{done['id']}").get_json()["status"] == "COMPLETED"
    assert other.get(f"/status/{done['id']}").get_json()["output"] == {"quick": True}


def test_cancel_stops_a_generator_at_its_next_chunk(h: Harness) -> None:
    first = threading.Event()
    produced: List[int] = []

    def handler(job: Any) -> Iterator[int]:
        for i in range(1000):
            produced.append(i)
            yield i
            if i == 0:
                first.set()
                job.cancelled.wait(5)

    client = h.client(handler)
    doc = run(client)
    assert first.wait(5)
    client.post(f"/cancel/{doc['id']}")
    health: Dict[str, Any] = {}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the slot frees once the generator is closed
        health = client.get("/health").get_json()
        if health["workers"]["running"] == 0:
            break
        time.sleep(0.01)
    assert health["workers"]["running"] == 0
    assert len(produced) <= 2
    assert client.get(f"/status/{doc['id']}").get_json()["status"] == "CANCELLED"


def test_purge_queue_cancels_queued_jobs_only(h: Harness) -> None:
    gate = h.gate()
    started = threading.Event()

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        started.set()
        assert gate.wait(5)
        return {"n": job["input"]}

    client = h.client(handler)
    running = run(client, {"input": 0})
    assert started.wait(5)
    queued = [run(client, {"input": n}) for n in (1, 2)]
    assert client.get("/health").get_json()["jobs"]["inQueue"] == 2
    assert client.post("/purge-queue").get_json() == {"removed": 2, "status": "completed"}
    for doc in queued:
        assert client.get(f"/status/{doc['id']}").get_json()["status"] == "CANCELLED"
    gate.set()
    assert wait_status(client, running["id"], "COMPLETED")["output"] == {"n": 0}


def test_health_counts_jobs_and_workers(h: Harness) -> None:
    gate = h.gate()
    started = threading.Event()

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        if job["input"] == "fail":
            raise RuntimeError("no")
        if job["input"] == "block":
            started.set()
            assert gate.wait(5)
        return {}

    client = h.client(handler, api_concurrency=2)
    client.post("/runsync", json={"input": "ok"})
    client.post("/runsync", json={"input": "fail"})
    blocked = run(client, {"input": "block"})
    assert started.wait(5)
    health = client.get("/health").get_json()
    assert health == {
        "jobs": {"completed": 1, "failed": 1, "inProgress": 1, "inQueue": 0, "retried": 0},
        "workers": {"idle": 1, "running": 1},
    }
    gate.set()
    wait_status(client, blocked["id"], "COMPLETED")
    assert client.get("/health").get_json()["jobs"]["completed"] == 2


# -- every route under /v2/<endpoint_id>, openapi, the page ------------------------------


def test_every_route_also_under_v2_endpoint_prefix(h: Harness) -> None:
    def handler(job: Dict[str, Any]) -> Iterator[int]:
        yield 1
        yield 2

    client = h.client(handler, return_aggregate_stream=True)
    prefix = "/v2/my-endpoint"
    sync = client.post(f"{prefix}/runsync", json={"input": {}}).get_json()
    assert sync["status"] == "COMPLETED" and sync["output"] == [1, 2]
    doc = run(client, prefix=prefix)
    wait_status(client, doc["id"], "COMPLETED", prefix=prefix)
    stream = client.get(f"{prefix}/stream/{doc['id']}").get_json()
    assert [c["output"] for c in stream["stream"]] == [1, 2]
    assert client.post(f"{prefix}/cancel/{doc['id']}").get_json()["status"] == "COMPLETED"
    assert client.get(f"{prefix}/health").get_json()["jobs"]["completed"] == 2
    assert client.post(f"{prefix}/purge-queue").get_json()["removed"] == 0
    assert client.get(f"{prefix}/status/nope").status_code == 404


def test_openapi_describes_every_route_and_page_is_served(h: Harness) -> None:
    client = h.client(lambda job: {})
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    assert set(spec["paths"]) == {
        "/run",
        "/runsync",
        "/status/{job_id}",
        "/stream/{job_id}",
        "/cancel/{job_id}",
        "/health",
        "/purge-queue",
    }
    assert set(spec["paths"]["/status/{job_id}"]) == {"get", "post"}
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "<script" in html and "http://" not in html.replace("http://www.w3.org", "")
    assert "https://" not in html  # self-contained: nothing fetched from elsewhere


# -- bad requests ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, needle",
    [
        (b"{not json", "not valid JSON"),
        (b"", "JSON object"),
        (b"[1, 2]", "JSON object"),
        (b'{"prompt": "hi"}', '"input"'),
        (b'{"input": {}, "webhook": "ftp://x"}', "webhook"),
        (b'{"input": {}, "policy": {"executionTimeout": -1}}', "executionTimeout"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_bad_bodies_get_400_with_json_error(h: Harness, body: bytes, needle: str) -> None:
    client = h.client(lambda job: {})
    for route in ("/run", "/runsync", "/v2/ep/run"):
        response = client.post(route, data=body, content_type="application/json")
        assert response.status_code == 400
        assert needle in response.get_json()["error"]
    assert client.get("/health").get_json()["jobs"]["inQueue"] == 0


def test_body_over_the_limit_gets_413(h: Harness) -> None:
    client = h.client(lambda job: {}, options=ApiOptions(max_body=1000))
    big = json.dumps({"input": {"blob": "x" * 2000}})
    response = client.post("/run", data=big, content_type="application/json")
    assert response.status_code == 413
    assert "1000 bytes" in response.get_json()["error"]
    small = client.post("/runsync", json={"input": {"blob": "x" * 10}})
    assert small.status_code == 200


def test_unknown_ids_and_routes_get_404_json(h: Harness) -> None:
    client = h.client(lambda job: {})
    for method, path in (
        ("get", "/status/unknown"),
        ("post", "/status/unknown"),
        ("get", "/stream/unknown"),
        ("post", "/cancel/unknown"),
        ("get", "/no/such/route"),
    ):
        response = getattr(client, method)(path)
        assert response.status_code == 404 and "error" in response.get_json()
    assert client.get("/run").status_code == 405


# -- the job store ------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_finished_jobs_expire_after_the_ttl() -> None:
    from wavespeed.serverless.devserver import LocalEndpoint

    clock = FakeClock()
    config = Config(handler=lambda job: {"ok": 1})
    endpoint = LocalEndpoint(config, options=ApiOptions(ttl=60), clock=clock)
    app = create_app(config, endpoint=endpoint)
    client = app.test_client()
    try:
        doc = client.post("/runsync", json={"input": {}}).get_json()
        assert doc["status"] == "COMPLETED"
        clock.now += 59
        assert client.get(f"/status/{doc['id']}").status_code == 200
        clock.now += 2
        assert client.get(f"/status/{doc['id']}").status_code == 404
    finally:
        endpoint.close()


def test_store_is_bounded_and_refuses_when_all_jobs_are_live(h: Harness) -> None:
    gate = h.gate()

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        if job["input"] == "block":
            assert gate.wait(5)
        return {}

    client = h.client(handler, options=ApiOptions(max_jobs=2))
    first = client.post("/runsync", json={"input": "x"}).get_json()
    second = client.post("/runsync", json={"input": "x"}).get_json()
    third = client.post("/runsync", json={"input": "x"}).get_json()  # evicts the oldest finished
    assert client.get(f"/status/{first['id']}").status_code == 404
    assert client.get(f"/status/{second['id']}").status_code == 200
    assert client.get(f"/status/{third['id']}").status_code == 200
    run(client, {"input": "block"})
    run(client, {"input": "block"})
    refused = client.post("/run", json={"input": "x"})
    assert refused.status_code == 429 and "too many jobs" in refused.get_json()["error"]


def test_job_store_is_an_instance() -> None:
    a, b = JobStore(5, 10), JobStore(5, 10)
    assert a is not b and len(a) == 0 and len(b) == 0


# -- concurrency -------------------------------------------------------------------------


def _parallel_wall(client: Any, jobs: int) -> float:
    began = time.monotonic()
    ids = [run(client, {"input": i})["id"] for i in range(jobs)]
    for job_id in ids:
        assert wait_status(client, job_id, "COMPLETED", timeout=10)["output"] == {"slept": True}
    return time.monotonic() - began


def test_api_concurrency_runs_sync_handlers_in_parallel(h: Harness) -> None:
    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        time.sleep(0.3)
        return {"slept": True}

    client = h.client(handler, api_concurrency=4)
    wall = _parallel_wall(client, 4)
    assert wall < 0.5 * 4 * 0.3, f"4 jobs of 0.3 s took {wall:.2f} s: not parallel"


def test_concurrency_modifier_sets_the_local_api_concurrency(h: Harness) -> None:
    barrier = threading.Barrier(3, timeout=5)

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        barrier.wait()  # breaks (and the job fails) unless 3 jobs run at once
        return {"slept": True}

    client = h.client(handler, concurrency_modifier=lambda current: 3)
    _parallel_wall(client, 3)


# -- webhooks ------------------------------------------------------------------------------


class Receiver:
    """A loopback HTTP server recording webhook POSTs; answers from a script of codes."""

    def __init__(self, codes: Optional[List[int]] = None) -> None:
        self.codes = list(codes or [])
        self.posts: List[Dict[str, Any]] = []
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length))
                with receiver.cond:
                    receiver.posts.append(body)
                    code = receiver.codes.pop(0) if receiver.codes else 200
                    receiver.cond.notify_all()
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait(self, count: int, timeout: float = 5.0) -> List[Dict[str, Any]]:
        with self.cond:
            self.cond.wait_for(lambda: len(self.posts) >= count, timeout)
            return list(self.posts)


FAST_HOOKS = ApiOptions(webhook_backoff=0.01, webhook_timeout=2, webhook_attempts=3)


def test_webhook_gets_the_final_document_on_success_and_failure(h: Harness) -> None:
    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        if job["input"] == "fail":
            raise RuntimeError("nope")
        return {"ok": job["input"]}

    client = h.client(handler, options=FAST_HOOKS)
    with Receiver() as receiver:
        good = run(client, {"input": "yes", "webhook": receiver.url})
        posts = receiver.wait(1)
        assert posts[0]["id"] == good["id"] and posts[0]["status"] == "COMPLETED"
        assert posts[0]["output"] == {"ok": "yes"} and "executionTime" in posts[0]
        bad = run(client, {"input": "fail", "webhook": receiver.url})
        posts = receiver.wait(2)
        assert posts[1]["id"] == bad["id"] and posts[1]["status"] == "FAILED"
        assert "nope" in posts[1]["error"]
        # The document posted equals what /status answers.
        assert client.get(f"/status/{bad['id']}").get_json() == posts[1]


def test_webhook_is_retried_until_accepted_and_given_up_after_the_attempts(h: Harness) -> None:
    client = h.client(lambda job: {"n": job["input"]}, options=FAST_HOOKS)
    with Receiver(codes=[500, 503]) as receiver:
        doc = run(client, {"input": 1, "webhook": receiver.url})
        posts = receiver.wait(3)
        assert [p["id"] for p in posts] == [doc["id"]] * 3  # two failures, then 200
    with Receiver(codes=[500, 500, 500, 500, 500]) as receiver:
        doc = run(client, {"input": 2, "webhook": receiver.url})
        posts = receiver.wait(3)
        assert len(posts) == 3
        # A 4th attempt never comes; the job itself is unaffected.
        assert wait_status(client, doc["id"], "COMPLETED")["output"] == {"n": 2}
        assert not receiver.wait(4, timeout=0.3)[3:]


def test_webhook_to_a_closed_port_does_not_break_the_job(h: Harness) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = h.client(lambda job: {"fine": True}, options=FAST_HOOKS)
    doc = client.post(
        "/runsync", json={"input": {}, "webhook": f"http://127.0.0.1:{port}/x"}
    ).get_json()
    assert doc["status"] == "COMPLETED"
    assert client.get("/health").get_json()["jobs"]["completed"] == 1


# -- real sockets ------------------------------------------------------------------------------


@pytest.fixture
def live() -> Iterator[Callable[..., str]]:
    servers: List[Any] = []
    threads: List[threading.Thread] = []

    def start(handler: Callable[..., Any], **config: Any) -> str:
        server = make_server(Config(handler=handler, **config), host="127.0.0.1", port=0)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append(server)
        threads.append(thread)
        return f"http://127.0.0.1:{server.port}"

    yield start
    for server in servers:
        server.close()
    for thread in threads:
        thread.join(5)


def test_over_a_real_socket_with_waitress(live: Callable[..., str]) -> None:
    def handler(job: Dict[str, Any]) -> Any:
        if job["input"].get("stream"):
            return (i for i in range(3))
        return {"upper": job["input"]["text"].upper()}

    base = live(handler, api_concurrency=2)
    with requests.Session() as http:
        sync = http.post(f"{base}/runsync", json={"input": {"text": "hi"}}, timeout=10).json()
        assert sync["status"] == "COMPLETED" and sync["output"] == {"upper": "HI"}
        queued = http.post(f"{base}/v2/local/run", json={"input": {"stream": True}}, timeout=10)
        job_id = queued.json()["id"]
        chunks: List[Any] = []
        status = ""
        deadline = time.monotonic() + 10
        while status != "COMPLETED" and time.monotonic() < deadline:
            doc = http.get(f"{base}/v2/local/stream/{job_id}?wait=1000", timeout=10).json()
            chunks += [c["output"] for c in doc["stream"]]
            status = doc["status"]
        assert chunks == [0, 1, 2]
        big = http.post(f"{base}/run", data=b"{" + b" " * (11 * 1024 * 1024), timeout=10)
        assert big.status_code == 413
        page = http.get(f"{base}/", timeout=10)
        assert page.status_code == 200 and "wavespeed" in page.text


def test_realtime_mode_binds_all_interfaces_on_its_port() -> None:
    config = Config(handler=lambda job: {}, mode="realtime", realtime_port=0, realtime_concurrency=3)
    server = make_server(config)
    try:
        assert server.host == "0.0.0.0"
        assert server.endpoint.concurrency == 3
    finally:
        server.close()


def test_importing_the_package_does_not_import_flask_or_waitress() -> None:
    code = (
        "import sys, wavespeed.serverless as s; "
        "print(sorted(m for m in ('flask', 'waitress', 'werkzeug') if m in sys.modules))"
    )
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


HANDLER = """
import wavespeed.serverless as serverless

def handler(job):
    return {"got": job["input"]}

serverless.start({"handler": handler})
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _clean_env() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "WAVERLESS_"))}
    # The checkout's package, even where it is not installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    return env


@pytest.mark.slow
def test_serve_api_flag_serves_until_sigterm(tmp_path: Any) -> None:
    script = tmp_path / "handler.py"
    script.write_text(HANDLER)
    port = _free_port()
    proc = subprocess.Popen(
        [PYTHON, str(script), "--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port", str(port)],
        env=_clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        doc: Dict[str, Any] = {}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                doc = requests.post(
                    f"http://127.0.0.1:{port}/runsync", json={"input": 7}, timeout=5
                ).json()
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        assert doc.get("status") == "COMPLETED" and doc["output"] == {"got": 7}
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert f"http://127.0.0.1:{port}/" in out  # log lines go to stdout, as runpod's


@pytest.mark.slow
def test_serve_warns_when_bound_to_all_interfaces(tmp_path: Any) -> None:
    script = tmp_path / "handler.py"
    script.write_text(HANDLER)
    port = _free_port()
    proc = subprocess.Popen(
        [PYTHON, str(script), "--rp_serve_api", "--rp_api_host", "0.0.0.0", "--rp_api_port", str(port)],
        env=_clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    assert "all interfaces" in out and "WARN" in out  # log lines go to stdout, as runpod's
    assert proc.returncode == 0, err


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
