"""The current concurrency, as the user's ``concurrency_modifier`` says.

Shared by the worker and the local HTTP API, so both treat the modifier the
same way: called with the current value before jobs are handed out; a new
value takes effect at once; a bad one (not an int from 1 to ``MAX_THREADS``,
or an exception) keeps the old value with one warning.
"""

import threading
from typing import Any, Callable, Optional

from .logs import logger

log = logger("concurrency")

# Pool threads are created lazily, one per running job, so this is only a
# ceiling on what a modifier (or a flag) can ask for.
MAX_THREADS = 256
MAX_ASYNC = 4096


class Concurrency:
    """Holds the value; ``update()`` asks the modifier (user code: call it without locks held)."""

    def __init__(
        self, modifier: Optional[Callable[[int], Any]], initial: int = 1, cap: int = MAX_THREADS
    ) -> None:
        self._modifier = modifier
        self.cap = cap
        self.value = min(max(1, int(initial)), cap)
        self._warned = False
        self._warned_cap = False
        # The fetcher and a thread taking jobs itself may both ask: one call at a time.
        self._calling = threading.Lock()

    def update(self) -> int:
        if self._modifier is None:
            return self.value
        with self._calling:
            return self._update()

    def _update(self) -> int:
        assert self._modifier is not None
        try:
            value: Any = self._modifier(self.value)
        except BaseException as exc:  # noqa: BLE001 - a user bug (SystemExit too) must not stop the caller
            value = exc
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            if value > self.cap:
                if not self._warned_cap:
                    self._warned_cap = True
                    log.warning(
                        "concurrency_modifier returned %d; capped at %d for this handler kind",
                        value,
                        self.cap,
                    )
                value = self.cap
            if value != self.value:
                log.info("concurrency %d -> %d", self.value, value)
            self.value = value
            self._warned = False
        elif not self._warned:
            self._warned = True
            log.warning(
                "concurrency_modifier returned %r (need an int of at least 1); keeping %d",
                value,
                self.value,
            )
        return self.value
