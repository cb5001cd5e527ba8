"""Issue 9, section 1: a worker thread that dies never leaves a zombie worker.

- A thread role that dies is restarted by the supervisor (the main thread's
  job in ``start()``), and ``/health`` names it while it is dead and after.
- Past the restart budget the worker drains and exits with code 1.
- User code and logging cannot kill job taking: a ``concurrency_modifier``
  raising ``SystemExit``, a handler closing ``sys.stdout``/``sys.stderr``.
- A job-take body too deep to parse, whose id can still be read, gets a
  FAILED result, and the worker goes on.

A thread is made to die the way the issue reproduced it: by a log handler
that raises inside the role's error path (``tests/workers/hostile.py``
installs one; the in-process test installs the same on the ``wavespeed``
logger).
"""

import http.client
import json
import logging
import signal
import threading
from typing import Any, Dict, Iterator, Tuple

import pytest

try:
    from tests.fakeplatform import FakePlatform, Fault
    from tests.helpers import WorkerProcess, echo, free_port, running_worker, wait_until
except ImportError:  # tests/ run as a plain directory on sys.path
    from fakeplatform import FakePlatform, Fault  # type: ignore[no-redef]
    from helpers import (  # type: ignore[no-redef]
        WorkerProcess,
        echo,
        free_port,
        running_worker,
        wait_until,
    )

pytestmark = pytest.mark.timeout(60)

STARTUP = 20.0  # a cold interpreter importing requests on a busy 2-core machine


