"""Logging can never break a worker: a handler that closes stdout/stderr (issue 9).

A real subprocess each time, since the fault is the process's own standard
streams. Python's standard streams do not close their file descriptors, so
lines logged after the close still reach descriptors 1 and 2, and none of
them raises into the SDK.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

try:
    from tests.fakeplatform import FakePlatform
    from tests.helpers import WorkerProcess
except ImportError:  # tests/ run as a plain directory on sys.path
    from fakeplatform import FakePlatform  # type: ignore[no-redef]
    from helpers import WorkerProcess  # type: ignore[no-redef]

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parent.parent
STARTUP = 20.0  # a cold interpreter importing requests on a busy 2-core machine


def test_worker_keeps_working_after_its_handler_closes_stdout_and_stderr(fp: FakePlatform, tmp_path: Any) -> None:
    closing = fp.add_job({"close": True, "raise": True})
    env = fp.env(WAVESPEED_SPOOL_DIR=str(tmp_path / "spool"), WAVESPEED_HEALTH_PORT="0")
    with WorkerProcess("closes_streams.py", env) as proc:
        assert fp.wait_for(lambda f: bool(f.results(closing)), STARTUP), proc.output()
        later = [fp.add_job({"echo": n}) for n in range(3)]
        assert fp.wait_for(lambda f: all(f.results(j) for j in later), 20), proc.output()
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0, proc.output()
    (failed,) = fp.results(closing)
    details = json.loads(failed["error"])
    assert details["error_message"] == "failing after closing the streams"
    assert [fp.results(j) for j in later] == [[{"output": {"echo": n}}] for n in range(3)]
    output = proc.output()
    # JSON lines (an endpoint id is set), written to descriptor 1 after the close.
    assert '"message": "logged after the streams were closed"' in output
    assert "worker stopping" in output


def test_local_test_mode_survives_a_closed_stderr(tmp_path: Any) -> None:
    (tmp_path / "handler.py").write_text(
        "import sys\n"
        "import wavespeed.serverless as serverless\n"
        "def handler(job):\n"
        "    sys.stderr.close()\n"
        "    serverless.log.info('after closing stderr')\n"
        "    return {'ok': job['input']['n']}\n"
        "serverless.start({'handler': handler})\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "WAVERLESS_"))}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "handler.py", "--test_input", '{"input": {"n": 7}}'],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"output": {"ok": 7}}  # stdout holds the result alone
    assert "INFO   | local_test | after closing stderr" in proc.stderr  # via descriptor 2
    assert "completed" in proc.stderr
