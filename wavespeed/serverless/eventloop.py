"""The shared event loop: every async job of the process runs on it.

Real async engines (LLM and embedding servers, aiohttp sessions, a
module-level ``asyncio.Semaphore``) keep state bound to the loop where it
was created, and runpod runs every job on one loop. So all async handlers
share one loop, running in a thread this module owns; an async job holds no
thread while it awaits. The rest of the worker stays thread-based: only
user async code runs here, and nothing the SDK does blocks this loop.

A handler that blocks the loop (``requests.post``, ``time.sleep`` inside
``async def``) stalls every async job. A watcher thread notices when the
loop has not turned for ``BLOCKED_AFTER`` seconds while async jobs run,
samples the loop thread's stack and logs one warning per code location.
"""

import os
import sys
import threading
import time
from collections.abc import Coroutine
from typing import Any, Callable, Optional

from .logs import logger
from .roles import Role

log = logger("eventloop")

BLOCKED_AFTER = 0.5
TICK = 0.1
_CO_COROUTINE = 0x80  # inspect.CO_COROUTINE, without importing inspect's flags table
_CO_ASYNC_GENERATOR = 0x200
_HERE = os.path.dirname(os.path.abspath(__file__))


class SharedLoop:
    """One asyncio loop in one thread, started on first use, closed by the owner."""

    def __init__(self, blocked_after: float = BLOCKED_AFTER) -> None:
        self._lock = threading.Lock()
        self._loop: Any = None
        self._thread: Optional[threading.Thread] = None
        self._tasks: set[Any] = set()
        self._last_turn = time.monotonic()
        self._ticking = False
        self.blocked_after = blocked_after
        self.warned: set[tuple[str, int]] = set()
        self._watch = Role("loop-watch", self._check, first_delay=None)

    # -- owner's side -----------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._loop is not None

    def _ensure(self) -> Any:
        with self._lock:
            if self._loop is None:
                import asyncio

                loop = asyncio.new_event_loop()
                ready = threading.Event()
                thread = threading.Thread(
                    target=self._main, args=(loop, ready), name="wavespeed-asyncio"
                )
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
                self._watch.start()
            return self._loop

    def _main(self, loop: Any, ready: threading.Event) -> None:
        import asyncio

        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    def spawn(
        self,
        coroutine_factory: Callable[[], Coroutine[Any, Any, Any]],
        done: Callable[[Any], None],
        on_task: Optional[Callable[[Callable[[], None]], None]] = None,
    ) -> None:
        """Run ``coroutine_factory()`` as a task on the loop; ``done(task)`` when it ends.

        The factory is called on the loop thread, so a handler's synchronous
        start (``async def`` bodies, ``asyncio.get_running_loop()``) sees the
        running loop. ``on_task`` receives a thread-safe cancel function.
        ``done`` runs on the loop thread and must not block.
        """
        loop = self._ensure()

        def start() -> None:
            try:
                task = loop.create_task(coroutine_factory())
            except BaseException as exc:  # noqa: BLE001 - handed to done() as a failed task
                failed = loop.create_future()
                failed.set_exception(exc)
                done(failed)
                return
            self._tasks.add(task)
            self._start_ticking()
            if on_task is not None:
                on_task(lambda: loop.call_soon_threadsafe(task.cancel))

            def finished(t: Any) -> None:
                self._tasks.discard(t)
                done(t)

            task.add_done_callback(finished)

        loop.call_soon_threadsafe(start)

    def close(self, timeout: float = 5.0) -> bool:
        """Cancel what still runs, close the loop, join its thread; True when it ended."""
        self._watch.stop()
        self._watch.join(timeout)
        with self._lock:
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return True
        try:
            loop.call_soon_threadsafe(loop.stop)
        except RuntimeError:  # already closed
            pass
        thread.join(timeout)
        return not thread.is_alive()

    # -- the blocked-loop watcher ----------------------------------------------

    def _start_ticking(self) -> None:
        """On the loop: note each turn while tasks run (no wake-ups when idle)."""
        self._last_turn = time.monotonic()
        if self._ticking:
            return
        self._ticking = True
        self._watch.wake()
        self._loop.call_later(TICK, self._tick)

    def _tick(self) -> None:
        self._last_turn = time.monotonic()
        if self._tasks:
            self._loop.call_later(TICK, self._tick)
        else:
            self._ticking = False

    def _check(self) -> Optional[float]:
        if not self._ticking:
            return None  # woken by the next task
        stalled = time.monotonic() - self._last_turn
        if stalled > self.blocked_after:
            self._report()
            return self.blocked_after  # one sample per stall is enough
        return max(0.05, self.blocked_after - stalled)

    def _report(self) -> None:
        thread = self._thread
        if thread is None or thread.ident is None:
            return
        frame = sys._current_frames().get(thread.ident)
        where = _blocking_frame(frame)
        if where is None:
            return
        filename, lineno, function = where
        if (filename, lineno) in self.warned:
            return
        self.warned.add((filename, lineno))
        log.warning(
            "the shared event loop was blocked for more than %.1f s at %s:%d (in %s); "
            "every async job waits meanwhile. Run blocking calls with "
            "`await asyncio.to_thread(...)`, or set async_mode to 'thread' "
            "(WAVESPEED_ASYNC_MODE=thread) for handlers that block inside async code",
            self.blocked_after,
            filename,
            lineno,
            function,
        )


def _blocking_frame(frame: Any) -> Optional[tuple[str, int, str]]:
    """The innermost coroutine frame of user code in a stack, else the innermost frame."""
    innermost = None
    while frame is not None:
        code = frame.f_code
        if innermost is None:
            innermost = (code.co_filename, frame.f_lineno, code.co_name)
        is_async = code.co_flags & (_CO_COROUTINE | _CO_ASYNC_GENERATOR)
        if is_async and not code.co_filename.startswith(_HERE):
            return (code.co_filename, frame.f_lineno, code.co_name)
        frame = frame.f_back
    return innermost
