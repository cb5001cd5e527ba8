"""Issue 6 guarantees that need a real worker process measured from outside.

- SIGKILL mid-job leaves no process behind (guarantee 4) and no heartbeat.
- 20,000 jobs keep RSS, threads and open file descriptors flat (guarantee 6).

The other signal guarantees (SIGTERM idle during a long-poll, while jobs
run, past the drain deadline, a second signal) are pinned by
``tests/test_worker_subprocess.py``. The worker script is
``tests/reliability_workers/mixed_worker.py``.
"""

import os
import signal
import time
from typing import Any, Dict, Set

import pytest

try:
    from tests.fakeplatform import FakePlatform
    from tests.helpers import WorkerProcess, wait_until
except ImportError:  # tests/ run as a plain directory on sys.path
    from fakeplatform import FakePlatform  # type: ignore[no-redef]
    from helpers import WorkerProcess, wait_until  # type: ignore[no-redef]

pytestmark = pytest.mark.timeout(90)

HERE = os.path.dirname(os.path.abspath(__file__))
MIXED = os.path.join(HERE, "reliability_workers", "mixed_worker.py")
STARTUP = 20.0  # a cold interpreter importing requests on a busy 2-core machine


def worker_env(fp: FakePlatform, tmp_path: Any, **extra: str) -> Dict[str, str]:
    env = fp.env(WAVESPEED_SPOOL_DIR=str(tmp_path / "spool"), WAVESPEED_HEALTH_PORT="0")
    env.update(extra)
    return env


def session_members(sid: int) -> Set[int]:
    """Pids of live (non-zombie) processes in session ``sid``, from /proc."""
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="utf-8", errors="replace") as handle:
                raw = handle.read()
        except OSError:
            continue
        # Fields after the command name (which may hold spaces) in parentheses.
        fields = raw[raw.rindex(")") + 2 :].split()
        state, session = fields[0], int(fields[3])
        if session == sid and state != "Z":
            found.add(int(name))
    return found


def proc_status(pid: int) -> Dict[str, int]:
    """RSS (kB), threads and open fds of a live process."""
    values: Dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "Threads"):
                values[key] = int(rest.split()[0])
    values["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return values


@pytest.mark.slow
def test_sigkill_mid_job_leaves_no_process_and_no_heartbeat(
    fp: FakePlatform, tmp_path: Any
) -> None:
    job_id = fp.add_job({"kind": "sleep", "seconds": 30})
    env = worker_env(fp, tmp_path, RUNPOD_PING_INTERVAL="200")
    with WorkerProcess(MIXED, env) as proc:
        pid = proc.proc.pid
        assert fp.wait_for(
            lambda f: any(p.query.get("job_id") == job_id for p in f.pings()), STARTUP
        ), proc.output()
        # The heartbeat is a thread: the worker is one process, no helper beside it.
        assert session_members(pid) == {pid}
        proc.signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
        killed = time.monotonic()
        assert wait_until(lambda: not session_members(pid), 5), session_members(pid)
        # Nothing keeps pinging for the dead worker (wavespeed 1.0.14's pinger did).
        assert not fp.wait_for(lambda f: any(p.time > killed + 0.3 for p in f.pings()), 1.5)
    assert fp.results(job_id, include_rejected=True) == []


@pytest.mark.slow
def test_20000_jobs_keep_memory_threads_and_sockets_flat(fp: FakePlatform, tmp_path: Any) -> None:
    total, warm_up = 20_000, 4_000
    fp.add_jobs({"kind": "echo", "n": n} for n in range(total))
    env = worker_env(fp, tmp_path, WORKER_CONCURRENCY="8", RUNPOD_LOG_LEVEL="WARN")
    with WorkerProcess(MIXED, env) as proc:
        pid = proc.proc.pid
        assert fp.wait_results(warm_up, STARTUP + 20), proc.output()[-2000:]
        warm = proc_status(pid)
        assert fp.wait_results(total, 60), len(fp.results())
        end = proc_status(pid)
        proc.signal(signal.SIGTERM)
        assert proc.wait(10) == 0, proc.output()[-2000:]
    growth_kb = end["VmRSS"] - warm["VmRSS"]
    assert growth_kb < 10 * 1024, (warm, end)
    assert end["Threads"] <= warm["Threads"], (warm, end)
    assert end["fds"] <= warm["fds"] + 2, (warm, end)
    results = fp.results()
    assert len(results) == total
    assert all(len(bodies) == 1 for bodies in results.values())
