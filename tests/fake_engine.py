"""A stand-in for a real async inference engine, and a handler that uses it.

Modelled on what vLLM's ``AsyncLLMEngine``, SGLang and aiohttp-based
clients do with the event loop (issue 10), with no new dependency:

- ``BatchingEngine`` starts lazily, on the loop of the first call that
  uses it: it creates its background task and its wake-up event there, and
  every request's result is a future made with ``loop.create_future()`` on
  *that* loop. A request awaited from another loop fails with "attached to a
  different loop".
- ``LoopBoundClient`` is bound to the loop it was created on, as an
  ``aiohttp.ClientSession`` is: its answers are futures of that loop.
- The handler adds a module-level ``asyncio.Semaphore(1)``: created
  outside any loop (at import time in a real module), bound to the first
  loop that waits on it. Released from another loop's thread, it wakes its
  waiter without waking that loop: the waiter hangs (issue 10's "others
  hang until the drain deadline").

A job is bounded by ``timeout`` (on its own loop), so a core that breaks
these engines fails a test instead of hanging it.

``make_engine_handler()`` builds one "module" (engine, client, semaphore)
per test, so no state is shared between tests; the subprocess workers in
the tests import it once at module level, as a user's handler file would.
"""

import asyncio
import sys
from typing import Any, Dict, List, Optional, Tuple


def expected_output(n: int) -> Dict[str, Any]:
    """What ``engine_handler`` returns for ``{"n": n}``."""
    return {"n": n, "tokens": [n, n * n, n * n * n], "client": "ok"}


class BatchingEngine:
    """A background task batches requests; results come back as futures of its loop."""

    def __init__(self, max_batch: int = 8) -> None:
        self.max_batch = max_batch
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.starts = 0  # how many times the background task was started
        self.batch_sizes: List[int] = []
        self._pending: List[Tuple[int, "asyncio.Future[List[int]]"]] = []
        self._wakeup: Optional[asyncio.Event] = None
        self._task: Optional["asyncio.Task[None]"] = None

    def _ensure_started(self) -> None:
        # Like AsyncLLMEngine.start_background_loop on the first generate():
        # everything the engine needs is made on the loop that runs now.
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
            self._wakeup = asyncio.Event()
            self._task = self.loop.create_task(self._run())
            self.starts += 1

    async def generate(self, n: int) -> List[int]:
        self._ensure_started()
        assert self.loop is not None and self._wakeup is not None
        future: "asyncio.Future[List[int]]" = self.loop.create_future()
        self._pending.append((n, future))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await asyncio.sleep(0.001)  # one "model step": requests arriving meanwhile join the batch
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            if self._pending:
                self._wakeup.set()
            self.batch_sizes.append(len(batch))
            for n, future in batch:
                if not future.done():
                    future.set_result([n, n * n, n * n * n])

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()


class LoopBoundClient:
    """An HTTP-client stand-in bound to its loop, as an aiohttp session is."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()

    async def request(self, value: Any) -> Any:
        future = self.loop.create_future()
        self.loop.call_soon(future.set_result, value)
        return await future


class EngineModule:
    """What a user's handler module holds: an engine, a lazily made client, a semaphore."""

    def __init__(self, max_batch: int = 8, timeout: float = 10.0) -> None:
        self.engine = BatchingEngine(max_batch)
        self.timeout = timeout
        # Module level in a real handler file: made before any loop runs. On
        # Python 3.9 a primitive binds to get_event_loop() when it is made,
        # so users there make it lazily, on the loop that uses it.
        self._lock: Optional[asyncio.Semaphore] = None
        if sys.version_info >= (3, 10):
            self._lock = asyncio.Semaphore(1)
        self.client: Optional[LoopBoundClient] = None
        self.clients_made = 0

    @property
    def tokenizer_lock(self) -> asyncio.Semaphore:
        if self._lock is None:
            self._lock = asyncio.Semaphore(1)
        return self._lock

    def get_client(self) -> LoopBoundClient:
        if self.client is None:
            self.client = LoopBoundClient()
            self.clients_made += 1
        return self.client

    async def handler(self, job: Dict[str, Any]) -> Dict[str, Any]:
        return await asyncio.wait_for(self._handle(job), self.timeout)

    async def _handle(self, job: Dict[str, Any]) -> Dict[str, Any]:
        n = int(job["input"]["n"])
        client = self.get_client()
        async with self.tokenizer_lock:
            await asyncio.sleep(0)  # held across a switch, so concurrent jobs queue on it
        tokens = await self.engine.generate(n)
        reply = await client.request("ok")
        return {"n": n, "tokens": tokens, "client": reply}


def make_engine_handler(max_batch: int = 8, timeout: float = 10.0) -> EngineModule:
    """A fresh "handler module"; pass ``module.handler`` to the worker."""
    return EngineModule(max_batch, timeout)
