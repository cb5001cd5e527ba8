"""``--rp_api_reload``: the local API restarts when the handler's code changes.

The main test runs a real handler script with the flag, changes the file on
disk and reads the new behaviour over HTTP on 127.0.0.1; then saves a syntax
error (the reloader stays up and shows it) and a fix (it serves again).
hupper comes with the test extra; without it those tests are skipped, and
one test checks the flag's message when hupper is missing.
"""

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import pytest
import requests

from wavespeed.serverless.config import Config
from wavespeed.serverless.reload import handler_folder, python_files

try:
    from tests.helpers import ROOT, WorkerProcess
except ImportError:  # tests/ run as a plain directory on sys.path
    from helpers import ROOT, WorkerProcess  # type: ignore[no-redef]

pytestmark = pytest.mark.timeout(120)

needs_hupper = pytest.mark.skipif(
    importlib.util.find_spec("hupper") is None, reason="hupper is not installed (pip install 'wavespeed[dev]')"
)

SCRIPT = """
import wavespeed.serverless as serverless

def handler(job):
    return {{"version": {version}}}

serverless.start({{"handler": handler}})
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def output_of(port: int) -> Optional[Any]:
    try:
        response = requests.post(f"http://127.0.0.1:{port}/runsync", json={"input": {}}, timeout=5)
        return response.json().get("output")
    except (requests.RequestException, ValueError):
        return None  # not listening (restarting), or not the API yet


def wait_for_version(proc: WorkerProcess, port: int, version: int, script: Path, within: float = 40) -> None:
    deadline = time.monotonic() + within
    touched = time.monotonic()
    while time.monotonic() < deadline:
        assert proc.proc.poll() is None, proc.output()
        if output_of(port) == {"version": version}:
            return
        if time.monotonic() - touched > 3:
            # hupper compares modification times once a second, from the first
            # time it saw the file: a save made before that is the baseline.
            # A newer time makes the same content a change again.
            os.utime(script)
            touched = time.monotonic()
        time.sleep(0.1)
    raise AssertionError(f"version {version} not served within {within} s:\n{proc.output()}")


@needs_hupper
@pytest.mark.slow
def test_reload_serves_the_changed_handler_and_survives_a_syntax_error(tmp_path: Path) -> None:
    script = tmp_path / "handler.py"
    script.write_text(SCRIPT.format(version=1))
    port = free_port()
    args = ["--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port", str(port), "--rp_api_reload"]
    with WorkerProcess(str(script), env={}, args=args, cwd=str(tmp_path)) as proc:
        wait_for_version(proc, port, 1, script)

        script.write_text(SCRIPT.format(version=2))
        wait_for_version(proc, port, 2, script)

        script.write_text(SCRIPT.format(version=3) + "\ndef broken(:\n")
        assert proc.wait_output("SyntaxError", timeout=40), proc.output()
        assert proc.wait_output("failed to start", timeout=10), proc.output()
        assert proc.proc.poll() is None, "the reloader exited on a syntax error"
        assert "def broken(:" in proc.output()  # the error shows the line

        script.write_text(SCRIPT.format(version=4))
        wait_for_version(proc, port, 4, script)

        proc.signal(signal.SIGTERM)
        assert proc.wait(20) is not None, proc.output()
        with pytest.raises(ProcessLookupError):  # no child is left serving
            os.killpg(proc.proc.pid, 0)


@needs_hupper
@pytest.mark.slow
def test_reload_watches_other_modules_in_the_handler_folder(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text("VERSION = 1\n")
    script = tmp_path / "handler.py"
    script.write_text(
        "import wavespeed.serverless as serverless\n"
        "import model\n\n"
        "def handler(job):\n"
        "    return {'version': model.VERSION}\n\n"
        "serverless.start({'handler': handler})\n"
    )
    port = free_port()
    args = ["--waverless_serve_api", "--waverless_api_host", "127.0.0.1", "--waverless_api_port", str(port),
            "--waverless_api_reload"]
    with WorkerProcess(str(script), env={}, args=args, cwd=str(tmp_path)) as proc:
        wait_for_version(proc, port, 1, tmp_path / "model.py")
        (tmp_path / "model.py").write_text("VERSION = 2\n")
        wait_for_version(proc, port, 2, tmp_path / "model.py")


def test_the_flag_without_hupper_names_the_extra(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['hupper'] = None  # as if it were not installed\n"
        "import wavespeed.serverless as serverless\n"
        "serverless.start({'handler': lambda job: 1})\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "WAVERLESS_"))}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", code, "--rp_serve_api", "--rp_api_port", str(free_port()), "--rp_api_reload"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert "pip install 'wavespeed[dev]'" in proc.stderr
    assert "--rp_api_reload" in proc.stderr.splitlines()[-1]


def test_the_flag_sets_api_reload() -> None:
    def handler(job: Any) -> Any:
        return job

    for flag in ("--rp_api_reload", "--waverless_api_reload"):
        config = Config.from_env({}, ["--rp_serve_api", flag], {"handler": handler})
        assert config.api_reload is True and config.mode == "api"
    assert Config.from_env({}, ["--rp_serve_api"], {"handler": handler}).api_reload is False


def test_importing_the_package_imports_neither_hupper_nor_the_reloader() -> None:
    code = (
        "import sys, wavespeed.serverless as s\n"
        "s.Config.from_env({}, ['--rp_serve_api', '--rp_api_reload'], {'handler': print})\n"
        "print(sorted(m for m in ('hupper', 'wavespeed.serverless.reload') if m in sys.modules))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_the_watched_files_are_the_handler_folder_s_own_code(tmp_path: Path) -> None:
    for name in (
        "handler.py",
        "lib/model.py",
        "lib/deep/util.py",
        ".venv/lib/site.py",
        "venv/lib/x.py",
        "__pycache__/handler.cpython-311.py",
        ".git/hooks/x.py",
        "node_modules/x.py",
        "notes.txt",
    ):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    (tmp_path / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")  # a virtualenv by another name
    watched = [os.path.relpath(p, tmp_path) for p in python_files(str(tmp_path))]
    assert watched == ["handler.py", os.path.join("lib", "model.py"), os.path.join("lib", "deep", "util.py")]
    assert len(python_files(str(tmp_path), limit=2)) == 2


def test_the_handler_folder_is_where_the_handler_is_defined(tmp_path: Path) -> None:
    source = tmp_path / "pkg" / "my_handler.py"
    source.parent.mkdir()
    source.write_text("def handler(job):\n    return job\n")
    spec = importlib.util.spec_from_file_location("my_handler", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert handler_folder(module.handler) == str(source.parent)
