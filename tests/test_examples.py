"""Every example under examples/ runs in local test mode on its test_input.json.

Each example is run the way its docstring says (``python handler.py`` in its
folder), as a subprocess of the Python running the tests; the exit code and
the printed result are checked.
"""

import base64
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PYTHON = sys.executable  # whichever environment runs the tests (venv, tox, conda)

class PngOf:
    """Equal to base64 text of a PNG of this size (the image example's output)."""

    def __init__(self, width: int, height: int) -> None:
        self.size = (width, height)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, str):
            return NotImplemented
        data = base64.b64decode(other, validate=True)
        return data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == self.size

    def __repr__(self) -> str:
        return f"PngOf{self.size}"


# What each example prints for its own test_input.json.
EXPECTED: Dict[str, Any] = {
    ".": {"output": {"text": "HELLO FROM WAVESPEED", "length": 20}},
    "sync": {"output": {"words": 4, "reversed": "nuf era srekrow sselrevres"}},
    "async_handler": {
        "output": {
            "parts": [
                {"part": 0, "waited": 0.05},
                {"part": 1, "waited": 0.02},
                {"part": 2, "waited": 0.04},
            ]
        }
    },
    "generator_stream": {
        "output": [{"token": t} for t in ("one", "token", "at", "a", "time")]
    },
    "async_generator": {"output": [{"index": i, "square": i * i} for i in range(4)]},
    "concurrency": {"output": {"slept": 0.05}},
    "validation": {
        "output": {"prompt": "a lighthouse at dusk", "steps": 30, "image": "<would be here>"}
    },
    "progress": {"output": {"done": 3}},
    "refresh_worker": {"output": {"model": "one-off-lora", "result": "ok"}, "stopPod": True},
    "image": {"output": {"image": PngOf(320, 200), "width": 320, "height": 200}},
}


def example_dirs() -> List[str]:
    found = [
        p.name
        for p in sorted(EXAMPLES.iterdir())
        if p.is_dir() and (p / "handler.py").exists()
    ]
    return ["."] + found


def _env(tmp_path: Path) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "WAVERLESS_"))}
    env["WAVESPEED_SPOOL_DIR"] = str(tmp_path / "spool")
    # The checkout's package, even where it is not installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def run_example(name: str, tmp_path: Path, *args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        [PYTHON, "handler.py", *args],
        cwd=EXAMPLES / name,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_every_example_is_listed_and_has_a_test_input() -> None:
    names = example_dirs()
    assert set(names) == set(EXPECTED), "add the new example's expected output to EXPECTED"
    for name in names:
        data = json.loads((EXAMPLES / name / "test_input.json").read_text())
        assert "input" in data


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_in_local_test_mode(name: str, tmp_path: Path) -> None:
    proc = run_example(name, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == EXPECTED[name]


def test_streaming_examples_show_their_chunks(tmp_path: Path) -> None:
    proc = run_example("generator_stream", tmp_path)
    assert proc.stderr.count("stream chunk") == 5


def test_progress_example_shows_its_updates(tmp_path: Path) -> None:
    proc = run_example("progress", tmp_path)
    assert proc.stderr.count("progress:") == 3


def test_validation_example_rejects_bad_input_with_reasons(tmp_path: Path) -> None:
    bad = json.dumps({"input": {"prompt": 5, "steps": 0, "seed": 1}})
    proc = run_example("validation", tmp_path, "--test_input", bad)
    assert proc.returncode == 1
    error = json.loads(proc.stdout)["error"]
    assert "prompt" in error and "steps" in error and "unknown keys: seed" in error


def test_root_example_with_inline_input(tmp_path: Path) -> None:
    proc = run_example(".", tmp_path, "--test_input", '{"input": {"prompt": "hi"}}')
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"output": {"text": "HI", "length": 2}}


def test_make_test_local_runs_the_example(tmp_path: Path) -> None:
    proc = subprocess.run(
        # -o: never make or rebuild the virtualenv from inside a test; PY: the
        # Python running the tests stands in for the virtualenv's.
        ["make", "-s", "-o", ".venv/.installed", "test-local", f"PY={PYTHON}",
         'INPUT={"input": {"prompt": "make"}}'],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"output": {"text": "MAKE", "length": 4}}
