"""Connections another thread can cut: ``abort_fetch()`` and ``abort_posts()``.

The adapters below make their urllib3 pools use connection classes that
register each connection with a ``Tracker`` before it connects, so a
shutdown can shut down every socket, including one still in ``connect()``
(on Linux, shutting down a connecting socket aborts the connect). Their
answers are read by ``headers.Response``, which skips the email parser.
"""

import socket
import sys
import threading
import weakref
from typing import Any, Optional

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util.connection import allowed_gai_family

from .headers import Response


class Tracker:
    """The live connections of some pools, so another thread can cut them all.

    Set ``refuse`` to make new connections fail too (after ``abort_posts()``).
    """

    def __init__(self, refuse: Optional[threading.Event] = None) -> None:
        self.refuse = refuse
        self._lock = threading.Lock()
        self._conns: weakref.WeakSet[Any] = weakref.WeakSet()

    def add(self, conn: Any) -> None:
        with self._lock:
            self._conns.add(conn)

    def cut(self) -> None:
        """Shut down every tracked socket: a thread blocked on it returns at once."""
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            for sock in (getattr(conn, "sock", None), getattr(conn, "connecting_sock", None)):
                if sock is None:
                    continue
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed


def _open_socket(conn: Any, tracker: Tracker) -> socket.socket:
    """urllib3's ``create_connection``, with the socket tracked before ``connect()``.

    On Linux, shutting down a socket that is still connecting aborts the
    connect, so a post stuck on an unresponsive platform is cut at once too.
    """
    host = getattr(conn, "_dns_host", conn.host)
    if host.startswith("["):
        host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, conn.port, allowed_gai_family(), socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NewConnectionError(conn, f"Failed to resolve '{conn.host}' ({exc})") from exc
    error: Optional[OSError] = None
    for family, kind, proto, _name, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            for option in conn.socket_options or ():
                sock.setsockopt(*option)
            if conn.timeout is None or isinstance(conn.timeout, (int, float)):
                sock.settimeout(conn.timeout)
            if conn.source_address:
                sock.bind(conn.source_address)
            conn.connecting_sock = sock
            tracker.add(conn)
            if tracker.refuse is not None and tracker.refuse.is_set():
                raise ConnectionAbortedError("posts were aborted (worker shutting down)")
            sock.connect(address)
            sys.audit("http.client.connect", conn, conn.host, conn.port)
            return sock
        except socket.timeout as exc:
            sock.close()
            raise ConnectTimeoutError(
                conn, f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})"
            ) from exc
        except OSError as exc:
            sock.close()
            error = exc
        finally:
            conn.connecting_sock = None
    raise NewConnectionError(conn, f"Failed to establish a new connection: {error}") from error


class TrackedAdapter(HTTPAdapter):
    """An adapter whose pools make connections a ``Tracker`` can cut."""

    def __init__(self, tracker: Tracker, **kwargs: Any) -> None:
        self._tracker = tracker
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        # types-requests leaves init_poolmanager unannotated.
        super().init_poolmanager(*args, **kwargs)  # type: ignore[no-untyped-call]
        tracker = self._tracker

        class TrackedHTTP(HTTPConnection):
            connecting_sock: Optional[socket.socket] = None
            response_class = Response

            def _new_conn(self) -> socket.socket:
                return _open_socket(self, tracker)

        class TrackedHTTPS(HTTPSConnection):
            connecting_sock: Optional[socket.socket] = None
            response_class = Response

            def _new_conn(self) -> socket.socket:
                return _open_socket(self, tracker)

        class HTTPPool(HTTPConnectionPool):
            ConnectionCls = TrackedHTTP

        class HTTPSPool(HTTPSConnectionPool):
            ConnectionCls = TrackedHTTPS

        self.poolmanager.pool_classes_by_scheme = {"http": HTTPPool, "https": HTTPSPool}
