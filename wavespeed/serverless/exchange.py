"""One HTTP/1.1 request and its answer, on a connection of a session's urllib3 pool.

This is the hot path's HTTP: every job-take, job-done, stream chunk and
progress update goes through ``exchange()``. It borrows a connection from
the pool (``_get_conn``, which also drops a connection the platform has
closed), writes the request itself and reads the answer with
``headers.Response``, then gives the connection back (``_put_conn``).

Why not ``pool.urlopen``: per request it parses and re-encodes the target,
merges and checks headers, builds an http.client request state machine and
a urllib3 ``HTTPResponse`` around the http.client one, and sends headers and
body in two writes. Against the bench's loopback platform that is 0.4 ms of
CPU per job (take + done) where this path needs 0.15-0.2 ms. Here:

- the request line's target and the header block are bytes made once (per
  job, or per worker for job-take) by the transport, checked as
  ``http.client`` would check them (``header_block``, ``wire_target``);
- a small request is one ``sendall``; a large body is sent after its head,
  from the caller's buffer (a 20 MB result is never copied);
- the answer is read whole: the worker's answers are small.

What ``urlopen`` guarantees is kept: the pool's connections (tracked, so a
shutdown can cut them), its TLS settings (``conn.connect()``), the same
exceptions for the same faults (``ReadTimeoutError`` for a timeout,
``ProtocolError("Connection aborted.", ...)`` for a dropped connection,
``SSLError``, and the connect errors as they are), so the ``Retry``
policies retry exactly what they did. As in urllib3, a broken pipe while
sending does not end the exchange: the platform may have answered (a 413)
before closing, and that answer is read.
"""

import http.client
import socket
import ssl
import zlib
from typing import Any, Optional, Union

from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import ProtocolError, ReadTimeoutError, SSLError

from .headers import Response

#: Bodies up to this size go out in the same write as the request head.
SMALL_BODY = 64 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)
# What http.client refuses in a header value: a line break not followed by a blank.
_BAD_VALUE_CHARS = ("\r", "\n", "\0")


class Answer:
    """A platform's answer: status, headers (``http.client.HTTPMessage``) and body."""

    __slots__ = ("status", "headers", "data")

    def __init__(self, status: int, headers: http.client.HTTPMessage, data: bytes) -> None:
        self.status = status
        self.headers = headers
        self.data = data

    def get_redirect_location(self) -> Union[str, None, bool]:
        """As urllib3's response has it (``Retry.increment`` asks)."""
        if self.status in _REDIRECTS:
            return self.headers.get("Location")
        return False


def header_block(headers: dict[str, str]) -> bytes:
    """``Name: value\\r\\n`` lines for these headers, made once, checked as http.client does.

    Raises ValueError for a value with a line break or NUL (header
    injection) or a character latin-1 cannot carry, as http.client would at
    each request.
    """
    lines = []
    for name, value in headers.items():
        if any(c in value for c in _BAD_VALUE_CHARS) or not name.isascii() or ":" in name:
            raise ValueError(f"Invalid header {name!r}")
        lines.append(f"{name}: {value}\r\n")
    lines.append("Accept-Encoding: identity\r\n")  # what http.client sends; nothing to decode
    return "".join(lines).encode("latin-1")


def wire_target(target: str) -> bytes:
    """A request target as sent: anything outside printable ASCII percent-encoded."""
    if target.isascii() and target.isprintable() and " " not in target:
        return target.encode("ascii")
    out = []
    for char in target:
        if "!" <= char <= "~":
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8"))
    return "".join(out).encode("ascii")


def host_line(pool: HTTPConnectionPool) -> bytes:
    """The ``Host`` header of requests to this pool's origin (as http.client writes it)."""
    host = pool.host or ""
    try:
        name = host.encode("ascii")
    except UnicodeEncodeError:
        name = host.encode("idna")
    if b":" in name and not name.startswith(b"["):
        name = b"[" + name + b"]"  # IPv6
    default = 443 if pool.scheme == "https" else 80
    if pool.port is None or pool.port == default:
        return b"Host: " + name + b"\r\n"
    return b"Host: %s:%d\r\n" % (name, pool.port)


def exchange(
    pool: HTTPConnectionPool,
    host: bytes,
    method: bytes,
    target: bytes,
    head: bytes,
    body: Optional[bytes],
    connect_timeout: float,
    read_timeout: float,
) -> Answer:
    """Send one request on a pooled connection and read its whole answer.

    ``host`` is ``host_line(pool)``, ``head`` a ``header_block``. Raises
    urllib3's exceptions, as ``urlopen(retries=False)`` would.
    """
    conn: Any = pool._get_conn()  # ClosedPoolError once the pool is closed
    keep = False
    try:
        if conn.sock is None:
            conn.timeout = connect_timeout
            conn.connect()  # ConnectTimeoutError, NewConnectionError; TLS as the pool sets it
        sock = conn.sock
        sock.settimeout(read_timeout)
        request = b"%s %s HTTP/1.1\r\n%s%s" % (method, target, host, head)
        try:
            if body is None:
                sock.sendall(request + b"\r\n")
            elif len(body) <= SMALL_BODY:
                sock.sendall(b"%sContent-Length: %d\r\n\r\n%s" % (request, len(body), body))
            else:
                sock.sendall(b"%sContent-Length: %d\r\n\r\n" % (request, len(body)))
                sock.sendall(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it may have answered before closing (a 413): read that answer
        response = Response(sock, method=method.decode("ascii"))
        try:
            response.begin()
            data = response.read()
        finally:
            response.close()
        keep = not response.will_close
    except socket.timeout as exc:
        raise ReadTimeoutError(
            pool, target.decode("ascii"), f"Read timed out. (read timeout={read_timeout})"
        ) from exc
    except (ssl.SSLError, ssl.CertificateError) as exc:
        raise SSLError(exc) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise ProtocolError("Connection aborted.", exc) from exc
    finally:
        if not keep:
            conn.close()
        pool._put_conn(conn)
    coding = response.headers.get("Content-Encoding")
    if coding and data:
        data = _decoded(coding, data)
    return Answer(response.status, response.headers, data)


def _decoded(coding: str, data: bytes) -> bytes:
    """The body of an answer compressed although we asked for identity (gzip, deflate)."""
    coding = coding.strip().lower()
    try:
        if coding in ("gzip", "x-gzip"):
            return zlib.decompress(data, 16 + zlib.MAX_WBITS)
        if coding == "deflate":
            try:
                return zlib.decompress(data)
            except zlib.error:
                return zlib.decompress(data, -zlib.MAX_WBITS)  # raw deflate, as some servers send
    except zlib.error as exc:
        text = f"Received response with content-encoding: {coding}, but failed to decode it."
        raise ProtocolError(text, exc) from exc
    return data
