"""The hot path's HTTP (exchange.py) and its header reader (headers.py), on the wire.

A scripted loopback server answers with exact bytes and records exact
bytes, so these tests see what ``exchange()`` writes and how it reads
answers a friendlier server would never send: 100 Continue, chunked
bodies, HTTP/1.0 read-to-close, Connection: close, gzip, an answer sent
before the body was read, a server that never answers or hangs up.
The header reader is checked against ``http.client.parse_headers`` itself.
"""

import gzip
import http.client
import io
import pathlib
import shutil
import socket
import ssl
import subprocess
import threading
import time
from typing import Callable, Iterator, List, Optional

import pytest
import urllib3
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from wavespeed.serverless.exchange import (
    SMALL_BODY,
    Answer,
    exchange,
    header_block,
    host_line,
    wire_target,
)
from wavespeed.serverless.headers import MAX_HEADERS, parse_header_lines, read_header_lines

pytestmark = pytest.mark.timeout(30)


# -- the header reader against http.client ------------------------------------------

HEADER_BLOCKS = [
    b"Content-Type: application/json\r\nContent-Length: 2\r\n",
    b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Empty:\r\nX-Blank: \t \r\n",
    b"X-Trailing: value with spaces   \r\nX-Tab:\tv\r\nx-lower: v\r\n",
    b"X-Latin: caf\xe9\r\nX-Colons: a:b:c\r\n",
    b"X-Lf-Only: v\n",
    # Everything below leaves the fast path: the email parser reads it.
    b"X-Folded: first\r\n  second\r\nNext: v\r\n",
    b"No colon here\r\nAfter: v\r\n",
    b"Bad Name: v\r\nAfter: v\r\n",
    b": empty name\r\n",
    b"From someone\r\nX: v\r\n",
    b"X-Cr: a\rb\r\nNext: v\r\n",
]


@pytest.mark.parametrize("block", HEADER_BLOCKS)
def test_headers_read_as_http_client_reads_them(block: bytes) -> None:
    ours = parse_header_lines(read_header_lines(io.BytesIO(block + b"\r\nbody")))
    theirs = http.client.parse_headers(io.BytesIO(block + b"\r\nbody"))
    assert isinstance(ours, http.client.HTTPMessage)
    assert ours.items() == theirs.items()
    assert bool(ours.defects) == bool(theirs.defects)
    assert (ours.get_payload() or "") == (theirs.get_payload() or "")
    for name in ("content-type", "SET-COOKIE", "x-trailing", "missing"):
        assert ours.get(name) == theirs.get(name)
        assert ours.get_all(name) == theirs.get_all(name)


def test_the_header_reader_stops_at_the_blank_line() -> None:
    fp = io.BytesIO(b"A: 1\r\n\r\nB: 2\r\n")
    assert read_header_lines(fp) == [b"A: 1\r\n"]
    assert fp.read() == b"B: 2\r\n"  # the body is left unread


def test_the_header_reader_keeps_http_clients_limits() -> None:
    with pytest.raises(http.client.LineTooLong):
        read_header_lines(io.BytesIO(b"X: " + b"a" * 70000 + b"\r\n\r\n"))
    many = b"".join(b"X-%d: v\r\n" % i for i in range(MAX_HEADERS + 1)) + b"\r\n"
    with pytest.raises(http.client.HTTPException, match="more than 100 headers"):
        read_header_lines(io.BytesIO(many))
    exactly = b"".join(b"X-%d: v\r\n" % i for i in range(MAX_HEADERS)) + b"\r\n"
    assert len(read_header_lines(io.BytesIO(exactly))) == MAX_HEADERS


# -- a scripted server ----------------------------------------------------------------


