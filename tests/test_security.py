"""Issue 6, Security: the key stays secret, nothing from the network runs, the
local API and the download helpers keep to the machine and the internet.

Already pinned elsewhere (not repeated here): log lines mask the key
(``tests/test_logs.py::test_api_key_is_masked``), the local API answers 413
over its body limit (``tests/test_devserver.py::test_body_over_the_limit_gets_413``
and ``test_over_a_real_socket_with_waitress``) and warns when bound to all
interfaces (``test_serve_warns_when_bound_to_all_interfaces``).
"""

import ast
import http.client
import json
import os
import pickle
import signal
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator, List, Optional, Tuple

import pytest
import requests

try:
    from tests.fakeplatform import FakePlatform, Fault
    from tests.helpers import (
        WorkerProcess,
        capture_logs,
        echo,
        free_port,
        running_worker,
        wait_until,
    )
except ImportError:  # tests/ run as a plain directory on sys.path
    from fakeplatform import FakePlatform, Fault  # type: ignore[no-redef]
    from helpers import (  # type: ignore[no-redef]
        WorkerProcess,
        capture_logs,
        echo,
        free_port,
        running_worker,
        wait_until,
    )

from wavespeed.serverless.config import Config

pytestmark = pytest.mark.timeout(60)

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = os.path.join(os.path.dirname(HERE), "wavespeed")
MIXED = os.path.join(HERE, "reliability_workers", "mixed_worker.py")
KEY = "sk-LEAKCHECK-5b1f0e9d7c3a4e21"
STARTUP = 20.0


def get_health(port: int) -> Tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# -- the API key --------------------------------------------------------------------------


@pytest.mark.slow
def test_api_key_never_in_logs_results_health_or_exceptions(tmp_path: Any) -> None:
    """A real worker at DEBUG level through errors, refusals and retries; grep it all."""
    port = free_port()
    with FakePlatform(api_key=KEY) as fp:
        fp.script("job-take", Fault(500, body="down"), Fault(reset=True))
        fp.script("job-done", Fault(reset=True), Fault(400, body="no thanks"))
        ids = fp.add_jobs(
            [{"n": 0}, {"kind": "raise"}, {"kind": "progress", "n": 2}, {"kind": "gen", "n": 3}]
        )
        env = fp.env(
            WAVESPEED_SPOOL_DIR=str(tmp_path / "spool"),
            WAVESPEED_HEALTH_PORT=str(port),
            RUNPOD_LOG_LEVEL="DEBUG",
            RUNPOD_PING_INTERVAL="200",
        )
        with WorkerProcess(MIXED, env) as proc:
            assert fp.wait_results(len(ids), STARTUP), proc.output()[-3000:]
            status, health = get_health(port)
            assert status == 200
            proc.signal(signal.SIGTERM)
            assert proc.wait(10) == 0, proc.output()[-3000:]
            output = proc.output()
        sent = fp.requests()
    # The key did go where it belongs: the Authorization header of every request.
    assert sent and all(r.headers.get("authorization") == KEY for r in sent)
    assert "handler failed on purpose" in output  # the logs were really captured
    assert "DEBUG" in output
    assert KEY not in output
    assert KEY.encode() not in health
    for request in sent:
        assert KEY.encode() not in request.body, request.path
        assert KEY not in request.path
    assert "refused" in fp.results(ids[0])[0]["error"]  # the 400 hit the first result
    assert "error_traceback" in fp.results(ids[1])[0]["error"]  # an error payload was checked


def test_api_key_not_in_config_repr_health_or_config_errors(tmp_path: Any) -> None:
    with FakePlatform(api_key=KEY) as fp:
        env = fp.env(WAVESPEED_SPOOL_DIR=str(tmp_path))
        cfg = Config.from_env(env, [], {"handler": echo})
        assert cfg.api_key == KEY
        assert KEY not in repr(cfg) and KEY not in str(cfg)
        bad = dict(env, RUNPOD_PING_INTERVAL="soon")
        with pytest.raises(Exception) as info:
            Config.from_env(bad, [], {"handler": echo})
        assert KEY not in str(info.value) and KEY not in repr(info.value)
        with running_worker(fp, echo, tmp_path) as run:
            assert KEY not in json.dumps(run.worker.health_status()[1])


def test_api_key_echoed_by_a_refusing_platform_is_not_posted_back(tmp_path: Any) -> None:
    with FakePlatform(api_key=KEY) as fp:
        fp.script("job-done", Fault(401, body=f"invalid credentials: {KEY}"))
        job_id = fp.add_job({})
        with capture_logs() as logs:
            with running_worker(fp, echo, tmp_path):
                assert fp.wait_results(1, 10)
        posts = fp.result_requests(job_id, include_rejected=True)
    assert len(posts) == 2  # the refused result, then the small FAILED one
    assert KEY.encode() not in posts[1].body, posts[1].body
    assert not [r for r in logs if KEY in r.getMessage()]


# -- nothing from the network is unpickled or evaluated -------------------------------------

FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "jsonpickle", "yaml"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}


def package_sources() -> Iterator[str]:
    for root, _dirs, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(root, name)


