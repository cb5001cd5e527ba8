"""Issue 12: the local and realtime API against hostile browsers and clients.

Each test sends what a real attacker's client sends over a real socket to
waitress on 127.0.0.1: the headers a browser adds to a cross-site request
(``Origin``, ``Sec-Fetch-*``, a ``text/plain`` body), a rebound ``Host``,
half-sent requests, long polls, oversized and hostile bodies.
"""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest
import requests

import wavespeed.serverless as serverless
from wavespeed.serverless.config import Config
from wavespeed.serverless.devserver import LocalEndpoint, create_app, make_server

try:
    from tests.helpers import capture_logs, echo, wait_until
except ImportError:  # tests/ run as a plain directory on sys.path
    from helpers import capture_logs, echo, wait_until  # type: ignore[no-redef]

pytestmark = pytest.mark.timeout(60)

# What Chromium sends for fetch("http://localhost:8000/run", {method: "POST",
# mode: "no-cors", body: JSON.stringify(job)}) from a page on another site.
CROSS_SITE = {
    "Origin": "http://evil.example",
    "Referer": "http://evil.example/",
    "Content-Type": "text/plain;charset=UTF-8",
    "Sec-Fetch-Site": "cross-site",
    "Sec-Fetch-Mode": "no-cors",
    "Sec-Fetch-Dest": "empty",
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/124.0 Safari/537.36",
    "Accept": "*/*",
}
JOB = json.dumps({"input": {"prompt": "hi"}}).encode()


class Live:
    """A waitress server on 127.0.0.1 with a port of its own; closed on teardown."""

    def __init__(self) -> None:
        self.servers: List[Any] = []
        self.threads: List[threading.Thread] = []
        self.gates: List[threading.Event] = []

    def gate(self) -> threading.Event:
        event = threading.Event()
        self.gates.append(event)
        return event

    def start(self, handler: Callable[..., Any] = echo, host: str = "127.0.0.1", **config: Any) -> Any:
        server = make_server(Config(handler=handler, mode="api", **config), host=host, port=0)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        self.servers.append(server)
        self.threads.append(thread)
        return server

    def close(self) -> None:
        for gate in self.gates:
            gate.set()
        for server in self.servers:
            server.close()
        for thread in self.threads:
            thread.join(5)


@pytest.fixture
def live() -> Iterator[Live]:
    harness = Live()
    yield harness
    harness.close()


def base(server: Any) -> str:
    return f"http://127.0.0.1:{server.port}"


def health(server: Any) -> Dict[str, Any]:
    response = requests.get(f"{base(server)}/health", timeout=5)
    assert response.status_code == 200, response.text
    return dict(response.json())


# -- 1. cross-site requests ---------------------------------------------------------------


def test_a_cross_site_page_cannot_run_a_job(live: Live) -> None:
    ran: List[Any] = []
    server = live.start(lambda job: ran.append(job["input"]) or {})
    url = base(server)
    for route in ("/run", "/runsync", "/v2/ep/run"):
        refused = requests.post(url + route, data=JOB, headers=CROSS_SITE, timeout=5)
        assert refused.status_code == 403, refused.text
        assert "cross-site" in refused.json()["error"]
    # The same page with a JSON body (a CORS request: the preflight would fail,
    # but a browser still sends the Origin) is refused too.
    as_json = dict(CROSS_SITE, **{"Content-Type": "application/json", "Sec-Fetch-Mode": "cors"})
    assert requests.post(url + "/run", data=JOB, headers=as_json, timeout=5).status_code == 403
    # Sandboxed frames and file:// pages send "Origin: null".
    null_origin = dict(as_json, Origin="null")
    assert requests.post(url + "/run", data=JOB, headers=null_origin, timeout=5).status_code == 403
    assert ran == []
    assert health(server)["jobs"] == {
        "completed": 0,
        "failed": 0,
        "inProgress": 0,
        "inQueue": 0,
        "retried": 0,
    }


