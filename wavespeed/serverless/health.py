"""A tiny ``GET``/``HEAD /health`` (and ``/metrics``) server for worker mode (stdlib only).

Kubernetes (Waverless) probes pods here. It answers 200 with the worker's
state while the worker is healthy (running or draining) and 503 when it is
not (the fetcher thread died, or its loop stopped ticking).

The port is open to the whole cluster, so no client may cost the worker
more than a socket: one thread serves every connection with ``selectors``
(a connection costs no thread), a connection gets ``IDLE_TIMEOUT`` seconds
from its opening to send its request before it is closed, and past
``MAX_CONNECTIONS`` the oldest connection is closed to make room, so a probe
always gets in. A probe sends a few hundred bytes and reads a few hundred,
which is all this server speaks: one request line, a JSON answer, close.
"""

import json
import selectors
import socket
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Optional

from .job import non_finite_as_null
from .logs import logger

log = logger("health")

StatusFn = Callable[[], tuple[bool, dict[str, Any]]]
MetricsFn = Callable[[], tuple[int, bytes, str]]  # (status, body, content type)

IDLE_TIMEOUT = 5.0  # seconds from accept to the end of the answer
MAX_CONNECTIONS = 256
MAX_REQUEST = 8192  # bytes of request line and headers
REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


class _Connection:
    __slots__ = ("sock", "deadline", "received", "outgoing")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.received = b""
        self.outgoing = b""


class HealthServer:
    """Owned by the worker; ``start()`` never raises for a busy port."""

    def __init__(
        self,
        host: str,
        port: int,
        status: StatusFn,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        metrics: Optional[MetricsFn] = None,
    ) -> None:
        self.host = host
        self._metrics = metrics
        self.port = port
        self._status = status
        self._idle_timeout = idle_timeout
        self._max_connections = max(1, max_connections)
        self._listener: Optional[socket.socket] = None
        self._selector: Optional[selectors.BaseSelector] = None
        self._wake: Optional[tuple[socket.socket, socket.socket]] = None
        self._connections: OrderedDict[socket.socket, _Connection] = OrderedDict()
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> bool:
        try:
            listener = socket.create_server((self.host, self.port), backlog=64)
        except OSError as exc:
            log.warning(
                "health endpoint not started: cannot bind %s:%d (%s); "
                "set WAVESPEED_HEALTH_PORT or --health_port (0 turns it off)",
                self.host,
                self.port,
                exc.strerror or exc,
            )
            return False
        listener.setblocking(False)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._wake = socket.socketpair()  # stop() writes here to end select() at once
        self._wake[0].setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake[0], selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._serve, name="wavespeed-health")
        self._thread.start()
        log.debug("health endpoint on %s:%d/health", self.host, self.port)
        return True

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stopping.set()
        if self._wake is not None:
            try:
                self._wake[1].send(b"x")
            except OSError:
                pass
        self._thread.join(5)
        self._thread = None

    # -- the one thread ---------------------------------------------------------------

    def _serve(self) -> None:
        selector = self._selector
        assert selector is not None
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                self._expire(now)
                wait = 1.0
                if self._connections:
                    first = next(iter(self._connections.values()))
                    wait = min(wait, max(0.0, first.deadline - now))
                for key, events in selector.select(wait):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        pass
                    elif events & selectors.EVENT_READ:
                        self._read(key.data)
                    else:
                        self._write(key.data)
        except Exception:  # noqa: BLE001 - the health port must never take the worker down
            log.exception("health endpoint stopped by an error")
        finally:
            for connection in list(self._connections.values()):
                self._close(connection)
            selector.close()
            for sock in (self._listener,) + (self._wake or ()):
                if sock is not None:
                    sock.close()

    def _accept(self) -> None:
        assert self._listener is not None and self._selector is not None
        for _ in range(64):  # a burst at a time; the loop comes back for more
            try:
                sock, _address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors, say: drop, go on
                log.debug("health endpoint: accept failed: %s", exc)
                return
            if len(self._connections) >= self._max_connections:
                # Connections are kept oldest first: make room for the newcomer.
                self._close(next(iter(self._connections.values())))
            sock.setblocking(False)
            connection = _Connection(sock, time.monotonic() + self._idle_timeout)
            self._connections[sock] = connection
            self._selector.register(sock, selectors.EVENT_READ, connection)

    def _read(self, connection: _Connection) -> None:
        try:
            data = connection.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(connection)
            return
        connection.received += data
        end = connection.received.find(b"\r\n\r\n")
        if end < 0:
            end = connection.received.find(b"\n\n")
        if end >= 0:
            self._answer(connection, connection.received[:end])
        elif len(connection.received) > MAX_REQUEST:
            self._respond(connection, 400, {"error": "request too large"}, True)

    def _answer(self, connection: _Connection, head: bytes) -> None:
        words = head.split(b"\n", 1)[0].decode("latin-1").split()
        if len(words) != 3 or not words[2].startswith("HTTP/"):
            self._respond(connection, 400, {"error": "bad request line"}, True)
            return
        method, target = words[0], words[1]
        path = target.split("?", 1)[0].rstrip("/")
        if path == "/metrics" and self._metrics is not None and method in ("GET", "HEAD"):
            code, body, content_type = self._metrics()
            self._respond_raw(connection, code, body, content_type, method == "GET")
            return
        if path != "/health":
            self._respond(connection, 404, {"error": "not found"}, method != "HEAD")
            return
        if method not in ("GET", "HEAD"):
            self._respond(connection, 405, {"error": "use GET or HEAD"}, True)
            return
        try:
            healthy, details = self._status()
        except Exception as exc:  # noqa: BLE001 - a failing check is an unhealthy worker
            healthy = False
            details = {"status": "unhealthy", "error": f"{type(exc).__name__}: {exc}"}
        self._respond(connection, 200 if healthy else 503, details, method == "GET")

    def _respond(self, connection: _Connection, code: int, doc: Any, with_body: bool) -> None:
        self._respond_raw(connection, code, _encode(doc), "application/json", with_body)

    def _respond_raw(
        self, connection: _Connection, code: int, body: bytes, content_type: str, with_body: bool
    ) -> None:
        head = (
            f"HTTP/1.1 {code} {REASONS.get(code, '')}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n"
            + ("Allow: GET, HEAD\r\n" if code == 405 else "")
            + "\r\n"
        )
        connection.outgoing = head.encode("latin-1") + (body if with_body else b"")
        assert self._selector is not None
        self._selector.modify(connection.sock, selectors.EVENT_WRITE, connection)
        self._write(connection)

    def _write(self, connection: _Connection) -> None:
        try:
            sent = connection.sock.send(connection.outgoing)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(connection)
            return
        connection.outgoing = connection.outgoing[sent:]
        if not connection.outgoing:
            self._close(connection)

    def _expire(self, now: float) -> None:
        while self._connections:
            oldest = next(iter(self._connections.values()))
            if oldest.deadline > now:
                return
            self._close(oldest)

    def _close(self, connection: _Connection) -> None:
        if self._connections.pop(connection.sock, None) is None:
            return
        assert self._selector is not None
        try:
            self._selector.unregister(connection.sock)
        except (KeyError, ValueError):
            pass
        connection.sock.close()


def _encode(doc: Any) -> bytes:
    """JSON bytes; NaN and Infinity (not JSON) become null."""
    try:
        return json.dumps(doc, allow_nan=False, default=str).encode()
    except ValueError:
        return json.dumps(non_finite_as_null(doc), allow_nan=False, default=str).encode()
