"""Running any kind of handler from a plain thread.

A handler may be a function, a coroutine function, a generator function or
an async generator function, or anything that returns one of those (a
decorated or partial function). The kind is read from what the call
returns, so wrappers work. By default async work runs on the shared loop
(``eventloop.py``); this module serves the thread mode (``async_mode:
"thread"``), where coroutines run on an event loop owned by the calling
pool thread, created on first use (asyncio is not imported for workers
whose handlers are all sync), and it tells the engine which handlers are
known to be async before they are called.
"""

import inspect
import threading
from collections.abc import Iterator
from typing import Any


class ThreadLoops:
    """One asyncio event loop per thread, created lazily, closed by the owner.

    The owner (the worker, after its pool has shut down; local mode, at the
    end) calls ``close_all()``: a ThreadPoolExecutor has no per-thread
    teardown hook.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._loops: list[Any] = []
        self._lock = threading.Lock()

    def get(self) -> Any:
        loop = getattr(self._local, "loop", None)
        if loop is None or loop.is_closed():
            import asyncio

            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._local.loop = loop
            with self._lock:
                self._loops.append(loop)
        return loop

    def run(self, awaitable: Any, job: Any = None) -> Any:
        """Run a coroutine to completion on this thread's loop.

        With a job, ``job.cancel()`` from another thread cancels it.
        """
        import asyncio

        loop = self.get()
        task = asyncio.ensure_future(awaitable, loop=loop)
        if job is None:
            return loop.run_until_complete(task)
        job.cancel_hook = lambda: loop.call_soon_threadsafe(task.cancel)
        if job.cancelled.is_set():
            task.cancel()
        try:
            return loop.run_until_complete(task)
        finally:
            job.cancel_hook = None

    def close_all(self) -> None:
        with self._lock:
            loops, self._loops = self._loops, []
        for loop in loops:
            if loop.is_running() or loop.is_closed():
                continue  # still in use by a thread that outlived the drain
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
            loop.close()


def is_async_handler(handler: Any) -> bool:
    """True for handlers known to be async before they are called.

    Coroutine functions and async generator functions (also behind
    ``functools.partial``, and objects whose ``__call__`` is one) run on the
    shared loop directly. Anything else starts in a pool thread; if it then
    returns a coroutine, the rest of the job moves to the loop.
    """
    for candidate in (handler, getattr(handler, "__call__", None)):
        if candidate is None:
            continue
        if inspect.iscoroutinefunction(candidate) or inspect.isasyncgenfunction(candidate):
            return True
    return False


def is_stream(value: Any) -> bool:
    return inspect.isgenerator(value) or inspect.isasyncgen(value)


def iterate(value: Any, loops: ThreadLoops, job: Any = None) -> Iterator[Any]:
    """Yield the items of a sync or async generator from this thread."""
    if inspect.isgenerator(value):
        yield from value
        return
    try:
        while True:
            try:
                item = loops.run(value.__anext__(), job)
            except StopAsyncIteration:
                return
            yield item
    finally:
        try:
            loops.run(value.aclose())
        except BaseException:  # noqa: BLE001 - the generator's own error already surfaced
            pass
