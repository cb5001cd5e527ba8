"""A real worker process receiving real signals (PROTOCOL 10 and 12).

Each test runs a script from ``tests/workers/`` with the fake platform's env,
waits for evidence on the wire (a job-take, a taken job), signals the
process and checks its exit code and what the platform received. The
process group is always killed on the way out.
"""

import signal
import time
from typing import Any, Callable, Dict

import pytest

try:
    from tests.fakeplatform import FakePlatform
    from tests.helpers import WorkerProcess
except ImportError:  # tests/ run as a plain directory on sys.path
    from fakeplatform import FakePlatform  # type: ignore[no-redef]
    from helpers import WorkerProcess  # type: ignore[no-redef]

pytestmark = pytest.mark.timeout(60)

# A cold interpreter importing requests on a busy 2-core machine.
STARTUP = 20.0


def worker_env(fp: FakePlatform, tmp_path: Any, **extra: str) -> Dict[str, str]:
    env = fp.env(
        WAVESPEED_SPOOL_DIR=str(tmp_path / "spool"),
        WAVESPEED_HEALTH_PORT="0",
        RUNPOD_PING_INTERVAL="100",
    )
    env.update(extra)
    return env


def held(job_id: str) -> Callable[[FakePlatform], bool]:
    """True once a heartbeat names ``job_id``: the worker process holds the job.

    Waiting for this rather than for the platform handing the job out keeps
    the signal from landing while the job-take answer is still unread (see
    the report on abort_fetch: such a job is lost).
    """
    return lambda f: any(job_id in p.query.get("job_id", "").split(",") for p in f.pings())


def test_idle_worker_exits_0_at_once_during_an_open_long_poll(tmp_path: Any) -> None:
    with FakePlatform(longpoll=30) as fp:
        with WorkerProcess("sleeper.py", worker_env(fp, tmp_path)) as proc:
            assert fp.wait_for(
                lambda f: any(r.status is None for r in f.requests("job-take")), STARTUP
            ), proc.output()
            sent = time.monotonic()
            proc.signal(signal.SIGTERM)
            code = proc.wait(10)
            elapsed = time.monotonic() - sent
            assert code == 0, proc.output()
            # runpod waits out the long-poll (up to 90 s; 30 here): never.
            assert elapsed < 3.0, elapsed
            assert "start() returned" in proc.output()


def test_sigterm_lets_the_running_job_finish_and_post(fp: FakePlatform, tmp_path: Any) -> None:
    job_id = fp.add_job({"sleep": 1.0, "echo": "a"})
    spare = fp.add_job({"sleep": 0, "echo": "never"})
    with WorkerProcess("sleeper.py", worker_env(fp, tmp_path)) as proc:
        assert fp.wait_for(held(job_id), STARTUP), proc.output()
        sent = time.monotonic()
        proc.signal(signal.SIGTERM)
        code = proc.wait(15)
        assert code == 0, proc.output()
    (post,) = fp.result_requests(job_id)
    assert post.json() == {"output": {"slept": 1.0, "echo": "a"}}
    assert post.time > sent  # it was still running when the signal came
    assert spare not in fp.taken()


def test_sigterm_past_the_drain_deadline_posts_failed_and_exits_0(
    fp: FakePlatform, tmp_path: Any
) -> None:
    job_id = fp.add_job({"sleep": 30})
    env = worker_env(fp, tmp_path, WAVESPEED_DRAIN_TIMEOUT="0.5")
    with WorkerProcess("sleeper.py", env) as proc:
        assert fp.wait_for(held(job_id), STARTUP), proc.output()
        sent = time.monotonic()
        proc.signal(signal.SIGTERM)
        code = proc.wait(10)
        elapsed = time.monotonic() - sent
        assert code == 0, proc.output()
        assert elapsed < 5.0, elapsed
    (body,) = fp.results(job_id)
    assert "worker shutting down" in body["error"]


def test_second_sigterm_exits_at_once(fp: FakePlatform, tmp_path: Any) -> None:
    job_id = fp.add_job({"sleep": 30})
    with WorkerProcess("sleeper.py", worker_env(fp, tmp_path)) as proc:
        assert fp.wait_for(held(job_id), STARTUP), proc.output()
        proc.signal(signal.SIGTERM)
        # The first signal was handled: the worker is draining (30 s deadline).
        assert proc.wait_output("worker stopping", 10), proc.output()
        assert proc.wait(0.5) is None
        sent = time.monotonic()
        proc.signal(signal.SIGTERM)
        code = proc.wait(5)
        elapsed = time.monotonic() - sent
        assert code == 1, proc.output()
        assert elapsed < 2.0, elapsed


def test_user_sigterm_handler_installed_before_start_is_still_called(
    fp: FakePlatform, tmp_path: Any
) -> None:
    marker = tmp_path / "user-handler-ran"
    env = worker_env(fp, tmp_path, USER_SIGNAL_FILE=str(marker))
    with WorkerProcess("user_signal.py", env) as proc:
        assert fp.wait_for(lambda f: len(f.requests("job-take")) >= 1, STARTUP), proc.output()
        proc.signal(signal.SIGTERM)
        code = proc.wait(10)
        assert code == 0, proc.output()
    assert marker.read_text() == f"called {int(signal.SIGTERM)}\n"


def test_refresh_worker_process_exits_0_after_one_job(fp: FakePlatform, tmp_path: Any) -> None:
    first, second = fp.add_jobs([{"echo": 1}, {"echo": 2}])
    env = worker_env(fp, tmp_path, WORKER_REFRESH="1")
    with WorkerProcess("sleeper.py", env) as proc:
        code = proc.wait(STARTUP)
        assert code == 0, proc.output()
        assert "start() returned" in proc.output()
    assert fp.results(first) == [{"output": {"slept": 0.0, "echo": 1}, "stopPod": True}]
    assert fp.taken() == [first] and fp.pending() == 1
    assert second not in fp.results()
