"""Per-job timings for ``--rp_debugger`` / ``--waverless_debugger``.

Time a function or a block inside a handler::

    from wavespeed.serverless.utils import FunctionTimer, LineTimer

    @FunctionTimer
    def load_image(url): ...

    def handler(job):
        with LineTimer("inference"):
            ...

The runner opens a ``Timings`` collector around each job (``collecting``).
With the debugger flag on, the job's output gets ``timings.report()`` under
``"rp_debugger"`` (where runpod puts it). The collector lives in a
ContextVar, so jobs running at the same time in different threads never mix
their timings, and nothing is kept between jobs. With the flag off, or
outside a job, the timers only call through: no clock is read and nothing is
stored. runpod's named ``Checkpoints`` (``add``/``start``/``stop``) keep
their bookkeeping per job either way, so they raise ``KeyError`` where
runpod's do.

Threads a handler starts itself do not inherit the collector; run their work
with ``contextvars.copy_context().run(...)`` to have it timed.
"""

import contextlib
import contextvars
import functools
import inspect
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, Callable, Optional

__all__ = ["Timings", "collecting", "current_timings", "system_info", "FunctionTimer", "LineTimer"]


def system_info() -> dict[str, str]:
    """What runpod reports as ``system_info``, plus wavespeed's version."""
    import platform

    from ... import RUNPOD_VERSION, __version__

    return {
        "os": f"{platform.system()} {platform.release()}",
        "processor": platform.processor() or platform.machine() or "Unable to get processor info.",
        "python_version": platform.python_version(),
        "runpod": RUNPOD_VERSION,
        "wavespeed": __version__,
    }


class Timings:
    """The timings of one job: named spans with their wall-clock bounds.

    ``enabled`` is False when the debugger flag is off: the timers then skip
    the job entirely, and only the ``Checkpoints`` bookkeeping is kept.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._lock = threading.Lock()
        self._spans: list[dict[str, Any]] = []
        # runpod's named checkpoints: name -> (perf_counter start, its UTC time) or None.
        self._checkpoints: dict[str, Optional[tuple[float, str]]] = {}

    @staticmethod
    def _utc() -> str:
        return datetime.now(timezone.utc).isoformat()

    def record(self, name: str, started: float, started_utc: str) -> None:
        """Close a span begun at ``time.perf_counter() == started``."""
        ended = time.perf_counter()
        span = {
            "name": name,
            "start_utc": started_utc,
            "stop_utc": self._utc(),
            "duration_ms": round((ended - started) * 1000.0, 3),
        }
        with self._lock:
            self._spans.append(span)

    # runpod's Checkpoints, with its KeyErrors and their messages.

    def add(self, name: str) -> None:
        with self._lock:
            if name in self._checkpoints:
                raise KeyError(f'Checkpoint name "{name}" already exists.')
            self._checkpoints[name] = None

    def start(self, name: str) -> None:
        with self._lock:
            if name not in self._checkpoints:
                raise KeyError(f"Checkpoint name '{name}' does not exist.")
            self._checkpoints[name] = (time.perf_counter(), self._utc())

    def stop(self, name: str) -> None:
        with self._lock:
            if name not in self._checkpoints:
                raise KeyError(f"Checkpoint name '{name}' does not exist.")
            started = self._checkpoints[name]
            if started is None:
                raise KeyError("Checkpoint has not been started.")
        self.record(name, started[0], started[1])

    def entries(self) -> list[dict[str, Any]]:
        """The finished spans, in the order they finished."""
        with self._lock:
            return [dict(span) for span in self._spans]

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()
            self._checkpoints.clear()

    def report(self) -> dict[str, Any]:
        """What the runner puts in a job's ``rp_debugger`` output."""
        return {"system_info": system_info(), "timestamps": self.entries()}


_current: "contextvars.ContextVar[Optional[Timings]]" = contextvars.ContextVar(
    "wavespeed_debug_timings", default=None
)


def current_timings() -> Optional[Timings]:
    """The collector of the job running in this context, or None when not collecting."""
    return _current.get()


@contextlib.contextmanager
def collecting(timings: Optional[Timings]) -> Iterator[Optional[Timings]]:
    """Make ``timings`` the collector for the code inside (None: collect nothing)."""
    if timings is None:
        yield None
        return
    token = _current.set(timings)
    try:
        yield timings
    finally:
        _current.reset(token)


class FunctionTimer:
    """Decorator: time every call of a function (sync or async) under its name."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function
        self.name: str = getattr(function, "__name__", repr(function))
        functools.update_wrapper(self, function)
        self._is_async = inspect.iscoroutinefunction(function)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        timings = _current.get()
        if timings is None or not timings.enabled:
            return self.function(*args, **kwargs)
        if self._is_async:
            return self._timed_await(timings, args, kwargs)
        started, started_utc = time.perf_counter(), Timings._utc()
        try:
            return self.function(*args, **kwargs)
        finally:
            timings.record(self.name, started, started_utc)

    async def _timed_await(self, timings: Timings, args: Any, kwargs: Any) -> Any:
        started, started_utc = time.perf_counter(), Timings._utc()
        try:
            return await self.function(*args, **kwargs)
        finally:
            timings.record(self.name, started, started_utc)

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        # Decorating a method: bind like a function would.
        if obj is None:
            return self
        return functools.partial(self.__call__, obj)


class LineTimer:
    """Context manager: time a block under ``name``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._timings: Optional[Timings] = None
        self._started = 0.0
        self._started_utc = ""

    def __enter__(self) -> "LineTimer":
        timings = _current.get()
        self._timings = timings if timings is not None and timings.enabled else None
        if self._timings is not None:
            self._started, self._started_utc = time.perf_counter(), Timings._utc()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._timings is not None:
            self._timings.record(self.name, self._started, self._started_utc)
            self._timings = None
