"""The current concurrency, as the user's ``concurrency_modifier`` says.

Shared by the worker and the local HTTP API, so both treat the modifier the
same way: called with the current value before jobs are handed out; a new
value takes effect at once; a bad one (not an int from 1 to ``MAX_THREADS``,
or an exception) keeps the old value with one warning.
"""

from typing import Any, Callable, Optional

from .logs import logger

log = logger("concurrency")

# Pool threads are created lazily, one per running job, so this is only a
# ceiling on what a modifier (or a flag) can ask for.
MAX_THREADS = 256


class Concurrency:
    """Holds the value; ``update()`` asks the modifier (user code: call it without locks held)."""

    def __init__(self, modifier: Optional[Callable[[int], Any]], initial: int = 1) -> None:
        self._modifier = modifier
        self.value = min(max(1, int(initial)), MAX_THREADS)
        self._warned = False

    def update(self) -> int:
        if self._modifier is None:
            return self.value
        try:
            value: Any = self._modifier(self.value)
        except Exception as exc:  # noqa: BLE001 - a user bug must not stop the caller
            value = exc
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_THREADS:
            if value != self.value:
                log.info("concurrency %d -> %d", self.value, value)
            self.value = value
            self._warned = False
        elif not self._warned:
            self._warned = True
            log.warning(
                "concurrency_modifier returned %r (need an int from 1 to %d); keeping %d",
                value,
                MAX_THREADS,
                self.value,
            )
        return self.value