@pytest.mark.parametrize(
    "content_type",
    ["text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_job_creating_requests_need_a_json_content_type(live: Live, content_type: str) -> None:
    """The three content types a form or a no-cors fetch may send without a preflight."""
    server = live.start()
    refused = requests.post(
        f"{base(server)}/run", data=JOB, headers={"Content-Type": content_type}, timeout=5
    )
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert "Content-Type" in error and "application/json" in error
    assert health(server)["jobs"]["inQueue"] + health(server)["jobs"]["completed"] == 0


def test_the_page_itself_curl_and_json_clients_are_served(live: Live) -> None:
    server = live.start()
    url = base(server)
    page_origin = {
        "Origin": url,
        "Referer": url + "/",
        "Content-Type": "application/json",
        "Sec-Fetch-Site": "same-origin",
        "Sec-Fetch-Mode": "cors",
    }
    for headers in (
        page_origin,
        {"Content-Type": "application/json; charset=utf-8"},
        {"Content-Type": "application/vnd.api+json"},
        {},  # curl-style: no Content-Type at all
    ):
        doc = requests.post(url + "/runsync", data=JOB, headers=headers, timeout=10)
        assert doc.status_code == 200, (headers, doc.text)
        assert doc.json()["output"] == {"echo": {"prompt": "hi"}}
    # The page reads its own job.
    job_id = doc.json()["id"]
    assert requests.get(f"{url}/status/{job_id}", headers={"Origin": url}, timeout=5).status_code == 200


def test_a_cross_site_page_cannot_cancel_purge_or_read(live: Live) -> None:
    gate = live.gate()
    server = live.start(lambda job: gate.wait(10) and {})
    url = base(server)
    job_id = requests.post(url + "/run", json={"input": {}}, timeout=5).json()["id"]
    foreign = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    for method, path in (
        ("POST", f"/cancel/{job_id}"),
        ("POST", "/purge-queue"),
        ("GET", f"/status/{job_id}"),
        ("GET", f"/stream/{job_id}"),
    ):
        response = requests.request(method, url + path, headers=foreign, timeout=5)
        assert response.status_code == 403, (path, response.text)
    status = requests.get(f"{url}/status/{job_id}", timeout=5).json()["status"]
    assert status in ("IN_QUEUE", "IN_PROGRESS")


# -- 2. DNS rebinding ---------------------------------------------------------------------


def test_a_rebound_host_is_refused_when_bound_to_loopback(live: Live) -> None:
    ran: List[Any] = []
    server = live.start(lambda job: ran.append(1) or {})
    port = server.port
    # After rebinding, attacker.example resolves to 127.0.0.1: to the browser
    # the page and the API share an origin, so Origin matches Host.
    rebound = {
        "Host": f"attacker.example:{port}",
        "Origin": f"http://attacker.example:{port}",
        "Content-Type": "application/json",
        "Sec-Fetch-Site": "same-origin",
    }
    for method, path in (("POST", "/run"), ("GET", "/health"), ("GET", "/"), ("GET", "/openapi.json")):
        response = requests.request(method, base(server) + path, data=JOB, headers=rebound, timeout=5)
        assert response.status_code == 403, (path, response.text)
        assert "attacker.example" in response.text and "api_allowed_hosts" in response.text
    assert ran == []


def test_loopback_names_and_allowed_names_are_served(live: Live) -> None:
    server = live.start(api_allowed_hosts=("My-Box.test",))
    port = server.port
    for host in (
        f"localhost:{port}",
        "localhost",
        f"127.0.0.1:{port}",
        f"[::1]:{port}",
        f"LOCALHOST:{port}",
        f"my-box.test:{port}",
    ):
        response = requests.get(f"{base(server)}/health", headers={"Host": host}, timeout=5)
        assert response.status_code == 200, (host, response.text)
    other = requests.get(f"{base(server)}/health", headers={"Host": f"box.test:{port}"}, timeout=5)
    assert other.status_code == 403


def test_allowed_hosts_and_body_limit_come_from_flags_and_env() -> None:
    flags = Config.from_env(
        {"WAVESPEED_API_ALLOWED_HOSTS": "ignored.test"},
        ["--rp_api_allowed_hosts", "a.test, B.test", "--rp_api_max_body", "2048"],
        {"handler": echo},
    )
    assert flags.api_allowed_hosts == ("a.test", "b.test") and flags.api_max_body == 2048
    env = Config.from_env(
        {"WAVESPEED_API_ALLOWED_HOSTS": "c.test", "WAVESPEED_API_MAX_BODY": "4096"},
        ["--waverless_api_allowed_hosts", ""],
        {"handler": echo},
    )
    assert env.api_max_body == 4096
    assert env.api_allowed_hosts == ()  # an explicit empty flag beats the environment
    default = Config.from_env({}, [], {"handler": echo})
    assert default.api_allowed_hosts == () and default.api_max_body == 10 * 1024 * 1024
    assert default.allow_private_webhooks is False
    assert Config.from_env(
        {"WAVESPEED_ALLOW_PRIVATE_WEBHOOKS": "true"}, [], {"handler": echo}
    ).allow_private_webhooks
    for bad_env in ({"WAVESPEED_API_MAX_BODY": "big"}, {"WAVESPEED_ALLOW_PRIVATE_WEBHOOKS": "maybe"}):
        with pytest.raises(serverless.ConfigError) as info:
            Config.from_env(bad_env, [], {"handler": echo})
        assert next(iter(bad_env)) in str(info.value)


def test_no_host_check_when_bound_to_all_interfaces() -> None:
    """Reachable from the network anyway: Host names of the machine must work."""
    app = create_app(Config(handler=echo, mode="api", api_host="0.0.0.0"))
    try:
        client = app.test_client()
        response = client.get("/health", headers={"Host": "gpu-box.lan:8000"})
        assert response.status_code == 200
    finally:
        app.extensions["wavespeed"].close()


# -- 3. webhooks --------------------------------------------------------------------------


class Receiver:
    """A loopback server recording POSTs; may answer with a redirect."""

    def __init__(self, redirect_to: Optional[str] = None) -> None:
        self.posts: List[bytes] = []
        self.cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.cond:
                    outer.posts.append(body)
                    outer.cond.notify_all()
                self.send_response(307 if redirect_to else 200)
                if redirect_to:
                    self.send_header("Location", redirect_to)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST  # noqa: N815 - a 302/303 turns the POST into a GET

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    def wait(self, count: int, timeout: float = 5.0) -> List[bytes]:
        with self.cond:
            self.cond.wait_for(lambda: len(self.posts) >= count, timeout)
            return list(self.posts)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def realtime_config(**extra: Any) -> Config:
    return Config(handler=echo, mode="realtime", realtime_port=0, **extra)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
def test_realtime_refuses_a_webhook_to_a_loopback_address(receiver: Receiver, host: str) -> None:
    app = create_app(realtime_config())
    try:
        hook = receiver.url.replace("127.0.0.1", host)
        response = app.test_client().post("/run", json={"input": {}, "webhook": hook})
        assert response.status_code == 400, response.get_data(as_text=True)
        assert "WAVESPEED_ALLOW_PRIVATE_WEBHOOKS" in response.get_json()["error"]
    finally:
        app.extensions["wavespeed"].close()
    assert receiver.posts == []


def test_realtime_checks_the_webhook_address_again_when_sending(receiver: Receiver) -> None:
    """A name may resolve elsewhere by the time the job ends: the POST is checked too."""
    endpoint = LocalEndpoint(realtime_config())
    try:
        with capture_logs() as logs:
            record = endpoint.submit({"x": 1}, webhook=receiver.url)
            assert endpoint.wait(record, 5)["status"] == "COMPLETED"
            assert wait_until(lambda: logs.find("webhook for job"), 5)
        assert "non-public" in logs.find("webhook for job")[0].getMessage()
    finally:
        endpoint.close()
    assert receiver.posts == []


def test_realtime_sends_private_webhooks_when_allowed(receiver: Receiver) -> None:
    app = create_app(realtime_config(allow_private_webhooks=True))
    try:
        client = app.test_client()
        job_id = client.post("/run", json={"input": 5, "webhook": receiver.url}).get_json()["id"]
        (post,) = receiver.wait(1)
        assert json.loads(post)["id"] == job_id
    finally:
        app.extensions["wavespeed"].close()


def test_the_local_api_on_localhost_sends_loopback_webhooks(live: Live, receiver: Receiver) -> None:
    server = live.start()
    doc = requests.post(
        f"{base(server)}/run", json={"input": 1, "webhook": receiver.url}, timeout=5
    ).json()
    (post,) = receiver.wait(1)
    assert json.loads(post)["id"] == doc["id"]


def test_webhook_redirects_are_never_followed(live: Live) -> None:
    target = Receiver()
    bouncer = Receiver(redirect_to=target.url)
    try:
        server = live.start()
        with capture_logs() as logs:
            requests.post(
                f"{base(server)}/run", json={"input": 1, "webhook": bouncer.url}, timeout=5
            ).raise_for_status()
            assert wait_until(lambda: logs.find("not delivered"), 10)
        assert "redirect" in logs.find("not delivered")[0].getMessage()
        assert len(bouncer.posts) == 1  # a redirect is an answer, not a failure to retry
        assert target.posts == []
    finally:
        bouncer.close()
        target.close()


# -- 4. starvation ------------------------------------------------------------------------


def test_health_answers_with_110_idle_half_sent_connections(live: Live) -> None:
    server = live.start()
    idle: List[socket.socket] = []
    try:
        for _ in range(110):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"POST /run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{")
            idle.append(sock)
        # timeout=2: the answer must come within 2 s under this load.
        response = requests.get(f"{base(server)}/health", timeout=2)
        assert response.status_code == 200
    finally:
        for sock in idle:
            sock.close()


def _poll(url: str, answered: List[float], errors: List[BaseException]) -> None:
    began = time.monotonic()
    try:
        requests.request("POST" if "/runsync" in url else "GET", url, json={"input": {}}, timeout=30)
        answered.append(time.monotonic() - began)
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)