def test_package_source_never_unpickles_or_evaluates() -> None:
    offences: List[str] = []
    sources = list(package_sources())
    assert len(sources) > 10  # the walk found the package
    for path in sources:
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), path)
        for node in ast.walk(tree):
            where = f"{os.path.relpath(path, PACKAGE)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            else:
                names = set()
            if names & FORBIDDEN_MODULES:
                offences.append(f"{where}: imports {sorted(names & FORBIDDEN_MODULES)}")
            if isinstance(node, ast.Call):
                func = node.func
                # Builtins only: re.compile and friends are fine.
                builtin = isinstance(func, ast.Name) or (
                    isinstance(func, ast.Attribute)
                    and isinstance(func.value, ast.Name)
                    and func.value.id == "builtins"
                )
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                if builtin and name in FORBIDDEN_CALLS:
                    offences.append(f"{where}: calls {name}()")
    assert offences == []


class Trap:
    """Unpickling this creates a marker file: proof that something ran it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> Tuple[Any, Tuple[str, str]]:
        return (open, (self.marker, "w"))


def test_spool_holds_json_only_and_hostile_files_never_run(tmp_path: Any) -> None:
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    marker = tmp_path / "unpickled"
    (spool / "00000000000000000001-aaaa.json").write_bytes(pickle.dumps(Trap(str(marker))))
    expression = "__import__('os').system('touch %s')" % (tmp_path / "evaluated")
    entry = {"job_id": "old-job", "is_stream": False, "body": json.dumps({"output": expression})}
    (spool / "00000000000000000002-bbbb.json").write_text(json.dumps(entry), encoding="utf-8")
    with FakePlatform() as fp:
        with running_worker(fp, echo, spool):
            assert fp.wait_results(1, 10)
            assert wait_until(lambda: "00000000000000000001-aaaa.json.bad" in os.listdir(str(spool)), 5)
    assert not marker.exists()
    assert not (tmp_path / "evaluated").exists()
    # The good entry went out byte for byte, as data.
    (post,) = fp.result_requests("old-job")
    assert post.body == entry["body"].encode()
    assert sorted(os.listdir(str(spool))) == ["00000000000000000001-aaaa.json.bad"]


# -- the local HTTP API ---------------------------------------------------------------------


@pytest.fixture
def api_server() -> Iterator[Any]:
    from wavespeed.serverless.devserver import make_server

    config = Config.from_env({}, ["--rp_serve_api", "--rp_api_port", "0"], {"handler": echo})
    assert config.mode == "api" and config.api_host == "localhost"
    server = make_server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.close()
        thread.join(5)


def test_local_api_binds_loopback_by_default(api_server: Any) -> None:
    import ipaddress

    assert ipaddress.ip_address(api_server.host).is_loopback, api_server.host
    doc = requests.post(
        f"http://127.0.0.1:{api_server.port}/runsync", json={"input": 1}, timeout=10
    ).json()
    assert doc["status"] == "COMPLETED"


def test_local_api_job_ids_are_random_uuid4(api_server: Any) -> None:
    base = f"http://127.0.0.1:{api_server.port}"
    ids = [
        requests.post(f"{base}/run", json={"input": n}, timeout=10).json()["id"] for n in range(20)
    ]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 4 for i in ids)  # 122 random bits, not a counter
    assert all(i != str(n) and not i.isdigit() for n, i in enumerate(ids))


# -- downloads ------------------------------------------------------------------------------


class CountingServer:
    """A loopback HTTP server that counts hits and may redirect."""

    def __init__(self, host: str = "127.0.0.1", redirect: Optional[str] = None) -> None:
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.hits += 1
                if redirect:
                    self.send_response(302)
                    self.send_header("Location", redirect)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = b"secret metadata"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def download(monkeypatch: pytest.MonkeyPatch) -> Any:
    from wavespeed.serverless.utils import download as module

    monkeypatch.delenv(module.ALLOW_PRIVATE_ENV, raising=False)
    return module


def test_downloads_refuse_loopback_private_and_link_local(download: Any, tmp_path: Any) -> None:
    target = CountingServer()
    try:
        urls = [
            f"http://127.0.0.1:{target.port}/file.txt",
            f"http://localhost:{target.port}/file.txt",  # a DNS name resolving to loopback
            f"http://[::ffff:127.0.0.1]:{target.port}/file.txt",
            "http://169.254.169.254/latest/meta-data/",  # cloud metadata
            "http://10.0.0.1/file.txt",
            "http://192.168.1.1/file.txt",
        ]
        for url in urls:
            with pytest.raises(download.DownloadRefused):
                download.download_file(url, folder=str(tmp_path))
        assert target.hits == 0
    finally:
        target.close()
    assert os.listdir(str(tmp_path)) == []  # nothing half-written left behind


def test_downloads_refuse_a_redirect_to_a_private_address(
    download: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        public = CountingServer(host="127.0.0.2")
    except OSError:
        pytest.skip("127.0.0.2 is not available here")
    inner = CountingServer()
    bouncer = CountingServer(host="127.0.0.2", redirect=f"http://127.0.0.1:{inner.port}/secret")
    real = download.is_public_address
    # Stand in for the internet: only 127.0.0.2 counts as public.
    monkeypatch.setattr(download, "is_public_address", lambda a: a == "127.0.0.2" or real(a))
    try:
        fetched = download.download_file(f"http://127.0.0.2:{public.port}/ok.txt", folder=str(tmp_path))
        assert public.hits == 1 and fetched["file_path"]  # the stand-in works
        with pytest.raises(download.DownloadRefused):
            download.download_file(f"http://127.0.0.2:{bouncer.port}/go", folder=str(tmp_path))
        assert bouncer.hits == 1
        assert inner.hits == 0
    finally:
        for server in (public, inner, bouncer):
            server.close()
