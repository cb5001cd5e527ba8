"""A tiny ``GET``/``HEAD /health`` server for worker mode (stdlib only).

Kubernetes (Waverless) probes pods here. It answers 200 with the worker's
state while the worker is healthy (running or draining) and 503 when it is
not (the fetcher thread died, or its loop stopped ticking).
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Optional, Tuple

from .logs import logger

log = logger("health")

StatusFn = Callable[[], Tuple[bool, Dict[str, Any]]]


class HealthServer:
    """Owned by the worker; ``start()`` never raises for a busy port."""

    def __init__(self, host: str, port: int, status: StatusFn) -> None:
        self.host = host
        self.port = port
        self._status = status
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> bool:
        status = self._status

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, with_body: bool) -> None:
                if self.path.split("?", 1)[0].rstrip("/") != "/health":
                    self.send_error(404)
                    return
                healthy, details = status()
                body = json.dumps(details).encode()
                self.send_response(200 if healthy else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._answer(True)

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(False)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # probes every few seconds would flood the log

        try:
            self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        except OSError as exc:
            log.warning(
                "health endpoint not started: cannot bind %s:%d (%s); "
                "set WAVESPEED_HEALTH_PORT or --health_port (0 turns it off)",
                self.host,
                self.port,
                exc.strerror or exc,
            )
            return False
        self._server.daemon_threads = True  # probe connections hold no job
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="wavespeed-health"
        )
        self._thread.start()
        log.debug("health endpoint on %s:%d/health", self.host, self.port)
        return True

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
