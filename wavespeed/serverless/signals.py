"""SIGTERM/SIGINT while the worker runs.

The first signal only sets the worker's stop flag (the main thread does the
draining); a second one exits at once (code 1). Handlers the user installed
before ``start()`` are still called, after ours; if one raises SystemExit,
its code becomes the exit code once the drain is done.
"""

import os
import signal
import threading
from types import FrameType, TracebackType
from typing import Any, Optional

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SignalGuard:
    """Installs the handlers on enter, restores the previous ones on exit."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.received = 0
        self.exit_code = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "SignalGuard":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)

    def _on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        self.received += 1
        if self.received > 1:
            os.write(2, b"wavespeed: second signal, exiting now\n")
            os._exit(1)
        self.worker.signal_stop(f"signal {signal.Signals(signum).name}")
        previous = self._previous.get(signum)
        if callable(previous) and previous is not signal.default_int_handler:
            try:
                previous(signum, frame)
            except SystemExit as exc:
                code = exc.code
                self.exit_code = code if isinstance(code, int) else (0 if code is None else 1)
            except Exception as exc:  # noqa: BLE001 - the user's handler must not skip the drain
                os.write(2, f"wavespeed: your signal handler raised {exc!r}\n".encode())
