"""Local test mode (PROTOCOL §14), as a user runs it: ``python handler.py ...``.

Every case runs a handler file as a subprocess of the Python running the
tests, in a temporary folder, with no platform variables in the
environment, and checks the exit code, stdout (the result as JSON) and
stderr (the logs: chunks and progress as they happen).
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable  # whichever environment runs the tests (venv, tox, conda)

HANDLER = '''
import asyncio
import wavespeed.serverless as serverless


async def agen(n):
    for i in range(n):
        await asyncio.sleep(0)
        yield {"a": i}


def handler(job):
    inp = job["input"]
    kind = inp.get("kind", "echo") if isinstance(inp, dict) else "echo"
    if kind == "echo":
        return {"id": job["id"], "input": inp}
    if kind == "raise":
        raise ValueError("handler exploded")
    if kind == "error":
        return {"error": "returned an error"}
    if kind == "stream":
        return ({"chunk": i} for i in range(3))
    if kind == "astream":
        return agen(2)
    if kind == "progress":
        serverless.progress_update(job, {"step": 1})
        serverless.progress_update(job, {"step": 2})
        return {"done": True}
    if kind == "refresh":
        return {"fresh": True, "refresh_worker": True}
    if kind == "async":
        async def work():
            await asyncio.sleep(0)
            return {"async": True}
        return work()
    return {"unknown": kind}


serverless.start({"handler": handler, "return_aggregate_stream": True})
'''


class Result:
    def __init__(self, proc: "subprocess.CompletedProcess[str]") -> None:
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def body(self) -> Dict[str, Any]:
        data = json.loads(self.out)  # stdout holds the result and nothing else
        assert isinstance(data, dict)
        return data


@pytest.fixture
def run_handler(tmp_path: Path) -> Any:
    (tmp_path / "handler.py").write_text(HANDLER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "WAVERLESS_"))}
    env["WAVESPEED_SPOOL_DIR"] = str(tmp_path / "spool")
    # The checkout's package, even where it is not installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)

    def run(*args: str, test_input: Optional[Any] = None) -> Result:
        argv: List[str] = [PYTHON, "handler.py", *args]
        if test_input is not None:
            argv += ["--test_input", test_input if isinstance(test_input, str) else json.dumps(test_input)]
        proc = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
        )
        return Result(proc)

    run.dir = tmp_path  # type: ignore[attr-defined]
    return run


def test_success_prints_the_result_as_json_and_exits_0(run_handler: Any) -> None:
    result = run_handler(test_input={"input": {"prompt": "hi"}})
    assert result.code == 0, result.err
    # The job id defaults to local_test.
    assert result.body() == {"output": {"id": "local_test", "input": {"prompt": "hi"}}}
    assert "completed" in result.err


def test_given_id_is_kept(run_handler: Any) -> None:
    result = run_handler(test_input={"id": "my-job", "input": {}})
    assert result.code == 0 and result.body()["output"]["id"] == "my-job"


def test_handler_exception_exits_1_with_the_error(run_handler: Any) -> None:
    result = run_handler(test_input={"input": {"kind": "raise"}})
    assert result.code == 1
    details = json.loads(result.body()["error"])
    assert details["error_type"] == "<class 'ValueError'>"  # runpod's str(type(exc))
    assert details["error_message"] == "handler exploded"
    assert "Traceback" in details["error_traceback"]


def test_returned_error_exits_1(run_handler: Any) -> None:
    result = run_handler(test_input={"input": {"kind": "error"}})
    assert result.code == 1
    assert result.body() == {"error": "returned an error"}


def test_test_input_json_is_used_without_the_flag(run_handler: Any) -> None:
    (run_handler.dir / "test_input.json").write_text('{"input": {"from": "file"}}')
    result = run_handler()
    assert result.code == 0, result.err
    assert result.body()["output"]["input"] == {"from": "file"}


def test_flag_wins_over_test_input_json(run_handler: Any) -> None:
    (run_handler.dir / "test_input.json").write_text('{"input": {"from": "file"}}')
    result = run_handler(test_input={"input": {"from": "flag"}})
    assert result.body()["output"]["input"] == {"from": "flag"}


def test_missing_test_input_json_exits_1_and_says_what_to_do(run_handler: Any) -> None:
    result = run_handler()
    assert result.code == 1
    assert result.out == ""
    assert "test_input.json" in result.err and "--test_input" in result.err


@pytest.mark.parametrize("raw", ['{"input": ', "not json", "{'input': {}}"])
def test_invalid_json_exits_1_flag_and_file(run_handler: Any, raw: str) -> None:
    flagged = run_handler(test_input=raw)
    assert flagged.code == 1 and "not valid JSON" in flagged.err and flagged.out == ""
    (run_handler.dir / "test_input.json").write_text(raw)
    from_file = run_handler()
    assert from_file.code == 1 and "not valid JSON" in from_file.err


@pytest.mark.parametrize("raw", ["[1, 2]", '"input"', "3"])
def test_input_that_is_not_an_object_exits_1(run_handler: Any, raw: str) -> None:
    result = run_handler(test_input=raw)
    assert result.code == 1 and '"input"' in result.err and result.out == ""


def test_object_without_input_key_is_the_input_as_in_wavespeed_1_0(run_handler: Any) -> None:
    result = run_handler(test_input='{"prompt": "hi"}')
    assert result.code == 0, result.err
    assert result.body() == {"output": {"id": "local_test", "input": {"prompt": "hi"}}}
    said = [line for line in result.err.splitlines() if 'no "input" key' in line]
    assert len(said) == 1 and said[0].startswith("--test_input has no")
    (run_handler.dir / "test_input.json").write_text('{"kind": "echo", "n": 1}')
    from_file = run_handler()
    assert from_file.code == 0 and from_file.body()["output"]["input"] == {"kind": "echo", "n": 1}


def test_test_output_match_and_mismatch(run_handler: Any) -> None:
    job = {"input": {"kind": "refresh"}}
    output_only = run_handler("--test_output", json.dumps({"fresh": True}), test_input=job)
    assert output_only.code == 0, output_only.err
    assert "matches" in output_only.err
    mismatch = run_handler("--test_output", json.dumps({"fresh": False}), test_input=job)
    assert mismatch.code == 1 and "mismatch" in mismatch.err
    bad = run_handler("--test_output", "{nope", test_input=job)
    assert bad.code == 1 and "--test_output" in bad.err


def test_generator_chunks_are_shown_as_they_come(run_handler: Any) -> None:
    result = run_handler(test_input={"input": {"kind": "stream"}})
    assert result.code == 0, result.err
    assert result.body() == {"output": [{"chunk": 0}, {"chunk": 1}, {"chunk": 2}]}
    shown = [line for line in result.err.splitlines() if "stream chunk" in line]
    assert len(shown) == 3
    for i, line in enumerate(shown):
        assert f'{{"output":{{"chunk":{i}}}}}' in line
    assert "generator object" not in result.out + result.err


def test_async_generator_and_coroutine_handlers(run_handler: Any) -> None:
    streamed = run_handler(test_input={"input": {"kind": "astream"}})
    assert streamed.code == 0 and streamed.body() == {"output": [{"a": 0}, {"a": 1}]}
    assert streamed.err.count("stream chunk") == 2
    awaited = run_handler(test_input={"input": {"kind": "async"}})
    assert awaited.code == 0 and awaited.body() == {"output": {"async": True}}


def test_progress_updates_are_shown(run_handler: Any) -> None:
    result = run_handler(test_input={"input": {"kind": "progress"}})
    assert result.code == 0
    lines = [line for line in result.err.splitlines() if "progress" in line]
    assert any('{"step": 1}' in line for line in lines)
    assert any('{"step": 2}' in line for line in lines)
    first = result.err.index('{"step": 1}')
    assert first < result.err.index('{"step": 2}')


def test_refresh_worker_is_reported_and_exits_0(run_handler: Any) -> None:
    result = run_handler(test_input={"input": {"kind": "refresh"}})
    assert result.code == 0
    assert result.body() == {"output": {"fresh": True}, "stopPod": True}
    assert "refresh_worker" in result.err


def test_unknown_flags_are_left_for_the_user(run_handler: Any) -> None:
    result = run_handler("--my_own_flag", "x", test_input={"input": {}})
    assert result.code == 0, result.err
