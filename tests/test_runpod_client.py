"""The runpod client library, unchanged, against the local API.

``runpod.Endpoint`` builds its URLs from ``RUNPOD_ENDPOINT_BASE_URL``
(``<base>/<endpoint_id>/run`` and so on), so pointing it at
``http://127.0.0.1:<port>/v2`` must be enough for client code written for
RunPod to work against a handler on this machine.

runpod is not a dependency of this project: it is installed once into its
own virtualenv under ``${XDG_CACHE_HOME:-~/.cache}/wavespeed-tests/`` and
driven from a subprocess. The test is skipped, saying why, when that
install fails (e.g. offline).
"""

import fcntl
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

from wavespeed.serverless.config import Config
from wavespeed.serverless.devserver import make_server

RUNPOD_VERSION = "1.12.0"
# The first run creates the virtualenv and installs runpod (a minute or so).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def client_venv() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "wavespeed-tests" / "runpod-client"


def ensure_runpod() -> str:
    """The virtualenv's Python with runpod installed; skips the test when that fails."""
    venv = client_venv()
    python = venv / "bin" / "python"
    ready = venv / f".runpod-{RUNPOD_VERSION}"
    venv.parent.mkdir(parents=True, exist_ok=True)
    # Several test runs may start at once: one installs, the others wait.
    with open(venv.parent / "runpod-client.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready.exists() and python.exists():
            return str(python)
        steps = []
        if not python.exists():
            steps.append([sys.executable, "-m", "venv", str(venv)])
        steps.append(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                f"runpod=={RUNPOD_VERSION}",
            ]
        )
        for argv in steps:
            try:
                proc = subprocess.run(argv, capture_output=True, text=True, timeout=540)
            except (OSError, subprocess.TimeoutExpired) as exc:
                pytest.skip(f"cannot install runpod=={RUNPOD_VERSION} into {venv}: {exc}")
            if proc.returncode != 0:
                errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
                reason = (errors or proc.stderr.strip().splitlines() or ["unknown error"])[-1]
                pytest.skip(f"cannot install runpod=={RUNPOD_VERSION} into {venv} (offline?): {reason}")
        ready.touch()
    return str(python)


def handler(job: Any) -> Any:
    inp = job["input"]
    if inp.get("block"):
        job.cancelled.wait(10)  # until the client cancels it
        return {"cancelled": job.cancelled.is_set()}
    if "stream" in inp:
        return ({"chunk": i} for i in range(inp["stream"]))
    return {"upper": inp["text"].upper()}


@pytest.fixture
def base_url() -> Iterator[str]:
    server = make_server(
        Config(handler=handler, api_concurrency=4), host="127.0.0.1", port=0
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}/v2"
    finally:
        server.close()
        thread.join(5)


CLIENT = r"""
import json
import runpod

endpoint = runpod.Endpoint("local", api_key="local-test-key")
out = {}
out["run_sync"] = endpoint.run_sync({"input": {"text": "sync"}}, timeout=30)

job = endpoint.run({"input": {"text": "later"}})
out["job_id"] = job.job_id
out["output"] = job.output(timeout=30)
out["status"] = job.status()

streaming = endpoint.run({"input": {"stream": 3}})
out["stream"] = list(streaming.stream())

blocked = endpoint.run({"input": {"block": True}})
out["cancel"] = blocked.cancel()
out["health"] = endpoint.health()
out["purge"] = endpoint.purge_queue()
print(json.dumps(out))
"""


def test_runpod_endpoint_client_against_the_local_api(base_url: str, tmp_path: Path) -> None:
    python = ensure_runpod()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "WAVERLESS_"))}
    env["RUNPOD_ENDPOINT_BASE_URL"] = base_url
    env["HOME"] = str(tmp_path)  # no ~/.runpod credentials are read or written
    proc = subprocess.run(
        [python, "-c", CLIENT], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: Dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["run_sync"] == {"upper": "SYNC"}
    assert out["output"] == {"upper": "LATER"} and out["status"] == "COMPLETED"
    assert out["stream"] == [{"chunk": 0}, {"chunk": 1}, {"chunk": 2}]
    assert out["cancel"]["status"] == "CANCELLED"
    assert set(out["health"]) == {"jobs", "workers"}
    assert out["purge"]["removed"] == 0
