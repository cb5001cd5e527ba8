"""Per-job timings for ``--rp_debugger`` / ``--waverless_debugger``.

Time a function or a block inside a handler::

    from wavespeed.serverless.utils import FunctionTimer, LineTimer

    @FunctionTimer
    def load_image(url): ...

    def handler(job):
        with LineTimer("inference"):
            ...

With the debugger flag on, the runner opens a ``Timings`` collector around
each job (``collecting``) and adds ``timings.report()`` to the job's
``debugger`` output. The collector lives in a ContextVar, so jobs running at
the same time in different threads never mix their timings, and nothing is
kept between jobs. With the flag off, or outside a job, the timers only call
through: no clock is read and nothing is stored.

Threads a handler starts itself do not inherit the collector; run their work
with ``contextvars.copy_context().run(...)`` to have it timed.
"""

import contextlib
import contextvars
import functools
import inspect
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

__all__ = ["Timings", "collecting", "current_timings", "FunctionTimer", "LineTimer"]


class Timings:
    """The timings of one job: named spans with their wall-clock bounds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: List[Dict[str, Any]] = []
        self._open: Dict[str, List[Tuple[float, str]]] = {}

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

    def begin(self, name: str) -> None:
        """Open a span by name (``end(name)`` closes the latest one of that name)."""
        with self._lock:
            self._open.setdefault(name, []).append((time.perf_counter(), self._utc()))

    def end(self, name: str) -> None:
        with self._lock:
            stack = self._open.get(name)
            if not stack:
                raise KeyError(f"timer {name!r} was not started")
            started, started_utc = stack.pop()
        self.record(name, started, started_utc)

    def entries(self) -> List[Dict[str, Any]]:
        """The finished spans, in the order they finished."""
        with self._lock:
            return [dict(span) for span in self._spans]

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()
            self._open.clear()

    def report(self) -> Dict[str, Any]:
        """What the runner adds to a job's ``debugger`` output."""
        import platform

        from ... import __version__

        return {
            "timestamps": self.entries(),
            "system_info": {
                "os": f"{platform.system()} {platform.release()}",
                "processor": platform.processor() or platform.machine(),
                "python_version": platform.python_version(),
                "wavespeed": __version__,
            },
        }


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
        if timings is None:
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
        self._timings = _current.get()
        if self._timings is not None:
            self._started, self._started_utc = time.perf_counter(), Timings._utc()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._timings is not None:
            self._timings.record(self.name, self._started, self._started_utc)
            self._timings = None