def get_health(port: int) -> Tuple[int, Dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


class BrokenSink(logging.Handler):
    """A log handler that fails like a broken log pipeline while ``armed``.

    It raises on the concurrency change the test's modifier asks for (so the
    fetcher's turn fails) and on the fetcher guard's own error line (so the
    thread dies); ``deaths`` such deaths, then it disarms itself.
    """

    def __init__(self, armed: threading.Event, deaths: int) -> None:
        super().__init__()
        self.armed = armed
        self.deaths_left = deaths

    def emit(self, record: logging.LogRecord) -> None:
        if not self.armed.is_set():
            return
        if record.name == "wavespeed.concurrency":
            raise RuntimeError("the log sink is broken (concurrency line)")
        if record.getMessage().startswith("fetcher:"):
            self.deaths_left -= 1
            if self.deaths_left <= 0:
                self.armed.clear()
            raise RuntimeError("the log sink is broken (guard line)")


@pytest.fixture
def broken_sink() -> Iterator[Tuple[threading.Event, BrokenSink]]:
    armed = threading.Event()
    sink = BrokenSink(armed, deaths=1)
    target = logging.getLogger("wavespeed")
    level = target.level
    target.setLevel(logging.INFO)  # the concurrency line is INFO
    target.addHandler(sink)
    try:
        yield armed, sink
    finally:
        target.removeHandler(sink)
        target.setLevel(level)


# -- a dead thread is restarted and named -------------------------------------------------


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # it dies on purpose
def test_a_role_whose_thread_dies_is_restarted_and_health_names_it(
    fp: FakePlatform, tmp_path: Any, broken_sink: Tuple[threading.Event, BrokenSink]
) -> None:
    armed, _sink = broken_sink
    port = free_port()

    def modifier(current: int) -> int:
        return 2 if armed.is_set() else 1

    with running_worker(
        fp,
        echo,
        tmp_path,
        env={"WAVESPEED_HEALTH_PORT": str(port)},
        config={"concurrency_modifier": modifier},
    ) as run:
        worker = run.worker
        first = fp.add_job({"n": 1})
        assert fp.wait_results(1, 10)
        armed.set()
        # The fetcher's next turn fails and its guard's error line raises: the thread dies.
        assert wait_until(lambda: not worker.fetcher.alive, 10), "the fetcher did not die"
        status, body = get_health(port)
        assert status == 503 and body["status"] == "unhealthy", body
        assert "guard line" in body["threads"]["dead"]["fetcher"], body["threads"]
        # What start()'s main loop does every half second.
        worker.supervise()
        assert worker.fetcher.alive and not worker.stopping
        second = fp.add_job({"n": 2})
        assert fp.wait_results(2, 10)
        status, body = get_health(port)
        assert status == 200, body
        assert body["threads"]["dead"] == {} and body["threads"]["restarts"] == 1
        assert "guard line" in body["threads"]["last_deaths"]["fetcher"]
    assert fp.results(first) == [{"output": {"echo": {"n": 1}}}]
    assert fp.results(second) == [{"output": {"echo": {"n": 2}}}]


def hostile_env(fp: FakePlatform, tmp_path: Any, **extra: str) -> Dict[str, str]:
    env = fp.env(WAVESPEED_SPOOL_DIR=str(tmp_path / "spool"), WAVESPEED_HEALTH_PORT="0")
    env.update(extra)
    return env


@pytest.mark.slow
def test_the_main_thread_restarts_a_dead_fetcher(fp: FakePlatform, tmp_path: Any) -> None:
    armed = fp.add_job({"arm": True})
    with WorkerProcess("hostile.py", hostile_env(fp, tmp_path, SABOTAGE_DEATHS="1")) as proc:
        assert fp.wait_results(1, STARTUP), proc.output()
        assert proc.wait_output("the fetcher thread died", 10), proc.output()
        later = fp.add_job({"after": "restart"})
        assert fp.wait_results(2, 10), proc.output()
        proc.signal(signal.SIGTERM)
        assert proc.wait(15) == 0, proc.output()
    assert "restarting it" in proc.output()
    assert fp.results(armed) == [{"output": {"echo": {"arm": True}}}]
    assert fp.results(later) == [{"output": {"echo": {"after": "restart"}}}]


@pytest.mark.slow
def test_past_the_restart_budget_the_worker_drains_and_exits_1(fp: FakePlatform, tmp_path: Any) -> None:
    # The job arms the sabotage for good, then keeps running: the fetcher dies
    # on every restart; the worker gives up, drains (the job still posts) and exits 1.
    job = fp.add_job({"arm": True, "sleep": 3})
    env = hostile_env(fp, tmp_path, SABOTAGE_DEATHS="1000", WAVESPEED_DRAIN_TIMEOUT="10")
    with WorkerProcess("hostile.py", env) as proc:
        assert proc.wait_output("the fetcher thread died", STARTUP), proc.output()
        code = proc.wait(30)
        output = proc.output()
    assert code == 1, output
    assert "the fetcher thread died 4 times within 60 s" in output, output
    assert fp.results(job) == [{"output": {"echo": {"arm": True, "sleep": 3}}}]
    assert "start() returned" not in output  # exits through sys.exit(1)


# -- user code and logging cannot stop job taking ----------------------------------------------


def test_a_concurrency_modifier_raising_systemexit_does_not_stop_job_taking(
    fp: FakePlatform, tmp_path: Any
) -> None:
    calls = []

    def modifier(current: int) -> int:
        calls.append(current)
        raise SystemExit(3)

    ids = fp.add_jobs({"n": n} for n in range(3))
    with running_worker(fp, echo, tmp_path, config={"concurrency_modifier": modifier}) as run:
        assert fp.wait_results(3, 15), sorted(fp.results())
        assert not run.worker.stopping
        assert run.worker.fetcher.alive and run.worker.concurrency == 1
        assert run.worker.health_status()[0]
    assert len(calls) >= 3
    for n, job_id in enumerate(ids):
        assert fp.results(job_id) == [{"output": {"echo": {"n": n}}}]


@pytest.mark.slow
def test_a_handler_closing_stdout_and_stderr_does_not_stop_the_worker(
    fp: FakePlatform, tmp_path: Any
) -> None:
    closer = fp.add_job({"close_std": True})
    with WorkerProcess("hostile.py", hostile_env(fp, tmp_path)) as proc:
        assert fp.wait_results(1, STARTUP), proc.output()
        later = fp.add_jobs({"n": n} for n in range(3))
        assert fp.wait_results(4, 10), proc.output()
        proc.signal(signal.SIGTERM)
        assert proc.wait(15) == 0, proc.output()
    assert fp.results(closer) == [{"output": {"echo": {"close_std": True}}}]
    for n, job_id in enumerate(later):
        assert fp.results(job_id) == [{"output": {"echo": {"n": n}}}]
    # The log lines still reach the process's stderr (its file descriptor stays open).
    assert "worker stopped: 4 taken, 4 delivered" in proc.output()


# -- a job body too deep to parse ------------------------------------------------------------


def deep_body(job_id: str, depth: int, batch: bool) -> bytes:
    """A job whose input is nested ``depth`` deep; 20,000 is too deep for json.loads on
    every supported Python (3.9-3.12 stop near 1,000 levels, 3.13 near 10,000)."""
    job = '{"id": %s, "input": %s%s}' % (json.dumps(job_id), "[" * depth, "]" * depth)
    return ("[%s]" % job if batch else job).encode()


@pytest.mark.parametrize(
    "depth, batch", [(20_000, False), (100_000, False), (20_000, True)], ids=["20000", "100000", "batch"]
)
def test_a_job_body_too_deep_to_parse_gets_a_failed_result(
    fp: FakePlatform, tmp_path: Any, depth: int, batch: bool
) -> None:
    fp.script("job-take", Fault(200, body=deep_body("deep-1", depth, batch)))
    later = fp.add_job({"after": "deep"})  # handed out by the take after the deep one
    with running_worker(fp, echo, tmp_path, concurrency=2 if batch else None) as run:
        assert fp.wait_for(lambda f: bool(f.results(later)), 15)
        # The FAILED result was posted before the later job was even taken.
        assert fp.wait_for(lambda f: bool(f.results("deep-1")), 2), fp.results()
        assert run.worker.fetcher.alive and run.worker.fetcher.failures == 0
    (failed,) = fp.results("deep-1")
    assert "malformed" in failed["error"], failed
    assert fp.results(later) == [{"output": {"echo": {"after": "deep"}}}]


def test_a_job_body_too_deep_to_parse_does_not_stop_job_taking(fp: FakePlatform, tmp_path: Any) -> None:
    """Whatever the transport makes of it, the fetcher lives on and later jobs run."""
    fp.script("job-take", Fault(200, body=deep_body("deep-2", 20_000, False)))
    later = fp.add_job({"after": "deep"})
    with running_worker(fp, echo, tmp_path) as run:
        assert fp.wait_for(lambda f: bool(f.results(later)), 15)
        assert run.worker.fetcher.alive and not run.worker.stopping
    assert fp.results(later) == [{"output": {"echo": {"after": "deep"}}}]
    # Nothing but a FAILED result (or nothing yet, before the transport rewrite) for the deep job.
    for body in fp.results("deep-2", include_rejected=True):
        assert "error" in body, body

