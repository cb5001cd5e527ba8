"""The one place a user's handler is called.

The worker, local test mode and the local HTTP API all run jobs through
``Runner.run``; they differ only in where jobs come from and in the
``Channel`` that carries a job's stream chunks and progress updates. Errors
become data here and nowhere else: whatever the handler does, ``run``
returns a ``JobResult`` with an encoded payload.
"""

import inspect
import json
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Protocol

from .config import Config
from .errors import JobCancelled, OutputNotSerializable
from .handler import ThreadLoops, is_stream, iterate
from .job import IMPORTED_AT, Job, JobResult, current_job, encode, error_payload, normalize_output
from .logs import logger
from .utils.debugger import Timings, collecting

log = logger("runner")


class Channel(Protocol):
    """Where one job's intermediate output goes."""

    def send_chunk(self, job: Job, value: Any, payload: bytes) -> None:
        """A generator handler yielded ``value`` (``payload`` is ``{"output": value}`` encoded)."""

    def send_progress(self, job: Job, data: Any) -> None:
        """The handler called ``progress_update(job, data)``."""


@dataclass
class _StreamState:
    """What a streaming job has produced so far."""

    stop_pod: bool
    aggregate: List[Any] = field(default_factory=list)


class Runner:
    """Calls the handler for one job and turns what happens into a JobResult."""

    def __init__(self, config: Config, loops: ThreadLoops) -> None:
        self.config = config
        self.loops = loops

    def run(self, job: Job) -> JobResult:
        # Always a collector: runpod's Checkpoints keep per-job books even
        # without the debugger; the timers only record when it is on.
        timings = Timings(enabled=self.config.debugger)
        token = current_job.set(job)
        started = time.perf_counter()
        try:
            with collecting(timings):
                result = self._call(job)
        finally:
            current_job.reset(token)
        if self.config.debugger and not result.cancelled:
            report = timings.report()
            report["handler_seconds"] = round(time.perf_counter() - started, 6)
            # runpod's ready delay: from importing the SDK to start().
            report["ready_delay_ms"] = round((self.config.started - IMPORTED_AT) * 1000.0, 3)
            body = dict(result.body)
            output = body.get("output")
            if isinstance(output, dict):
                body["output"] = dict(output, rp_debugger=report)  # where runpod puts it
            else:
                body["rp_debugger"] = report  # no dict to put it in: shown beside the output
            result = self._finish(job, body, result.is_stream, result.stop_pod, result.failed)
        return result

    def _call(self, job: Job) -> JobResult:
        stream = _StreamState(stop_pod=self.config.refresh_worker)
        streaming = False
        try:
            value = self.config.handler(job)
            if inspect.isawaitable(value):
                value = self.loops.run(value, job)
            if is_stream(value):
                streaming = True
                return self._stream(job, value, stream)
            body, stop_pod = normalize_output(value, self.config.refresh_worker)
        except BaseException as exc:  # noqa: BLE001 - SystemExit in a handler must not stop the worker
            if isinstance(exc, JobCancelled) or job.cancelled.is_set():
                return JobResult(job.id, {}, b"", cancelled=True)
            body = self._error_body(exc, stream.aggregate if streaming else None)
            if stream.stop_pod:
                body["stopPod"] = True
            return self._finish(job, body, streaming, stream.stop_pod, True)
        return self._finish(job, body, False, stop_pod, "error" in body)

    def _stream(self, job: Job, generator: Any, state: "_StreamState") -> JobResult:
        """Send each chunk; ``state`` keeps what the error path needs if it raises."""
        aggregate = state.aggregate
        channel = job.channel
        for value in iterate(generator, self.loops, job):
            if isinstance(value, dict):
                if value.get("error"):
                    # runpod's rule: an error chunk ends the stream and is the result.
                    body, stop_pod = normalize_output(value, state.stop_pod)
                    if self.config.return_aggregate_stream and "output" not in body:
                        body["output"] = aggregate
                    return self._finish(job, body, True, stop_pod, True)
                if "refresh_worker" in value:
                    value = dict(value)
                    state.stop_pod = bool(value.pop("refresh_worker")) or state.stop_pod
            payload = encode({"output": value})
            if self.config.return_aggregate_stream:
                aggregate.append(value)
            if channel is not None:
                channel.send_chunk(job, value, payload)
            if job.cancelled.is_set():
                raise JobCancelled(job.id)
        body: Dict[str, Any] = {"output": aggregate if self.config.return_aggregate_stream else []}
        if state.stop_pod:
            body["stopPod"] = True
        return self._finish(job, body, True, state.stop_pod, False)

    def _error_body(self, exc: BaseException, aggregate: Optional[List[Any]]) -> Dict[str, Any]:
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
            details["error_message"] = f"{details['error_message']} (offending type: {exc.value_type or 'unknown'})"
        # Encoded as the references encode it (ASCII-escaped); every value was masked before.
        body: Dict[str, Any] = {"error": json.dumps(details, default=str)}
        if aggregate and self.config.return_aggregate_stream:
            body["output"] = aggregate
        if self.config.refresh_worker:
            body["stopPod"] = True
        return body

    def _finish(
        self, job: Job, body: Dict[str, Any], streamed: bool, stop_pod: bool, failed: bool
    ) -> JobResult:
        try:
            payload = encode(body)
        except OutputNotSerializable as exc:
            log.error("%s", exc)
            body = self._error_body(exc, None)
            if stop_pod:
                body["stopPod"] = True
            payload = encode(body)
            failed = True
        return JobResult(
            job_id=job.id,
            body=body,
            payload=payload,
            is_stream=streamed,
            stop_pod=stop_pod,
            failed=failed,
        )