@pytest.mark.parametrize("route", ["stream", "runsync", "status"])
def test_health_answers_while_8_long_polls_wait_300_s(live: Live, route: str) -> None:
    gate = live.gate()
    server = live.start(lambda job: gate.wait(20) and {})
    url = base(server)
    job_id = requests.post(f"{url}/run", json={"input": {}}, timeout=5).json()["id"]
    target = {
        "stream": f"{url}/stream/{job_id}?wait=300000",
        "runsync": f"{url}/runsync?wait=300000",
        "status": f"{url}/status/{job_id}?wait=300000",
    }[route]
    answered: List[float] = []
    errors: List[BaseException] = []
    polls = [threading.Thread(target=_poll, args=(target, answered, errors)) for _ in range(8)]
    for poll in polls:
        poll.start()
    try:
        # Long waits may hold only a share of the threads; the rest answer at once.
        assert wait_until(lambda: len(answered) >= 1, 10), "every long poll is still waiting"
        assert not errors
        assert requests.get(f"{url}/health", timeout=2).status_code == 200
        for _ in range(3):  # and keeps answering
            requests.get(f"{url}/status/{job_id}", timeout=2).raise_for_status()
        assert len(answered) < 8, "no poll waited at all"
    finally:
        gate.set()
        for poll in polls:
            poll.join(30)
    assert not errors and len(answered) == 8  # the waiting ones ended with the job


