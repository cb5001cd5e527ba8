"""Serving the app on waitress, and ``serve()`` for ``start()``.

waitress is set up deliberately rather than with its defaults: its threads
(see ``ApiOptions.resolve``), a connection limit well above its default of
100 (idle and half-sent connections cost a socket each, not a thread, and at
100 they stopped the server from accepting), a short idle timeout, and its
own body limit equal to the API's, so an oversized request is answered 413
from its headers, before its body is received.
"""

import signal
import threading
from typing import TYPE_CHECKING, Any, Optional

from ..config import Config
from ..logs import logger
from .app import WaitBudget, create_app
from .endpoint import LocalEndpoint
from .options import ALL_INTERFACES, ApiOptions, bind_address

if TYPE_CHECKING:  # pragma: no cover
    import flask

log = logger("api")

CLEANUP_INTERVAL = 5  # seconds between waitress's sweeps for idle connections


class ApiServer:
    """The app on a waitress server, with the app's ``LocalEndpoint``."""

    def __init__(self, server: Any, app: "flask.Flask") -> None:
        self.server = server
        self.app = app
        self.endpoint: LocalEndpoint = app.extensions["wavespeed"]
        self.waits: WaitBudget = app.extensions["wavespeed_waits"]

    @property
    def host(self) -> str:
        return str(self.server.effective_host)

    @property
    def port(self) -> int:
        """The bound port (the one the OS picked when asked for port 0)."""
        return int(self.server.effective_port)

    def run(self) -> None:
        """Serve until ``close()`` (or KeyboardInterrupt in the main thread)."""
        self.server.run()

    def close(self, wait: bool = True) -> None:
        """Stop listening, then stop the endpoint (``wait``: for running handlers).

        Closing the endpoint first ends the requests that wait on a job, so
        waitress's request threads can then be stopped and joined.
        """
        self.server.close()
        self.endpoint.close(wait=wait)
        self.server.task_dispatcher.shutdown(timeout=5 if wait else 0.5)


def make_server(
    config: Config,
    *,
    host: Optional[str] = None,
    port: Optional[int] = None,
    options: Optional[ApiOptions] = None,
) -> ApiServer:
    """The app on a waitress server, not yet running; ``host``/``port`` override the config.

    Port 0 picks a free port: read it from ``.port``.
    """
    # waitress.create_server is this one; its stubs only declare it here.
    from waitress.server import create_server

    options = (options or ApiOptions()).resolve(config)
    default_host, default_port, _ = bind_address(config)
    bind = default_host if host is None else host
    app = create_app(config, options=options, bind_host=bind)
    server = create_server(
        app,
        host=bind,
        port=default_port if port is None else port,
        threads=options.threads,
        connection_limit=options.connection_limit,
        channel_timeout=options.channel_timeout,
        cleanup_interval=min(CLEANUP_INTERVAL, options.channel_timeout),
        # waitress refuses a body of exactly its limit; the API allows it.
        max_request_body_size=int(options.max_body or 0) + 1,
        asyncore_use_poll=True,  # select() fails past file descriptor 1024
        ident="wavespeed",
    )
    return ApiServer(server, app)


def serve(config: Config, *, options: Optional[ApiOptions] = None) -> None:
    """Serve the local API (mode "api") or the realtime API (mode "realtime").

    Returns on SIGINT or SIGTERM.
    """
    host, port, what = bind_address(config)
    server = make_server(config, options=options)
    shown = "localhost" if host in ALL_INTERFACES else host
    log.info(
        "%s on http://%s:%d/ (concurrency %d); open it in a browser, or POST /run",
        what,
        shown,
        server.port,
        server.endpoint.concurrency,
    )
    if host in ALL_INTERFACES:
        if config.mode == "realtime":
            log.info("realtime mode listens on all interfaces (0.0.0.0:%s)", port)
        else:
            log.warning(
                "the local API listens on all interfaces (%s): anyone who can reach this "
                "machine can run jobs; use --rp_api_host localhost to keep it private",
                host or "*",
            )

    previous: Any = None
    if threading.current_thread() is threading.main_thread():

        def on_term(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt  # leaves server.run() like Ctrl-C does

        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        server.run()
    except KeyboardInterrupt:
        log.info("stopping the %s", what)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        # Running handlers are flagged cancelled; the process exits when they return.
        server.close(wait=False)
