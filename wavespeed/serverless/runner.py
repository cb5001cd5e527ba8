"""The one place a user's handler is called.

The worker, local test mode and the local HTTP API all run jobs through a
``Runner`` (via the job engine); they differ only in where jobs come from
and in the ``Channel`` that carries a job's stream chunks and progress
updates. Errors become data here and nowhere else: whatever the handler
does, the runner produces a ``JobResult`` with an encoded payload.

Two ways in, one handler call (``_invoke``):
- ``run(job)`` from a plain thread. A sync handler (or generator) runs to
  the end here. An async one runs on this thread's own loop (thread mode),
  or, with a shared loop, ``run`` returns a coroutine for the engine to
  schedule there, so the thread is free while the job awaits.
- ``run_async(job)`` on the shared loop, for handlers known to be async.
"""

import inspect
import json
import time
import traceback
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from .config import Config
from .errors import JobCancelled, OutputNotSerializable
from .handler import ThreadLoops, is_stream, iterate
from .job import IMPORTED_AT, Job, JobResult, current_job, encode, error_payload, normalize_output
from .logs import logger
from .utils.debugger import Timings, collecting

log = logger("runner")


class Channel:
    """Where one job's intermediate output goes. Subclasses override what they use."""

    def send_chunk(self, job: Job, value: Any, payload: bytes) -> None:
        """A generator handler yielded ``value`` (``payload`` is ``{"output": value}`` encoded).

        May block while the channel is full (never on the shared loop: see ``asend_chunk``).
        """

    async def asend_chunk(self, job: Job, value: Any, payload: bytes) -> None:
        """The same from the shared event loop: waits without blocking the loop."""
        self.send_chunk(job, value, payload)

    def send_progress(self, job: Job, data: Any) -> None:
        """The handler called ``progress_update(job, data)``; never blocks."""


@dataclass
class _Stream:
    """What a job has produced so far (the error path needs it too)."""

    refresh: bool
    streaming: bool = False
    aggregate: list[Any] = field(default_factory=list)
    timings: Optional[Timings] = None
    started: float = field(default_factory=time.perf_counter)


Outcome = Union[JobResult, Coroutine[Any, Any, JobResult]]
_NOT_CALLED = object()  # run_async: the handler is called on the loop itself


