"""What the local API is configured to be: its limits, its threads, its address.

Like waitress's ``adjustments``: one frozen object built at the edge
(``ApiOptions.resolve``) from the defaults and the ``Config``, then passed
down to the endpoint, the app and the server, which derive nothing else.
"""

import ipaddress
from dataclasses import dataclass, replace
from typing import Optional

from ..config import Config

ALL_INTERFACES = frozenset({"0.0.0.0", "::", "", "*"})


@dataclass(frozen=True)
class ApiOptions:
    """Limits and timings of the local API; the defaults suit a laptop.

    ``None`` means "from the config" (``max_body``: ``Config.api_max_body``)
    or "derived" (``threads``, ``concurrency``); ``resolve`` fills them in.
    """

    max_body: Optional[int] = None  # bytes; a larger request gets 413 before its body is read
    max_jobs: int = 1000  # jobs kept at once, queued, running and finished
    ttl: float = 1800.0  # seconds a finished job stays readable
    runsync_wait: float = 90.0  # seconds /runsync waits before answering IN_PROGRESS
    webhook_timeout: float = 10.0  # seconds per webhook attempt
    webhook_attempts: int = 3
    webhook_backoff: float = 0.5  # seconds before the 2nd attempt, doubled after
    concurrency: Optional[int] = None  # default: the flag for the mode (api or realtime)
    threads: Optional[int] = None  # waitress's request threads; default from the concurrency
    # Idle and half-sent connections cost waitress a socket, not a thread;
    # the limit only has to stay under the usual 1024 open files.
    connection_limit: int = 500
    channel_timeout: int = 30  # seconds an idle or half-sent connection stays open

    def resolve(self, config: Config) -> "ApiOptions":
        """A copy with every ``None`` filled from ``config``."""
        concurrency = self.concurrency
        if concurrency is None:
            concurrency = (
                config.realtime_concurrency if config.mode == "realtime" else config.api_concurrency
            )
        # Jobs run on their own pool; request threads only hold requests, some
        # of which wait (/runsync, ?wait=), so keep a few more than job slots.
        threads = self.threads or min(64, max(8, 2 * concurrency + 4))
        max_body = config.api_max_body if self.max_body is None else self.max_body
        return replace(self, concurrency=concurrency, threads=threads, max_body=max_body)

    @property
    def long_waits(self) -> int:
        """How many requests may wait at once (/runsync, ``?wait=``); the rest answer at once.

        A quarter of the threads (at least two) stays free for requests that
        answer at once, so ``/health`` and ``/status`` never queue behind waits.
        """
        threads = self.threads or 8
        return max(1, threads - max(2, threads // 4))


def bind_address(config: Config) -> tuple[str, int, str]:
    """``(host, port, name)`` the config asks to serve on."""
    if config.mode == "realtime":
        return "0.0.0.0", config.realtime_port, "realtime"
    return config.api_host, config.api_port, "local API"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
