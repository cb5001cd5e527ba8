"""The heartbeat: a thread that pings the platform with the running job ids.

It reads the worker's live in-flight set on every beat, so the platform sees
the worker busy exactly while it is. It is a plain thread: handlers blocking
in other threads (``time.sleep``, a C call releasing the GIL) do not delay it.
"""

import threading
import time
from typing import Callable, Iterable, Optional

from .logs import logger

log = logger("heartbeat")


class Heartbeat:
    """Owned by the worker, which calls ``start()`` and ``stop()``."""

    def __init__(
        self,
        ping: Callable[[Iterable[str]], bool],
        job_ids: Callable[[], Iterable[str]],
        interval: float,
    ) -> None:
        self._ping = ping
        self._job_ids = job_ids
        self.interval = interval
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="wavespeed-heartbeat")
        self._thread.start()

    def _loop(self) -> None:
        next_beat = time.monotonic()
        while not self._stop.is_set():
            try:
                self._ping(list(self._job_ids()))  # best effort: the next beat is the retry
            except Exception:  # noqa: BLE001 - the heartbeat must outlive any bug
                log.exception("heartbeat failed")
            # Keep the period: the next beat is due one interval after the
            # last was due, however long the ping took.
            next_beat += self.interval
            now = time.monotonic()
            if next_beat < now:
                next_beat = now
            if self._stop.wait(next_beat - now):
                return

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
