"""Code written for wavespeed 1.0.x (last release 1.0.14) runs unchanged.

The names and signatures are read from the 1.0.14 release: the
``wavespeed.serverless.modules`` package (``progress_update``,
``async_progress_update``, ``log``, ``LogLevel``, ``WaverlessLogger``),
``wavespeed.serverless.utils.validator.validate``, its error payloads on
Waverless (``error_type`` is the class name, ``wavespeed_version``), and a
``--test_input`` object without an ``input`` key.
"""

import importlib
import inspect
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

import wavespeed

try:
    from tests.fakeplatform import FakePlatform
    from tests.helpers import capture_logs, running_worker
except ImportError:  # tests/ run as a plain directory on sys.path
    from fakeplatform import FakePlatform  # type: ignore[no-redef]
    from helpers import capture_logs, running_worker  # type: ignore[no-redef]

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def levels() -> Iterator[None]:
    base = logging.getLogger("wavespeed")
    handler_log = logging.getLogger("wavespeed.handler")
    saved = base.level, handler_log.level
    yield
    base.setLevel(saved[0])
    handler_log.setLevel(saved[1])
    base.__dict__.pop("_wavespeed_user_level", None)


def test_the_1_0_module_paths_and_names() -> None:
    modules = importlib.import_module("wavespeed.serverless.modules")
    from wavespeed.serverless.modules import LogLevel, WaverlessLogger, async_progress_update, log, progress_update
    from wavespeed.serverless.modules.logger import log as module_log
    from wavespeed.serverless.modules.progress import progress_update as module_progress
    from wavespeed.serverless.utils.validator import validate

    assert log is module_log is WaverlessLogger() and isinstance(log, WaverlessLogger)
    assert progress_update is module_progress
    assert inspect.iscoroutinefunction(async_progress_update)
    assert list(inspect.signature(async_progress_update).parameters) == ["session", "job", "progress"]
    assert {m.name: int(m) for m in LogLevel} == {
        "NOTSET": 0, "TRACE": 5, "DEBUG": 10, "INFO": 20, "WARN": 30, "ERROR": 40
    }
    assert validate is importlib.import_module("wavespeed.serverless.utils").validate
    assert set(modules.__all__) >= {"progress_update", "async_progress_update", "log", "LogLevel", "WaverlessLogger"}
    assert wavespeed.__version__ == "1.1.0"


def test_validator_module() -> None:
    validator = importlib.import_module("wavespeed.serverless.utils.validator")
    schema = {"prompt": {"type": str, "required": True}, "steps": {"type": int, "required": False, "default": 4}}
    assert validator.validate({"prompt": "hi"}, schema) == {"validated_input": {"prompt": "hi", "steps": 4}}
    assert validator.validate({}, schema) == {"errors": ["prompt is a required input."]}
    assert validator.INVALID_TYPE_ERROR == "{} should be {} type, not {}."


def test_waverless_logger(levels: None) -> None:
    from wavespeed.serverless.modules import LogLevel, WaverlessLogger

    log = WaverlessLogger()
    with capture_logs() as records:
        log.set_level("DEBUG")
        log.debug("d", job_id="job-1")
        log.info("i", "job-2")
        log.log("w", LogLevel.WARN, "job-3")
        log.log("e", level=LogLevel.ERROR)
        log.set_level(LogLevel.ERROR)
        log.warn("hidden")
        log.set_level("nonsense")  # 1.0's rule: an unknown name means INFO
        log.info("shown at INFO")
        log.debug("hidden at INFO")
    got = [(r.getMessage(), r.levelno, getattr(r, "job_id", None)) for r in records]
    assert got == [
        ("d", logging.DEBUG, "job-1"),
        ("i", logging.INFO, "job-2"),
        ("w", logging.WARNING, "job-3"),
        ("e", logging.ERROR, None),
        ("shown at INFO", logging.INFO, None),
    ]


def test_progress_functions_send_through_the_worker(fp: FakePlatform, tmp_path: Any) -> None:
    from wavespeed.serverless.modules import async_progress_update, progress_update

    answers = []

    def sync_handler(job: Dict[str, Any]) -> Any:
        answers.append(progress_update(job, {"pct": 50}))
        return {"done": True}

    async def async_handler(job: Dict[str, Any]) -> Any:
        answers.append(await async_progress_update(None, job, {"pct": 75}))
        return {"done": True}

    first = fp.add_job({})
    with running_worker(fp, sync_handler, tmp_path / "a"):
        assert fp.wait_results(1, 15)
    second = fp.add_job({})
    with running_worker(fp, async_handler, tmp_path / "b"):
        assert fp.wait_for(lambda f: bool(f.results(second)), 15)
    assert answers == [True, True]
    assert fp.progress(first) == [{"pct": 50}] and fp.progress(second) == [{"pct": 75}]


def test_error_payload_on_waverless_is_1_0_14s(tmp_path: Any) -> None:
    def handler(job: Dict[str, Any]) -> Any:
        raise KeyError("prompt")

    with FakePlatform(style="waverless") as fp:
        job_id = fp.add_job({})
        with running_worker(fp, handler, tmp_path):
            assert fp.wait_results(1, 15)
        (body,) = fp.results(job_id)
    details = json.loads(body["error"])
    assert list(details) == [
        "error_type", "error_message", "error_traceback", "hostname", "worker_id", "wavespeed_version"
    ]
    assert details["error_type"] == "KeyError"
    assert details["error_message"] == "'prompt'"
    assert details["wavespeed_version"] == wavespeed.__version__
    assert details["worker_id"] == "pod-1"


WORKER_1_0 = '''
import asyncio
import wavespeed.serverless as serverless
from wavespeed.serverless.modules import log, progress_update
from wavespeed.serverless.utils import validate

SCHEMA = {"prompt": {"type": str, "required": True}}


def handler(job):
    checked = validate(job["input"], SCHEMA)
    if "errors" in checked:
        return {"error": checked["errors"]}
    log.info("got " + checked["validated_input"]["prompt"], job_id=job["id"])
    progress_update(job, {"pct": 10})
    return {"text": checked["validated_input"]["prompt"].upper()}


serverless.start({"handler": handler})
'''


def test_a_1_0_worker_runs_unchanged_with_a_bare_test_input(tmp_path: Any) -> None:
    (tmp_path / "handler.py").write_text(WORKER_1_0)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "WAVERLESS_"))}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "handler.py", "--test_input", '{"prompt": "hi"}'],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"output": {"text": "HI"}}
    assert proc.stderr.count('has no "input" key') == 1
    assert "INFO   | local_test | got hi" in proc.stderr


def test_asyncio_is_not_needed_to_import_the_1_0_surface() -> None:
    code = (
        "import sys; import wavespeed.serverless.modules as m; m.LogLevel; m.log; m.progress_update; "
        "print(sorted(x for x in ('asyncio', 'requests', 'aiohttp') if x in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_progress_update_for_a_job_not_running_here_is_false() -> None:
    from wavespeed.serverless.modules import progress_update

    with capture_logs() as records:
        assert progress_update({"id": "never-taken"}, {"pct": 1}) is False
    assert records.find("not running in this worker")
