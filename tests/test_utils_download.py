"""download_file / download_files_from_urls against a loopback file server."""

import io
import os
import socket
import stat
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest

from wavespeed.serverless.utils import (
    DownloadError,
    DownloadRefused,
    DownloadTooLarge,
    UnsafeArchive,
    download_file,
    download_files_from_urls,
)
from wavespeed.serverless.utils.download import is_public_address

pytestmark = pytest.mark.timeout(30)

SWITCH = "RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS"
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(3000)


def make_zip(entries: List[Tuple[str, bytes]], links: Tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return buffer.getvalue()


Route = Tuple[int, Dict[str, str], bytes]


class Server:
    """A loopback HTTP server with scripted routes; counts hits per path."""

    def __init__(self) -> None:
        self.routes: Dict[str, Callable[[], Route]] = {}
        self.hits: Dict[str, int] = {}
        self.hosts: List[str] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                with outer.lock:
                    outer.hits[path] = outer.hits.get(path, 0) + 1
                    outer.hosts.append(self.headers.get("Host", ""))
                route = outer.routes.get(path)
                if route is None:
                    self.send_error(404)
                    return
                status, headers, body = route()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def file(self, path: str, body: bytes, **headers: str) -> None:
        hdrs = {"Content-Length": str(len(body))}
        hdrs.update({k.replace("_", "-"): v for k, v in headers.items()})
        self.routes[path] = lambda: (200, hdrs, body)

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        self.routes[path] = lambda: (status, {"Location": location, "Content-Length": "0"}, b"")

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def allowed(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(SWITCH, "true")


@pytest.fixture
def strict(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(SWITCH, raising=False)


@pytest.fixture
def public_name(monkeypatch: pytest.MonkeyPatch) -> str:
    """``public.test`` resolves to a public address (8.8.8.8) whose connections land on 127.0.0.1.

    That lets a first hop pass the address check so the redirect is what gets refused.
    """
    real = socket.getaddrinfo

    def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "public.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("8.8.8.8", port))]
        if host == "mixed.test":
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("8.8.8.8", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
            ]
        if host == "8.8.8.8":
            return real("127.0.0.1", port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return "public.test"


def leftovers(folder: str = "job_files") -> List[str]:
    found = []
    for root, _dirs, names in os.walk(folder):
        found += [os.path.join(root, n) for n in names]
    return found


# -- allowed (switch on): the helpers' behaviour --------------------------------


def test_file_download_returns_runpods_fields(server: Server, allowed: None) -> None:
    server.file("/images/cat.png", PNG)
    info = download_file(server.url + "/images/cat.png?size=big")
    assert info["type"] == "png" and info["original_name"] == "cat.png"
    assert info["extracted_path"] is None
    path = info["file_path"]
    assert path is not None and os.path.isabs(path) and path.endswith(".png")
    assert os.path.dirname(path) == os.path.abspath("job_files")
    with open(path, "rb") as handle:
        assert handle.read() == PNG


def test_content_disposition_names_the_file(server: Server, allowed: None) -> None:
    server.file("/blob", b"x" * 10, Content_Disposition='attachment; filename="../../etc/photo.JPG"')
    info = download_file(server.url + "/blob")
    assert info["original_name"] == "photo.JPG" and info["type"] == "JPG"
    assert os.path.dirname(str(info["file_path"])) == os.path.abspath("job_files")


def test_rfc5987_filename(server: Server, allowed: None) -> None:
    server.file("/blob", b"x", Content_Disposition="attachment; filename*=UTF-8''caf%C3%A9.txt")
    assert download_file(server.url + "/blob")["original_name"] == "café.txt"


def test_zip_is_extracted(server: Server, allowed: None) -> None:
    server.file("/data.zip", make_zip([("a.txt", b"A"), ("sub/b.txt", b"B")]))
    info = download_file(server.url + "/data.zip")
    folder = str(info["extracted_path"])
    assert info["type"] == "zip" and os.path.isabs(folder)
    with open(os.path.join(folder, "sub", "b.txt"), "rb") as handle:
        assert handle.read() == b"B"
    with open(os.path.join(folder, "a.txt"), "rb") as handle:
        assert handle.read() == b"A"


@pytest.mark.parametrize("name", ["../escape.txt", "sub/../../escape.txt", "/abs/escape.txt"])
def test_zip_path_traversal_is_refused(server: Server, allowed: None, name: str) -> None:
    server.file("/evil.zip", make_zip([("ok.txt", b"fine"), (name, b"gotcha")]))
    with pytest.raises(UnsafeArchive):
        download_file(server.url + "/evil.zip")
    assert not os.path.exists("escape.txt") and not os.path.exists("/abs/escape.txt")
    assert [p for p in leftovers() if p.endswith(".txt")] == []  # nothing half-extracted


def test_zip_symlink_is_refused(server: Server, allowed: None) -> None:
    server.file("/links.zip", make_zip([("a.txt", b"A")], links=("passwd",)))
    with pytest.raises(UnsafeArchive):
        download_file(server.url + "/links.zip")


def test_zip_bomb_is_capped(server: Server, allowed: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNPOD_MAX_DOWNLOAD_BYTES", "5000")
    server.file("/bomb.zip", make_zip([("zeros.bin", b"\0" * 100_000)]))
    with pytest.raises(DownloadTooLarge):
        download_file(server.url + "/bomb.zip")


def test_declared_size_over_the_cap(server: Server, allowed: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNPOD_MAX_DOWNLOAD_BYTES", "100")
    server.file("/big.bin", b"y" * 1000)
    with pytest.raises(DownloadTooLarge):
        download_file(server.url + "/big.bin")
    assert leftovers() == []
    assert server.hits["/big.bin"] == 1  # not retried


def test_undeclared_size_over_the_cap_stops_while_streaming(
    server: Server, allowed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNPOD_MAX_DOWNLOAD_BYTES", "1000")
    # No Content-Length: the body ends when the server closes (HTTP/1.0).
    server.routes["/stream.bin"] = lambda: (200, {}, b"z" * 50_000)
    with pytest.raises(DownloadTooLarge):
        download_files_from_urls("job-9", [server.url + "/stream.bin"])
    assert leftovers("jobs") == []


def test_retries_5xx_then_succeeds(server: Server, allowed: None) -> None:
    answers = iter([(503, {"Content-Length": "0"}, b""), (502, {"Content-Length": "0"}, b"")])
    server.routes["/flaky.txt"] = lambda: next(answers, (200, {"Content-Length": "2"}, b"ok"))
    info = download_file(server.url + "/flaky.txt")
    with open(str(info["file_path"]), "rb") as handle:
        assert handle.read() == b"ok"
    assert server.hits["/flaky.txt"] == 3


def test_gives_up_after_three_tries(server: Server, allowed: None) -> None:
    server.routes["/down"] = lambda: (500, {"Content-Length": "0"}, b"")
    with pytest.raises(DownloadError) as info:
        download_file(server.url + "/down")
    assert "after 3 tries" in str(info.value)
    assert server.hits["/down"] == 3


def test_client_errors_are_not_retried(server: Server, allowed: None) -> None:
    with pytest.raises(DownloadError) as info:
        download_file(server.url + "/missing")
    assert info.value.status == 404 and server.hits["/missing"] == 1


def test_redirect_is_followed(server: Server, allowed: None) -> None:
    server.file("/real.png", PNG)
    server.redirect("/moved", "/real.png", 301)
    info = download_file(server.url + "/moved")
    with open(str(info["file_path"]), "rb") as handle:
        assert handle.read() == PNG


def test_redirect_loop_is_bounded(server: Server, allowed: None) -> None:
    server.redirect("/loop", "/loop")
    with pytest.raises(DownloadRefused):
        download_file(server.url + "/loop")
    assert server.hits["/loop"] == 6  # the first request and 5 redirects


def test_download_files_from_urls(server: Server, allowed: None) -> None:
    server.file("/a.png", b"A")
    server.file("/b", b"B", Content_Disposition="attachment; filename=b.webp")
    server.routes["/gone"] = lambda: (500, {"Content-Length": "0"}, b"")
    paths = download_files_from_urls("job-1", [server.url + "/a.png", None, server.url + "/b", server.url + "/gone"])
    folder = os.path.abspath(os.path.join("jobs", "job-1", "downloaded_files"))
    assert paths[1] is None and paths[3] is None  # None passes through; a failure is None
    assert paths[0] is not None and paths[0].endswith(".png") and os.path.dirname(paths[0]) == folder
    assert paths[2] is not None and paths[2].endswith(".webp")
    with open(paths[2], "rb") as handle:
        assert handle.read() == b"B"


def test_download_files_from_a_single_url_string(server: Server, allowed: None) -> None:
    server.file("/one.txt", b"1")
    (path,) = download_files_from_urls("job-2", server.url + "/one.txt")
    assert path is not None and path.endswith(".txt")


# -- refused (switch off) ----------------------------------------------------------


def test_loopback_refused_without_the_switch(server: Server, strict: None) -> None:
    server.file("/cat.png", PNG)
    with pytest.raises(DownloadRefused) as info:
        download_file(server.url + "/cat.png")
    assert "127.0.0.1" in str(info.value) and SWITCH in str(info.value)
    assert server.hits == {}  # refused before connecting
    with pytest.raises(DownloadRefused):
        download_files_from_urls("job-3", [server.url + "/cat.png"])


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://10.1.2.3/",
        "http://100.64.0.1/",
        "file:///etc/passwd",
        "ftp://example.com/x",
        "http:///nohost",
    ],
)
def test_non_public_destinations_are_refused(strict: None, url: str) -> None:
    with pytest.raises(DownloadRefused):
        download_file(url)


def test_public_first_hop_is_fetched(server: Server, strict: None, public_name: str) -> None:
    server.file("/cat.png", PNG)
    info = download_file(f"http://{public_name}:{server.port}/cat.png")
    with open(str(info["file_path"]), "rb") as handle:
        assert handle.read() == PNG
    assert server.hosts == [f"public.test:{server.port}"]  # the name, not the pinned address


def test_redirect_to_a_private_address_is_refused(server: Server, strict: None, public_name: str) -> None:
    server.file("/cat.png", PNG)
    server.redirect("/go", f"http://127.0.0.1:{server.port}/cat.png")
    with pytest.raises(DownloadRefused) as info:
        download_file(f"http://{public_name}:{server.port}/go")
    assert "127.0.0.1" in str(info.value)
    assert server.hits == {"/go": 1}  # the private target was never requested
    assert leftovers() == []


def test_redirect_to_a_link_local_name_is_refused(server: Server, strict: None, public_name: str) -> None:
    server.redirect("/meta", "http://169.254.169.254/latest/")
    with pytest.raises(DownloadRefused):
        download_files_from_urls("job-4", [f"http://{public_name}:{server.port}/meta"])


def test_a_name_with_any_private_address_is_refused(server: Server, strict: None, public_name: str) -> None:
    with pytest.raises(DownloadRefused) as info:
        download_file(f"http://mixed.test:{server.port}/x")
    assert "10.0.0.7" in str(info.value)


@pytest.mark.parametrize(
    "address, public",
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.1.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("::ffff:10.0.0.1", False),
        ("not-an-ip", False),
    ],
)
def test_is_public_address(address: str, public: bool) -> None:
    assert is_public_address(address) is public


def test_switch_values(server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.chdir(tmp_path)
    server.file("/x.txt", b"x")
    for value in ("1", "yes", "TRUE"):
        monkeypatch.setenv(SWITCH, value)
        assert download_file(server.url + "/x.txt")["type"] == "txt"
    for value in ("0", "false", ""):
        monkeypatch.setenv(SWITCH, value)
        with pytest.raises(DownloadRefused):
            download_file(server.url + "/x.txt")


def test_importing_the_helpers_is_cheap() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from wavespeed.serverless.utils import upload_image, validate, clean, VolumeCache;"
        "print(sorted(m for m in ('requests', 'urllib3', 'boto3') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "[]", out.stderr
    # The download helpers bring requests (their errors are requests.RequestException), never boto3.
    code = (
        "import sys; from wavespeed.serverless.utils import download_file;"
        "print(sorted(m for m in ('boto3', 'flask', 'waitress') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "[]", out.stderr




# -- runpod's error classes and rp_ssrf.safe_get -------------------------------------------


def test_errors_are_request_exceptions_and_refusals_value_errors(server: Server, allowed: None) -> None:
    import requests

    from wavespeed.serverless.utils import DownloadBlocked

    server.routes["/gone"] = lambda: (404, {"Content-Length": "0"}, b"")
    with pytest.raises(requests.RequestException) as failed:  # what code written for runpod catches
        download_file(server.url + "/gone")
    assert isinstance(failed.value, DownloadError) and failed.value.status == 404
    for blocked in (DownloadRefused, DownloadTooLarge, UnsafeArchive):
        assert issubclass(blocked, DownloadBlocked) and issubclass(blocked, ValueError)
        assert issubclass(blocked, requests.RequestException)


def test_safe_get_streams_a_response(server: Server, allowed: None) -> None:
    from wavespeed.serverless.utils import safe_get
    from wavespeed.serverless.utils.download import iter_content_capped

    server.file("/x.bin", PNG, Content_Type="image/png")
    server.redirect("/hop", "/x.bin")
    with safe_get(server.url + "/hop", headers={"X-Mine": "1"}) as response:
        assert response.status_code == 200 and response.url == server.url + "/x.bin"
        assert response.headers["Content-Type"] == "image/png"
        assert b"".join(iter_content_capped(response, 1024, None)) == PNG
    whole = safe_get(server.url + "/x.bin", stream=False)
    assert whole.content == PNG
    with pytest.raises(DownloadTooLarge):
        safe_get(server.url + "/x.bin", max_bytes=100)  # declared Content-Length over the cap
    server.routes["/lying"] = lambda: (200, {}, PNG)  # no Content-Length: caught while reading
    with safe_get(server.url + "/lying") as response:
        with pytest.raises(DownloadTooLarge):
            b"".join(iter_content_capped(response, 256, 1000))


def test_safe_get_refuses_what_downloads_refuse(server: Server, strict: None, public_name: str) -> None:
    from wavespeed.serverless.utils import safe_get

    server.redirect("/to-private", server.url + "/x")
    with pytest.raises(DownloadRefused):
        safe_get(server.url + "/x")  # loopback
    with pytest.raises(DownloadRefused):
        safe_get(f"http://{public_name}:{server.port}/to-private")  # checked again after the redirect
    assert server.hits.get("/x") is None