class Link:
    """One accepted connection: the socket, and bytes read past the current request head."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending = b""


Script = Callable[[Link, bytes], None]


class RawServer:
    """Accepts connections on 127.0.0.1; for each request head runs ``script(link, head)``.

    Records every request's raw bytes (head + the body its Content-Length
    announces, read by ``read_body``) and counts connections.
    """

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: List[bytes] = []
        self.connections = 0
        self.lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.threads: List[threading.Thread] = []
        self.links: List[Link] = []
        self.stopping = threading.Event()
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            link = Link(sock)
            with self.lock:
                self.connections += 1
                self.links.append(link)
            thread = threading.Thread(target=self._serve, args=(link,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, link: Link) -> None:
        try:
            while not self.stopping.is_set():
                while b"\r\n\r\n" not in link.pending:
                    data = link.sock.recv(65536)
                    if not data:
                        return
                    link.pending += data
                head, _, link.pending = link.pending.partition(b"\r\n\r\n")
                self.script(link, head + b"\r\n\r\n")
        except OSError:
            return
        finally:
            link.sock.close()

    def read_body(self, link: Link, head: bytes) -> bytes:
        """Read the body the head announces; record head + body."""
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = link.pending
        while len(body) < length:
            data = link.sock.recv(1 << 20)
            if not data:
                break
            body += data
        link.pending = body[length:]
        with self.lock:
            self.requests.append(head + body[:length])
        return body[:length]

    def close(self) -> None:
        self.stopping.set()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone does not
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            links = list(self.links)
        for link in links:
            try:
                link.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in [self.acceptor, *self.threads]:
            thread.join(5)
            assert not thread.is_alive(), "a server thread did not stop"


@pytest.fixture
def serve() -> Iterator[Callable[..., RawServer]]:
    servers: List[RawServer] = []

    def start(script: Optional[Script] = None, **kwargs: bytes) -> RawServer:
        holder: List[RawServer] = []

        def run(link: Link, head: bytes) -> None:
            (script or default)(link, head)

        def default(link: Link, head: bytes) -> None:
            body = holder[0].read_body(link, head)
            status = kwargs.get("status", b"200 OK")
            reply = kwargs.get("body", b"ok" if not body else body)
            extra = kwargs.get("extra", b"")
            link.sock.sendall(
                b"HTTP/1.1 %s\r\nContent-Length: %d\r\n%s\r\n%s"
                % (status, len(reply), extra, reply)
            )

        server = RawServer(run)
        holder.append(server)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def pool_for(server: RawServer) -> urllib3.HTTPConnectionPool:
    return urllib3.HTTPConnectionPool("127.0.0.1", server.port, maxsize=2)


def call(
    server: RawServer,
    pool: Optional[urllib3.HTTPConnectionPool] = None,
    method: bytes = b"GET",
    target: bytes = b"/take?x=1",
    body: Optional[bytes] = None,
    read: float = 5.0,
) -> Answer:
    pool = pool or pool_for(server)
    return exchange(
        pool, host_line(pool), method, target, header_block({"A": "b"}), body, 5.0, read
    )


# -- what exchange() writes -----------------------------------------------------------


def test_a_get_is_written_exactly(serve: Callable[..., RawServer]) -> None:
    server = serve()
    reply = call(server)
    assert (reply.status, reply.data) == (200, b"ok")
    assert server.requests == [
        b"GET /take?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nA: b\r\n"
        b"Accept-Encoding: identity\r\n\r\n" % server.port
    ]


@pytest.mark.parametrize("size", [0, 10, SMALL_BODY, SMALL_BODY + 1, 3 << 20])
def test_a_post_body_arrives_whole_with_its_length(
    serve: Callable[..., RawServer], size: int
) -> None:
    server = serve()
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    reply = call(server, method=b"POST", target=b"/done", body=body)
    assert reply.status == 200
    (raw,) = server.requests
    head, _, sent = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /done HTTP/1.1\r\n")
    assert b"\r\nContent-Length: %d" % size in head
    assert sent == body


def test_connections_are_reused_and_closed_when_the_server_says_so(
    serve: Callable[..., RawServer],
) -> None:
    keep = serve()
    pool = pool_for(keep)
    for _ in range(5):
        assert call(keep, pool).status == 200
    assert keep.connections == 1

    closing = serve(extra=b"Connection: close\r\n")
    pool = pool_for(closing)
    for _ in range(3):
        assert call(closing, pool).status == 200
    assert closing.connections == 3


def test_a_connection_the_server_closed_while_idle_is_replaced(
    serve: Callable[..., RawServer],
) -> None:
    server = serve()
    pool = pool_for(server)
    assert call(server, pool).status == 200
    with server.lock:
        first = server.links[0]
    first.sock.shutdown(socket.SHUT_RDWR)  # the server drops the idle keep-alive connection
    assert call(server, pool).status == 200
    assert server.connections == 2


# -- how exchange() reads answers ---------------------------------------------------------


def test_100_continue_then_the_answer(serve: Callable[..., RawServer]) -> None:
    def script(link: Link, head: bytes) -> None:
        link.sock.sendall(b"HTTP/1.1 100 Continue\r\nX-Skip: 1\r\n\r\n")
        link.sock.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\nX-Real: 1\r\n\r\nyes")

    reply = call(serve(script))
    assert (reply.status, reply.data) == (201, b"yes")
    assert reply.headers.get("X-Real") == "1" and reply.headers.get("X-Skip") is None


def test_a_chunked_answer(serve: Callable[..., RawServer]) -> None:
    def script(link: Link, head: bytes) -> None:
        link.sock.sendall(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n"
        )

    server = serve(script)
    pool = pool_for(server)
    assert call(server, pool).data == b"[1,2]"
    assert call(server, pool).data == b"[1,2]"
    assert server.connections == 1  # chunked answers keep the connection


def test_an_http_1_0_answer_without_length_is_read_to_the_close(
    serve: Callable[..., RawServer],
) -> None:
    def script(link: Link, head: bytes) -> None:
        link.sock.sendall(b'HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{"id": 1}')
        link.sock.shutdown(socket.SHUT_WR)

    reply = call(serve(script))
    assert reply.data == b'{"id": 1}'


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
def test_answers_without_a_body(serve: Callable[..., RawServer], status: bytes) -> None:
    def script(link: Link, head: bytes) -> None:
        link.sock.sendall(b"HTTP/1.1 %s\r\n\r\n" % status)

    server = serve(script)
    pool = pool_for(server)
    for _ in range(2):
        assert call(server, pool).data == b""
    assert server.connections == 1


def test_a_gzip_answer_is_decoded(serve: Callable[..., RawServer]) -> None:
    packed = gzip.compress(b'{"id": "j"}')
    reply = call(serve(body=packed, extra=b"Content-Encoding: gzip\r\n"))
    assert reply.data == b'{"id": "j"}'


@pytest.mark.parametrize("then", ["drains", "hangs_up"])
def test_an_answer_sent_before_the_body_was_read_is_still_read(
    serve: Callable[..., RawServer], then: str
) -> None:
    """The platform refuses a big body at its head, then reads the rest or hangs up.

    Hanging up makes our send fail (a broken pipe or a reset); as in urllib3, the
    answer that had already arrived is read all the same.
    """

    def script(link: Link, head: bytes) -> None:
        link.sock.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\n\r\ntoo big!")
        link.sock.shutdown(socket.SHUT_WR)
        if then == "hangs_up":
            time.sleep(0.05)
            link.sock.close()
            return
        link.sock.settimeout(5)
        while link.sock.recv(1 << 20):  # a FIN, not a reset, once all is read
            pass

    reply = call(serve(script), method=b"POST", body=b"x" * (32 << 20))
    assert (reply.status, reply.data) == (413, b"too big!")


def test_a_silent_server_is_a_read_timeout(serve: Callable[..., RawServer]) -> None:
    gate = threading.Event()

    def script(link: Link, head: bytes) -> None:
        gate.wait(5)

    try:
        with pytest.raises(ReadTimeoutError):
            call(serve(script), read=0.2)
    finally:
        gate.set()


def test_a_hang_up_without_an_answer_is_a_protocol_error(serve: Callable[..., RawServer]) -> None:
    def script(link: Link, head: bytes) -> None:
        link.sock.shutdown(socket.SHUT_RDWR)

    with pytest.raises(ProtocolError, match="Connection aborted") as caught:
        call(serve(script))
    assert isinstance(caught.value.args[1], http.client.RemoteDisconnected)


def test_a_garbled_status_line_is_a_protocol_error(serve: Callable[..., RawServer]) -> None:
    def script(link: Link, head: bytes) -> None:
        link.sock.sendall(b"SPDY/9 200 OK\r\n\r\n")

    with pytest.raises(ProtocolError):
        call(serve(script))


def test_a_closed_pool_raises_what_urllib3_raises(serve: Callable[..., RawServer]) -> None:
    server = serve()
    pool = pool_for(server)
    pool.close()
    with pytest.raises(urllib3.exceptions.ClosedPoolError):
        call(server, pool)


# -- the bytes made once --------------------------------------------------------------------


def test_header_block_refuses_what_http_client_refuses() -> None:
    assert header_block({"Authorization": "k"}) == (
        b"Authorization: k\r\nAccept-Encoding: identity\r\n"
    )
    for value in ("a\r\nX-Injected: 1", "a\nb", "a\0b"):
        with pytest.raises(ValueError):
            header_block({"Authorization": value})
    with pytest.raises(ValueError):  # latin-1 cannot carry it
        header_block({"Authorization": "key-\u2603"})


@pytest.mark.parametrize(
    "target, wire",
    [
        ("/job-take/w?gpu=x&job_in_progress=0", b"/job-take/w?gpu=x&job_in_progress=0"),
        ("/job-done/w/a%20b?isStream=false", b"/job-done/w/a%20b?isStream=false"),
        ("/p/with space", b"/p/with%20space"),
        ("/p/caf\u00e9", b"/p/caf%C3%A9"),
        ("/p/\x00\x7f", b"/p/%00%7F"),
    ],
)
def test_wire_target(target: str, wire: bytes) -> None:
    assert wire_target(target) == wire


def test_host_line() -> None:
    assert host_line(urllib3.HTTPConnectionPool("example.com", 80)) == b"Host: example.com\r\n"
    assert (
        host_line(urllib3.HTTPConnectionPool("example.com", 8080)) == b"Host: example.com:8080\r\n"
    )
    assert host_line(urllib3.HTTPSConnectionPool("example.com", 443)) == b"Host: example.com\r\n"
    assert host_line(urllib3.HTTPConnectionPool("::1", 8000)) == b"Host: [::1]:8000\r\n"
    assert host_line(urllib3.HTTPConnectionPool("[::1]", 80)) == b"Host: [::1]\r\n"


# -- TLS: the pool's settings apply --------------------------------------------------------


@pytest.fixture
def tls_server(tmp_path: pathlib.Path, serve: Callable[..., RawServer]) -> Iterator[tuple]:
    """A RawServer behind TLS with a self-signed certificate for 127.0.0.1 (openssl CLI)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        capture_output=True,
        timeout=60,
    )
    if made.returncode != 0:
        pytest.skip("openssl could not make a certificate: %s" % made.stderr[-200:])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    server = serve()
    plain_serve = server._serve

    def serve_tls(link: Link) -> None:
        try:
            link.sock = context.wrap_socket(link.sock, server_side=True)
        except (OSError, ssl.SSLError):
            link.sock.close()
            return
        plain_serve(link)

    server._serve = serve_tls  # type: ignore[method-assign]
    yield server, str(cert)


def test_tls_is_verified_with_the_pools_settings(tls_server: tuple) -> None:
    server, cert = tls_server
    untrusted = urllib3.HTTPSConnectionPool("127.0.0.1", server.port, cert_reqs="CERT_REQUIRED")
    with pytest.raises(urllib3.exceptions.SSLError):
        exchange(untrusted, host_line(untrusted), b"GET", b"/", header_block({}), None, 5.0, 5.0)
    trusted = urllib3.HTTPSConnectionPool(
        "127.0.0.1", server.port, cert_reqs="CERT_REQUIRED", ca_certs=cert
    )
    for _ in range(2):
        reply = exchange(
            trusted, host_line(trusted), b"POST", b"/d", header_block({}), b"hi", 5.0, 5.0
        )
        assert (reply.status, reply.data) == (200, b"hi")
    assert server.requests[-1].startswith(
        b"POST /d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % server.port
    )
