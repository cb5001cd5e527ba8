"""Shared helpers for the worker integration tests.

- :func:`running_worker`: run an in-process :class:`Worker` against a
  :class:`FakePlatform` and always stop it, whatever the test does.
- :class:`Meter`: counts how many handler calls run at once (and the peak).
- :func:`wait_until`: poll a condition that has no event to wait on (a file
  appearing, a counter inside the worker) with a bounded timeout.
- :func:`free_port`: a port nothing listens on right now (bind 0, close).
- :func:`capture_logs`: the records the ``wavespeed`` loggers emit (works
  even after ``setup_logging`` turned propagation to the root logger off).
- :func:`echo`: the handler most tests use; :func:`takes`: every job-take
  request (single and batch), in arrival order.
- :class:`WorkerProcess`: a worker script under ``tests/workers/`` run as a
  real subprocess in its own process group, with its output collected and
  the group killed on exit.

Nothing here has module-level mutable state; every object is per test.
"""

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence

try:
    from tests.fakeplatform import FakePlatform
except ImportError:  # tests/ run as a plain directory on sys.path
    from fakeplatform import FakePlatform  # type: ignore[no-redef]

from wavespeed.serverless.config import Config
from wavespeed.serverless.worker import Worker

TAKE_ROUTES = ("job-take", "job-take-batch")


def echo(job: Dict[str, Any]) -> Dict[str, Any]:
    """A handler that returns its input."""
    return {"echo": job["input"]}


def takes(fp: FakePlatform) -> List[Any]:
    """Every job-take request, single or batch, in arrival order."""
    return sorted((r for route in TAKE_ROUTES for r in fp.requests(route)), key=lambda r: r.time)


TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS_DIR)
WORKERS_DIR = os.path.join(TESTS_DIR, "workers")


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01) -> bool:
    """Re-check ``predicate`` every ``interval`` s until it is truthy; False on timeout.

    Only for state that signals nothing (files, counters inside the worker);
    prefer ``fp.wait_for`` / ``fp.wait_results`` for what the platform sees.
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(interval)


def free_port() -> int:
    """A TCP port that was free a moment ago (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LogRecords(List[logging.LogRecord]):
    """Records captured by :func:`capture_logs`, with a search helper."""

    def find(self, text: str, level: int = logging.NOTSET) -> List[logging.LogRecord]:
        """Records at ``level`` or above whose message contains ``text``."""
        return [r for r in self if r.levelno >= level and text in r.getMessage()]


class _ListHandler(logging.Handler):
    def __init__(self, records: LogRecords) -> None:
        super().__init__(logging.DEBUG)
        self.records = records
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._guard:
            self.records.append(record)


@contextmanager
def capture_logs(level: int = logging.DEBUG) -> Iterator[LogRecords]:
    """Collect every record of the ``wavespeed`` logger tree while inside."""
    records = LogRecords()
    target = logging.getLogger("wavespeed")
    handler = _ListHandler(records)
    old_level, old_disabled = target.level, target.disabled
    target.addHandler(handler)
    target.setLevel(level)
    target.disabled = False
    try:
        yield records
    finally:
        target.removeHandler(handler)
        target.setLevel(old_level)
        target.disabled = old_disabled


class Meter:
    """How many handler calls run at once, and the most there ever were.

    Use ``with meter:`` around the body of a handler. ``wait_running(n)``
    blocks until at least ``n`` are inside at the same time.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.current = 0
        self.peak = 0
        self.entered = 0

    def __enter__(self) -> "Meter":
        with self._cond:
            self.current += 1
            self.entered += 1
            self.peak = max(self.peak, self.current)
            self._cond.notify_all()
        return self

    def __exit__(self, *exc: Any) -> None:
        with self._cond:
            self.current -= 1
            self._cond.notify_all()

    def wait_running(self, n: int, timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.current >= n, timeout)

    def wait_entered(self, n: int, timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.entered >= n, timeout)


class RunningWorker:
    """A started in-process worker; ``stop()`` is idempotent and returns the first result."""

    def __init__(self, worker: Worker, fp: FakePlatform) -> None:
        self.worker = worker
        self.fp = fp
        self.stop_result: Optional[bool] = None
        self.stop_seconds: Optional[float] = None
        self._stop_lock = threading.Lock()

    @property
    def config(self) -> Config:
        return self.worker.config

    def stop(self, reason: str = "test") -> bool:
        """request_stop + stop(); later calls return the first call's result."""
        with self._stop_lock:  # a test may stop from a thread while teardown stops too
            if self.stop_result is None:
                started = time.monotonic()
                self.worker.request_stop(reason)
                self.stop_result = self.worker.stop()
                self.stop_seconds = time.monotonic() - started
            return self.stop_result


def worker_config(
    fp: FakePlatform,
    handler: Callable[..., Any],
    spool_dir: str,
    *,
    env: Optional[Mapping[str, str]] = None,
    config: Optional[Mapping[str, Any]] = None,
    concurrency: Optional[int] = None,
    worker_id: str = "pod-1",
) -> Config:
    """The Config a worker gets from ``fp.env()`` plus extras.

    ``env`` is merged over the fake's env (``WAVESPEED_SPOOL_DIR`` is always
    ``spool_dir``); ``config`` is the start() dict beyond the handler;
    ``concurrency`` adds a constant ``concurrency_modifier``.
    """
    environ: Dict[str, str] = fp.env(worker_id)
    environ["WAVESPEED_SPOOL_DIR"] = spool_dir
    # The Waverless defaults would open a health port on 8000; tests opt in.
    environ.setdefault("WAVESPEED_HEALTH_PORT", "0")
    environ.update(env or {})
    user: Dict[str, Any] = {"handler": handler}
    if concurrency is not None:
        user["concurrency_modifier"] = lambda _current: concurrency
    user.update(config or {})
    return Config.from_env(environ, [], user)


@contextmanager
def running_worker(
    fp: FakePlatform,
    handler: Callable[..., Any],
    spool_dir: Any,
    *,
    env: Optional[Mapping[str, str]] = None,
    config: Optional[Mapping[str, Any]] = None,
    concurrency: Optional[int] = None,
    worker_id: str = "pod-1",
) -> Iterator[RunningWorker]:
    """Start a Worker for ``handler`` against ``fp``; always stop it on exit.

    Arguments are those of :func:`worker_config` (``spool_dir`` may be a
    ``pathlib.Path``, e.g. pytest's ``tmp_path``). Yields a
    :class:`RunningWorker`; a test may call its ``stop()`` itself to time or
    check the shutdown.
    """
    cfg = worker_config(
        fp,
        handler,
        str(spool_dir),
        env=env,
        config=config,
        concurrency=concurrency,
        worker_id=worker_id,
    )
    run = RunningWorker(Worker(cfg), fp)
    run.worker.start()
    try:
        yield run
    finally:
        run.stop("test teardown")


class WorkerProcess:
    """A worker script run as a subprocess in its own process group.

    Use as a context manager: on exit the whole group is killed (SIGKILL)
    if it still runs. stdout and stderr are merged and collected by a
    reader thread; ``output()`` returns what arrived so far, ``wait_output``
    blocks until a substring shows up.
    """

    def __init__(
        self,
        script: str,
        env: Mapping[str, str],
        args: Sequence[str] = (),
        cwd: Optional[str] = None,
    ) -> None:
        path = script if os.path.isabs(script) else os.path.join(WORKERS_DIR, script)
        environ = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": ROOT,
        }
        environ.update(env)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, path, *args],
            cwd=cwd or ROOT,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as one
        )
        self._cond = threading.Condition()
        self._lines: List[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._cond:
                self._lines.append(raw.decode("utf-8", "replace"))
                self._cond.notify_all()

    def output(self) -> str:
        with self._cond:
            return "".join(self._lines)

    def wait_output(self, text: str, timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: text in "".join(self._lines), timeout)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        """Send a signal to the worker process itself (not the group)."""
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> Optional[int]:
        """The exit code, or None when it still runs after ``timeout`` s.

        Once it has exited, ``output()`` holds everything it wrote.
        """
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._reader.join(5)  # the pipe hits EOF at exit; let the reader drain it
        return code

    def kill(self) -> None:
        """SIGKILL the whole process group (a no-op when it is already gone)."""
        try:
            # start_new_session made the worker a group leader: pgid == pid.
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self._reader.join(2)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> "WorkerProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.kill()
