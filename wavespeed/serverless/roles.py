"""Thread roles: one long-lived thread, one job, one owner.

A ``Role`` calls its ``turn`` over and over. ``turn`` returns how long to
wait before the next call, or ``None`` to sleep until someone calls
``wake()``: a role with nothing to do does not wake up. Every turn runs
under a guard: an exception (``SystemExit`` from user code included) is
logged and backed off, never fatal. A thread that dies anyway (thread
creation refused, a failure outside the guard) is noticed by the
``Supervisor``, which the owner's main thread calls every half second.
"""

import threading
import time
from collections import deque
from typing import Callable, Optional

from .logs import logger

log = logger("roles")

Turn = Callable[[], Optional[float]]


class Role:
    """One supervised thread running ``turn`` in a guarded loop."""

    def __init__(self, name: str, turn: Turn, *, first_delay: Optional[float] = 0.0) -> None:
        self.name = name
        self._turn = turn
        self._first_delay = first_delay
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.failures = 0  # consecutive guarded failures
        self.last_error = ""  # the latest of them, for /health
        self.death: str = ""  # why the thread ended, when it ended by itself

    # -- owner's side ---------------------------------------------------------

    def start(self) -> bool:
        """Start the thread; False (with ``death`` set) when it could not be created."""
        self._stop.clear()
        self.death = ""
        thread = threading.Thread(target=self._main, name=f"wavespeed-{self.name}")
        try:
            thread.start()
        except RuntimeError as exc:  # "can't start new thread" under a thread limit
            self.death = f"could not start: {exc}"
            return False
        self._thread = thread
        return True

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Ask the thread to end after its current turn (does not wait)."""
        self._stop.set()
        self._wake.set()

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait for the thread; True when it has ended."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def died(self) -> bool:
        """Ended (or never started) without being asked to stop."""
        if self._stop.is_set():
            return False
        return self._thread is None or not self._thread.is_alive()

    # -- the thread -----------------------------------------------------------

    def _main(self) -> None:
        try:
            self._wait(self._first_delay)
            while not self._stop.is_set():
                delay = self._guarded_turn()
                if not self._stop.is_set():
                    self._wait(delay)
        except BaseException as exc:  # noqa: BLE001 - recorded for the supervisor
            self.death = f"{type(exc).__name__}: {exc}"
            raise

    def _guarded_turn(self) -> Optional[float]:
        try:
            delay = self._turn()
        except BaseException as exc:  # noqa: BLE001 - SystemExit from user code included
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            backoff = min(30.0, 0.05 * (2.0 ** min(self.failures, 10)))
            log.error(
                "%s: %s: %s (failure %d in a row; next try in %.2f s)",
                self.name,
                type(exc).__name__,
                exc,
                self.failures,
                backoff,
                exc_info=self.failures == 1,
            )
            return backoff
        self.failures = 0
        return delay

    def _wait(self, delay: Optional[float]) -> None:
        if delay is not None and delay <= 0:
            return
        self._wake.wait(delay)
        self._wake.clear()


class Supervisor:
    """Restarts roles whose thread died; past the restart budget, gives up.

    ``check()`` runs in the owner's main thread. A role may be restarted
    ``max_restarts`` times within ``window`` seconds; one more death within
    the window returns its name to the owner, which drains and exits with a
    non-zero code so the platform replaces the container.
    """

    def __init__(
        self,
        max_restarts: int = 3,
        window: float = 60.0,
        on_restart: Callable[[str], None] = lambda name: None,
    ) -> None:
        self._on_restart = on_restart
        self.max_restarts = max_restarts
        self.window = window
        self._roles: list[Role] = []
        self._restarts: dict[str, deque[float]] = {}
        self.deaths: dict[str, str] = {}  # role -> last reason, for /health and the log
        self.restart_count = 0

    def add(self, role: Role) -> Role:
        self._roles.append(role)
        self._restarts[role.name] = deque()
        return role

    @property
    def roles(self) -> list[Role]:
        return list(self._roles)

    def check(self, now: Optional[float] = None) -> Optional[str]:
        """Restart dead roles; returns a reason when one is beyond saving."""
        now = time.monotonic() if now is None else now
        for role in self._roles:
            if not role.died:
                continue
            reason = role.death or "ended without a reason"
            self.deaths[role.name] = reason
            recent = self._restarts[role.name]
            while recent and now - recent[0] > self.window:
                recent.popleft()
            if len(recent) >= self.max_restarts:
                return (
                    f"the {role.name} thread died {len(recent) + 1} times within "
                    f"{self.window:g} s (last: {reason})"
                )
            recent.append(now)
            self.restart_count += 1
            self._on_restart(role.name)
            log.error("the %s thread died (%s); restarting it", role.name, reason)
            role.start()
        return None
