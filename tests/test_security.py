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

    def __init__(
        self, host: str = "127.0.0.1", redirect: Optional[str] = None, body: bytes = b"secret metadata"
    ) -> None:
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


# -- issue 12: the download helpers keep to their folders ----------------------------------


@pytest.mark.parametrize(
    "job_id", ["../../escaped", "a/../../b", "..", "..\\..\\win", "", "ABSOLUTE", "x\x00y"]
)
def test_download_job_id_cannot_leave_the_jobs_folder(
    download: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, job_id: str
) -> None:
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv(download.ALLOW_PRIVATE_ENV, "true")
    if job_id == "ABSOLUTE":
        job_id = str(tmp_path / "absolute-escape")
    target = CountingServer()
    try:
        (path,) = download.download_files_from_urls(job_id, f"http://127.0.0.1:{target.port}/f.txt")
    finally:
        target.close()
    jobs = os.path.realpath(str(work / "jobs"))
    assert path is not None and target.hits == 1
    parts = os.path.relpath(os.path.realpath(path), jobs).split(os.sep)
    assert len(parts) == 3 and parts[0] not in ("..", ".", "") and parts[1] == "downloaded_files"
    written = [os.path.join(root, n) for root, _d, names in os.walk(str(tmp_path)) for n in names]
    assert [os.path.realpath(p) for p in written] == [os.path.realpath(path)]


def test_a_plain_job_id_keeps_its_folder_name(download: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(download.ALLOW_PRIVATE_ENV, "true")
    target = CountingServer()
    try:
        (path,) = download.download_files_from_urls("sync-5f0e-u1.2", f"http://127.0.0.1:{target.port}/f")
    finally:
        target.close()
    assert os.path.dirname(str(path)) == os.path.join(str(tmp_path), "jobs", "sync-5f0e-u1.2", "downloaded_files")


def many_entries_zip(count: int) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for n in range(count):
            zf.writestr(f"f{n}", b"")
    return buffer.getvalue()


@pytest.mark.parametrize("entries, limit", [(10_001, None), (4, "3")])
def test_zip_entry_count_is_capped(
    download: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, entries: int, limit: Optional[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(download.ALLOW_PRIVATE_ENV, "true")
    if limit is None:
        monkeypatch.delenv("WAVESPEED_MAX_ZIP_ENTRIES", raising=False)
    else:
        monkeypatch.setenv("WAVESPEED_MAX_ZIP_ENTRIES", limit)
    target = CountingServer(body=many_entries_zip(entries))
    try:
        with pytest.raises(download.DownloadError) as info:
            download.download_file(f"http://127.0.0.1:{target.port}/many.zip", folder="out")
        assert "entries" in str(info.value) and str(entries) in str(info.value)
        fine = CountingServer(body=many_entries_zip(entries - 1))
        try:
            got = download.download_file(f"http://127.0.0.1:{fine.port}/fine.zip", folder="out")
        finally:
            fine.close()
    finally:
        target.close()
    assert len(os.listdir(str(got["extracted_path"]))) == entries - 1
    folders = [n for n in os.listdir("out") if os.path.isdir(os.path.join("out", n))]
    assert folders == [os.path.basename(str(got["extracted_path"]))]  # the refused zip: not extracted


# -- issue 12: the worker's /health port ---------------------------------------------------


def test_idle_connections_to_the_health_port_take_no_threads_and_are_closed(tmp_path: Any) -> None:
    import selectors
    import time

    port = free_port()
    with FakePlatform() as fp:
        with running_worker(fp, echo, tmp_path, env={"WAVESPEED_HEALTH_PORT": str(port)}):
            assert get_health(port)[0] == 200
            before = threading.active_count()
            opened = time.monotonic()
            idle = [socket_to(port) for _ in range(300)]
            try:
                for sock in idle[::2]:  # half of them send half a request
                    sock.sendall(b"GET /health HTTP/1.1\r\nHost: pod\r\n")
                ids = fp.add_jobs([{"n": n} for n in range(5)])
                assert fp.wait_results(len(ids), 10)  # jobs go on
                assert threading.active_count() - before < 50  # not one per connection (300)
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/health")
                assert conn.getresponse().status == 200
                conn.close()
                # The server closes every idle connection within 10 s of its opening.
                waiting = set(idle)
                selector = selectors.DefaultSelector()
                for sock in idle:
                    selector.register(sock, selectors.EVENT_READ)
                while waiting and time.monotonic() < opened + 10:
                    for key, _ in selector.select(max(0.0, opened + 10 - time.monotonic())):
                        try:
                            data = key.fileobj.recv(4096)  # type: ignore[union-attr]
                        except OSError:
                            data = b""
                        if not data:
                            selector.unregister(key.fileobj)
                            waiting.discard(key.fileobj)  # type: ignore[arg-type]
                selector.close()
                assert not waiting, f"{len(waiting)} idle connections still open after 10 s"
            finally:
                for sock in idle:
                    sock.close()


def socket_to(port: int) -> Any:
    import socket

    return socket.create_connection(("127.0.0.1", port), timeout=5)


def test_health_server_answers_probes_and_stops_with_connections_open() -> None:
    from wavespeed.serverless.health import HealthServer

    calls: List[int] = []

    def status() -> Tuple[bool, Any]:
        calls.append(1)
        return len(calls) < 3, {"status": "ok" if len(calls) < 3 else "unhealthy", "n": float("nan")}

    server = HealthServer("127.0.0.1", 0, status)
    assert server.start()
    idle = [socket_to(server.port) for _ in range(5)]
    try:
        code, body = get_health(server.port)
        assert code == 200 and json.loads(body) == {"status": "ok", "n": None}
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("HEAD", "/health/?probe=1")
        response = conn.getresponse()
        assert response.status == 200 and response.read() == b""
        conn.close()
        assert get_health(server.port)[0] == 503
        for method, path, code in (("GET", "/other", 404), ("POST", "/health", 405)):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            conn.request(method, path)
            assert conn.getresponse().status == code
            conn.close()
    finally:
        server.stop()
        for sock in idle:
            sock.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("wavespeed-health")]