class Runner:
    """Calls the handler for one job and turns what happens into a JobResult."""

    def __init__(self, config: Config, loops: ThreadLoops, shared: Any = None) -> None:
        self.config = config
        self.loops = loops
        self.shared = shared  # a SharedLoop, or None: async jobs run on the thread's loop

    # -- the one call ---------------------------------------------------------------

    def _invoke(self, job: Job) -> Any:
        return self.config.handler(job)

    # -- from a thread ----------------------------------------------------------------

    def run(self, job: Job) -> Outcome:
        """Run the job from this thread; a coroutine when it must continue on the shared loop."""
        state = self._state()
        token = current_job.set(job)
        try:
            with collecting(state.timings):
                try:
                    value = self._invoke(job)
                    if self.shared is not None and _is_async(value):
                        return self._continue_on_loop(job, value, state)
                    if inspect.isawaitable(value):
                        value = self.loops.run(value, job)
                    if is_stream(value):
                        state.streaming = True
                        return self._debugged(self._stream(job, value, state), state)
                    return self._debugged(self._value(job, value, state), state)
                except BaseException as exc:  # noqa: BLE001 - SystemExit in a handler must not stop the worker
                    return self._debugged(self._failure(job, exc, state), state)
        finally:
            current_job.reset(token)

    def _stream(self, job: Job, generator: Any, state: _Stream) -> JobResult:
        channel = job.channel
        for value in iterate(generator, self.loops, job):
            chunk = self._chunk(job, value, state)
            if isinstance(chunk, JobResult):
                _close(generator)
                return chunk
            if channel is not None:
                channel.send_chunk(job, *chunk)
            if job.cancelled.is_set():
                _close(generator)
                raise JobCancelled(job.id)
        return self._stream_end(job, state)

    # -- on the shared loop -----------------------------------------------------------

    async def run_async(self, job: Job) -> JobResult:
        """Run a job whose handler is known to be async, on the shared loop."""
        state = self._state()
        return await self._continue_on_loop(job, _NOT_CALLED, state)

    async def _continue_on_loop(self, job: Job, value: Any, state: _Stream) -> JobResult:
        """Finish a job on the shared loop.

        ``value`` is what the handler returned (or ``_NOT_CALLED``).
        """
        current_job.set(job)  # the task has its own context: no reset needed
        with collecting(state.timings):
            try:
                if value is _NOT_CALLED:
                    value = self._invoke(job)
                return self._debugged(await self._drive(job, value, state), state)
            except BaseException as exc:  # noqa: BLE001 - CancelledError becomes a cancelled result
                return self._debugged(self._failure(job, exc, state), state)

    async def _drive(self, job: Job, value: Any, state: _Stream) -> JobResult:
        if inspect.isawaitable(value):
            value = await value
        if inspect.isasyncgen(value):
            state.streaming = True
            return await self._astream(job, value, state)
        if inspect.isgenerator(value):
            state.streaming = True
            return await self._astream(job, value, state)
        return self._value(job, value, state)

    async def _astream(self, job: Job, generator: Any, state: _Stream) -> JobResult:
        """Stream on the shared loop: an async generator, or a sync one an async handler returned.

        A full outbox is awaited (``asend_chunk``): ``send_chunk`` would
        block the loop, and every async job with it.
        """
        channel = job.channel
        asynchronous = inspect.isasyncgen(generator)
        items = generator if asynchronous else _as_async(generator)
        try:
            async for value in items:
                chunk = self._chunk(job, value, state)
                if isinstance(chunk, JobResult):
                    return chunk
                if channel is not None:
                    await channel.asend_chunk(job, *chunk)
                if job.cancelled.is_set():
                    raise JobCancelled(job.id)
        finally:
            if asynchronous:
                await generator.aclose()
            else:
                _close(generator)
        return self._stream_end(job, state)

    # -- turning what happened into a result ------------------------------------------

    def _state(self) -> _Stream:
        # Always a collector: runpod's Checkpoints keep per-job books even
        # without the debugger; the timers only record when it is on.
        timings = Timings(enabled=self.config.debugger)
        return _Stream(refresh=self.config.refresh_worker, timings=timings)

    def _value(self, job: Job, value: Any, state: _Stream) -> JobResult:
        body, refresh = normalize_output(value, self.config.refresh_worker)
        return self._finish(job, body, False, refresh, "error" in body)

    def _chunk(self, job: Job, value: Any, state: _Stream) -> Union[tuple[Any, bytes], JobResult]:
        """One yielded value: (what to stream, encoded).

        Or the final result, when the value ends the stream.
        """
        if isinstance(value, dict):
            if value.get("error"):
                # runpod's rule: an error chunk ends the stream and is the result.
                body, refresh = normalize_output(value, state.refresh)
                if self.config.return_aggregate_stream and "output" not in body:
                    body["output"] = state.aggregate
                return self._finish(job, body, True, refresh, True)
            if "refresh_worker" in value:
                value = dict(value)
                state.refresh = bool(value.pop("refresh_worker")) or state.refresh
        payload = encode({"output": value})
        if self.config.return_aggregate_stream:
            state.aggregate.append(value)
        return value, payload

    def _stream_end(self, job: Job, state: _Stream) -> JobResult:
        output = state.aggregate if self.config.return_aggregate_stream else []
        body: dict[str, Any] = {"output": output}
        if state.refresh:
            body["stopPod"] = True
        return self._finish(job, body, True, state.refresh, False)

    def _failure(self, job: Job, exc: BaseException, state: _Stream) -> JobResult:
        if _is_cancellation(exc) or job.cancelled.is_set():
            return JobResult(job.id, {}, b"", cancelled=True)
        body = self._error_body(exc, state.aggregate if state.streaming else None)
        if state.refresh:
            body["stopPod"] = True
        return self._finish(job, body, state.streaming, state.refresh, True)

    def _debugged(self, result: JobResult, state: _Stream) -> JobResult:
        """Add the debugger's timings (``--rp_debugger``) to a result."""
        if not self.config.debugger or state.timings is None or result.cancelled:
            return result
        report = state.timings.report()
        report["handler_seconds"] = round(time.perf_counter() - state.started, 6)
        # runpod's ready delay: from importing the SDK to start().
        report["ready_delay_ms"] = round((self.config.started - IMPORTED_AT) * 1000.0, 3)
        body = dict(result.body)
        output = body.get("output")
        if isinstance(output, dict):
            body["output"] = dict(output, rp_debugger=report)  # where runpod puts it
        else:
            body["rp_debugger"] = report  # no dict to put it in: shown beside the output
        return JobResult(
            result.job_id,
            body,
            encode(body),
            is_stream=result.is_stream,
            refresh=result.refresh,
            failed=result.failed,
        )

    def _error_body(self, exc: BaseException, aggregate: Optional[list[Any]]) -> dict[str, Any]:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        log.error("handler raised %s: %s", type(exc).__name__, exc)
        details = error_payload(
            exc,
            self.config.worker_id,
            self.config.hostname,
            tb,
            platform=self.config.platform,
            secrets=(self.config.api_key,),
        )
        if isinstance(exc, OutputNotSerializable):
            details["error_message"] = (
                f"{details['error_message']} (offending type: {exc.value_type or 'unknown'})"
            )
        # Encoded as the references encode it (ASCII-escaped); every value was masked before.
        body: dict[str, Any] = {"error": json.dumps(details, default=str)}
        if aggregate and self.config.return_aggregate_stream:
            body["output"] = aggregate
        if self.config.refresh_worker:
            body["stopPod"] = True
        return body

    def _finish(
        self, job: Job, body: dict[str, Any], streamed: bool, refresh: bool, failed: bool
    ) -> JobResult:
        try:
            payload = encode(body)
        except OutputNotSerializable as exc:
            log.error("%s", exc)
            body = self._error_body(exc, None)
            if refresh:
                body["stopPod"] = True
            payload = encode(body)
            failed = True
        return JobResult(
            job_id=job.id,
            body=body,
            payload=payload,
            is_stream=streamed,
            refresh=refresh,
            failed=failed,
        )


def _is_async(value: Any) -> bool:
    return inspect.isawaitable(value) or inspect.isasyncgen(value)


def _is_cancellation(exc: BaseException) -> bool:
    if isinstance(exc, JobCancelled):
        return True
    # asyncio.CancelledError, without importing asyncio for sync workers.
    return type(exc).__name__ == "CancelledError" and type(exc).__module__.startswith(
        ("asyncio", "concurrent")
    )


async def _as_async(generator: Any) -> Any:
    for value in generator:
        yield value


def _close(generator: Any) -> None:
    close = getattr(generator, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # noqa: BLE001 - the stream's result is already decided
            pass
