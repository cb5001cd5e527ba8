"""Local test mode: run one job from ``--test_input`` or ``./test_input.json``.

It goes through the same job engine (and so the same Runner, event loop
arrangement and timeouts) as the worker; only the source of the job (argv
or a file) and the destination of its output (stdout/stderr) differ.
"""

import json
import os
import sys
import threading
from typing import Any, Optional, TextIO

from .config import Config
from .engine import Engine
from .job import Job, JobResult
from .logs import logger
from .runner import Channel

log = logger("local")


class PrintChannel(Channel):
    """Shows stream chunks and progress updates as log lines as they happen."""

    def __init__(self) -> None:
        self.chunks = 0
        self.result: Optional[JobResult] = None
        self.done = threading.Event()

    def send_chunk(self, job: Job, value: Any, payload: bytes) -> None:
        self.chunks += 1
        log.info("stream chunk %d: %s", self.chunks, payload.decode("utf-8"))

    def send_progress(self, job: Job, data: Any) -> None:
        log.info("progress: %s", json.dumps(data, ensure_ascii=False, default=repr))

    def close(self, result: Optional[JobResult], on_done: Any, inline: bool = False) -> None:
        self.result = result
        on_done(result or JobResult("local", {}, b"", cancelled=True), None)
        self.done.set()


class _Printer:
    """The engine's destination in local test mode: one job, printed."""

    def __init__(self) -> None:
        self.channel = PrintChannel()

    def open(self, job: Job) -> PrintChannel:
        return self.channel


def load_input(config: Config) -> Optional[Any]:
    """The test job: parsed and checked, or None (the reason is logged)."""
    if config.test_input is not None:
        source, raw = "--test_input", config.test_input
    else:
        source = os.path.abspath("test_input.json")
        if not os.path.exists(source):
            log.error(
                "no job to run: pass --test_input '{\"input\": {...}}' or create %s "
                "(or set RUNPOD_WEBHOOK_GET_JOB / WAVERLESS_WEBHOOK_GET_JOB to run as a worker)",
                source,
            )
            return None
        try:
            with open(source, encoding="utf-8") as handle:
                raw = handle.read()
        except OSError as exc:
            log.error("cannot read %s: %s", source, exc)
            return None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        log.error("%s is not valid JSON: %s", source, exc)
        return None
    if not isinstance(data, dict):
        log.error('%s must be a JSON object with an "input" key, e.g. {"input": {...}}', source)
        return None
    if "input" not in data:
        # wavespeed 1.0 ran such an object as the input itself; say so, since
        # runpod would have refused it.
        print(
            f'{source} has no "input" key: running with the whole object as the input '
            '(write {"input": {...}} to silence this)',
            file=sys.stderr,
            flush=True,
        )
        data = {"input": data}
    data.setdefault("id", "local_test")
    return data


def run_local(config: Config, stdout: Optional[TextIO] = None) -> int:
    """Run the test job; print the result as JSON on stdout; return the exit code."""
    out = stdout or sys.stdout
    data = load_input(config)
    if data is None:
        return 1
    printer = _Printer()
    engine = Engine(config, printer)
    engine.watchdog.start()
    try:
        job = Job(data)
        log.info("running job %s locally", job.id)
        engine.submit(job)
        printer.channel.done.wait()
    finally:
        clean = engine.close()
    code = _report(config, job, printer.channel.result, out)
    if not clean:
        # The handler's thread still runs after its timeout; exiting normally
        # would wait for it forever.
        log.error("the handler of job %s is still running; exiting without waiting for it", job.id)
        for stream in (out, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a handler may have closed it
                pass
        os._exit(code)
    return code


def _print_result(text: str, out: TextIO) -> None:
    """Print the result JSON; a handler that closed stdout cannot stop it (fd 1 is used then)."""
    try:
        print(text, file=out)
        out.flush()
        return
    except (ValueError, OSError):
        pass
    try:
        os.write(1, (text + "\n").encode("utf-8"))
    except OSError as exc:
        log.error("could not print the result: %s", exc)


def _report(config: Config, job: Job, result: Optional[JobResult], out: TextIO) -> int:
    """Print the result; the exit code."""
    if result is None:
        log.error("job %s was cancelled", job.id)
        return 1
    _print_result(json.dumps(result.body, ensure_ascii=False, indent=2), out)
    if result.refresh:
        log.info("refresh_worker: on a platform the worker would stop after this job")
    if result.failed:
        log.error("job %s failed", job.id)
        return 1
    if config.test_output is not None:
        try:
            expected = json.loads(config.test_output)
        except ValueError as exc:
            log.error("--test_output is not valid JSON: %s", exc)
            return 1
        if expected != result.body and expected != result.body.get("output"):
            log.error(
                "--test_output mismatch: expected %s",
                json.dumps(expected, ensure_ascii=False),
            )
            return 1
        log.info("--test_output matches")
    log.info("job %s completed", job.id)
    return 0