def test_status_wait_returns_when_the_job_ends(live: Live) -> None:
    gate = live.gate()
    server = live.start(lambda job: gate.wait(10) and {"done": True})
    url = base(server)
    job_id = requests.post(f"{url}/run", json={"input": {}}, timeout=5).json()["id"]
    result: List[Dict[str, Any]] = []
    poll = threading.Thread(
        target=lambda: result.append(
            requests.get(f"{url}/status/{job_id}?wait=20000", timeout=30).json()
        )
    )
    poll.start()
    try:
        assert wait_until(lambda: server.waits.held == 1, 5)  # waiting while the job runs
        assert not result
        gate.set()
        poll.join(10)
        assert result and result[0]["status"] == "COMPLETED" and result[0]["output"] == {"done": True}
    finally:
        gate.set()
        poll.join(10)


def test_closing_the_server_ends_long_polls() -> None:
    gate = threading.Event()
    server = make_server(Config(handler=lambda job: gate.wait(20) and {}), host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = base(server)
    job_id = requests.post(f"{url}/run", json={"input": {}}, timeout=5).json()["id"]
    answered: List[float] = []
    errors: List[BaseException] = []
    poll = threading.Thread(target=_poll, args=(f"{url}/stream/{job_id}?wait=300000", answered, errors))
    poll.start()
    try:
        assert wait_until(lambda: server.waits.held == 1, 5)
        server.endpoint.close(wait=False)  # what serve() does on SIGTERM, after the listener
        poll.join(10)
        assert not poll.is_alive() and (answered or errors)
    finally:
        gate.set()
        server.close()
        thread.join(5)


# -- 5. the body limit, before the body ---------------------------------------------------


def raw_exchange(port: int, head: bytes, timeout: float = 5.0) -> bytes:
    """Send ``head`` only (no body), read what the server answers before the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        chunks = b""
        try:
            while b"\r\n\r\n" not in chunks:
                data = sock.recv(65536)
                if not data:
                    break
                chunks += data
        except socket.timeout:
            pass
        return chunks


def test_an_oversized_content_length_gets_413_before_the_body(live: Live) -> None:
    server = live.start()
    head = (
        b"POST /run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 20000000\r\n\r\n"
    )
    answer = raw_exchange(server.port, head)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_the_body_limit_is_a_setting(live: Live) -> None:
    server = live.start(api_max_body=1000)
    head = b"POST /run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    assert raw_exchange(server.port, head % 1001).startswith(b"HTTP/1.1 413")
    exact = json.dumps({"input": "x" * 10}).encode()
    exact = exact[:-1] + b" " * (1000 - len(exact)) + b"}"
    assert len(exact) == 1000
    accepted = requests.post(
        f"{base(server)}/run", data=exact, headers={"Content-Type": "application/json"}, timeout=5
    )
    assert accepted.status_code == 200, accepted.text
    app = create_app(Config(handler=echo, api_max_body=1000))
    try:
        refused = app.test_client().post("/run", data=exact + b" ", content_type="application/json")
        assert refused.status_code == 413 and "1000 bytes" in refused.get_json()["error"]
    finally:
        app.extensions["wavespeed"].close()


# -- 6. no 500s for client mistakes -------------------------------------------------------


@pytest.mark.parametrize("depth", [1000, 101])
def test_deeply_nested_json_is_a_400(live: Live, depth: int) -> None:
    server = live.start()
    body = b'{"input": ' + b"[" * depth + b"]" * depth + b"}"
    response = requests.post(
        f"{base(server)}/run", data=body, headers={"Content-Type": "application/json"}, timeout=5
    )
    assert response.status_code == 400, response.text
    assert "nested" in response.json()["error"]
    fine = b'{"input": ' + b"[" * 50 + b"]" * 50 + b"}"
    assert requests.post(f"{base(server)}/runsync", data=fine, timeout=5).json()["status"] == "COMPLETED"


@pytest.mark.parametrize(
    "body",
    [
        b'{"input": NaN}',
        b'{"input": {"x": -Infinity}}',
        b'{"input": {}, "policy": {"executionTimeout": Infinity}}',
        b'{"input": {}, "policy": {"executionTimeout": 1e308}}',
        b'{"input": {}, "policy": {"executionTimeout": 1%s}}' % (b"0" * 400),
        b'{"input": {"x": 1e400}}',
        b'{"input": {}, "webhook": "http://127.0.0.1:99999/x"}',
    ],
    ids=["nan", "infinity", "timeout-infinity", "timeout-1e308", "timeout-huge-int", "1e400", "bad-port"],
)
def test_non_finite_numbers_and_bad_values_are_a_400(live: Live, body: bytes) -> None:
    server = live.start()
    response = requests.post(f"{base(server)}/run", data=body, timeout=5)
    assert response.status_code == 400, response.text
    assert health(server)["jobs"]["inQueue"] == 0


def test_a_nan_progress_value_does_not_break_status(live: Live) -> None:
    gate = live.gate()
    sent = threading.Event()

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        serverless.progress_update(job, {"loss": float("nan"), "eta": float("inf"), "step": 3})
        sent.set()
        gate.wait(10)
        return {}

    server = live.start(handler)
    url = base(server)
    job_id = requests.post(f"{url}/run", json={"input": {}}, timeout=5).json()["id"]
    assert sent.wait(5)
    response = requests.get(f"{url}/status/{job_id}", timeout=5)
    assert response.status_code == 200, response.text
    assert "NaN" not in response.text and "Infinity" not in response.text
    assert response.json()["output"] == {"loss": None, "eta": None, "step": 3}


def test_a_lone_surrogate_in_the_input_does_not_break_status(live: Live) -> None:
    server = live.start()
    url = base(server)
    body = b'{"input": {"text": "\\ud800 broken"}}'
    doc = requests.post(f"{url}/runsync", data=body, timeout=5)
    assert doc.status_code == 200, doc.text
    job_id = doc.json()["id"]
    for path in (f"/status/{job_id}", f"/stream/{job_id}"):
        assert requests.get(url + path, timeout=5).status_code == 200
