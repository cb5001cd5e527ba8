"""The heartbeat: a thread that pings the platform with the running job ids.

It reads the worker's live in-flight set on every beat, so the platform sees
the worker busy exactly while it is. It is a plain thread: handlers that
block in other threads while releasing the GIL (``time.sleep``, I/O, most
GPU calls) do not delay it. A C call that holds the GIL for a long time (a
catastrophic regular expression, some C extensions) stops every Python
thread, this one included, until it returns.
"""

import time
from collections.abc import Iterable
from typing import Callable, Optional

from .roles import Role


class Heartbeat(Role):
    """Owned by the worker, which calls ``start()``, ``stop()`` and ``join()``."""

    def __init__(
        self,
        ping: Callable[[Iterable[str]], bool],
        job_ids: Callable[[], Iterable[str]],
        interval: float,
    ) -> None:
        super().__init__("heartbeat", self._beat)
        self._ping = ping
        self._job_ids = job_ids
        self.interval = interval
        self._next: Optional[float] = None

    def _beat(self) -> float:
        now = time.monotonic()
        if self._next is None:
            self._next = now
        try:
            self._ping(list(self._job_ids()))  # best effort: the next beat is the retry
        finally:
            # Keep the period: the next beat is due one interval after the
            # last was due, however long the ping took.
            self._next += self.interval
            now = time.monotonic()
            if self._next < now:
                self._next = now
        return self._next - now
