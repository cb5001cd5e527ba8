"""The local API's page at ``/`` in a real browser (headless Chromium).

The page runs a job by itself when opened with ``?input=<JSON>``; Chromium
dumps the DOM once the page is idle, and the test reads the job's status,
stream chunks, progress and output from it. Skipped when Chromium is not
installed (``.ci/install-chromium`` installs it on CI).
"""

import json
import os
import re
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

import wavespeed.serverless as serverless
from wavespeed.serverless.config import Config
from wavespeed.serverless.devserver import make_server

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

CHROMIUM = os.environ.get("WAVESPEED_TEST_CHROMIUM", "/usr/bin/chromium")

if not os.path.exists(CHROMIUM):
    pytestmark.append(pytest.mark.skip(reason=f"{CHROMIUM} not installed (run .ci/install-chromium)"))


def handler(job: Dict[str, Any]) -> Any:
    inp = job["input"]
    if inp.get("fail"):
        raise RuntimeError("page-visible failure")

    def tokens() -> Iterator[Dict[str, Any]]:
        for i, word in enumerate(inp["prompt"].split()):
            serverless.progress_update(job, {"step": i + 1})
            time.sleep(0.05)  # chunks arrive over time, as from a model
            yield {"token": word.upper()}

    return tokens()


@pytest.fixture
def base_url() -> Iterator[str]:
    config = Config(handler=handler, return_aggregate_stream=True)
    server = make_server(config, host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.close()
        thread.join(5)


def dump_dom(url: str, tmp_path: Path) -> str:
    profile = tmp_path / "chromium-profile"
    argv = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        # Virtual time runs the page's timers fast and pauses while requests
        # are in flight; the DOM is dumped when the budget is used up.
        "--virtual-time-budget=15000",
        "--dump-dom",
        url,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=75)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def element(dom: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</(?:pre|dd|ol|span)>', dom, re.S)
    assert match, f"#{element_id} not in the DOM"
    return match.group(1)


def page_url(base: str, body: Dict[str, Any]) -> str:
    return f"{base}/?input={urllib.parse.quote(json.dumps(body))}"


def test_page_runs_a_job_and_shows_chunks_progress_and_output(
    base_url: str, tmp_path: Path
) -> None:
    dom = dump_dom(page_url(base_url, {"input": {"prompt": "quick brown fox"}}), tmp_path)
    assert 'data-state="completed"' in dom, dom[-3000:]
    assert element(dom, "status") == "COMPLETED"
    chunks: List[str] = re.findall(r"<li>(.*?)</li>", element(dom, "stream"), re.S)
    assert [json.loads(c)["token"] for c in chunks] == ["QUICK", "BROWN", "FOX"]
    output = json.loads(element(dom, "output"))
    assert output == [{"token": "QUICK"}, {"token": "BROWN"}, {"token": "FOX"}]
    assert json.loads(element(dom, "progress"))["step"] >= 1
    assert re.fullmatch(r"\d+ ms", element(dom, "execution"))
    assert re.fullmatch(r"[0-9a-f-]{36}", element(dom, "job-id"))


def test_page_shows_a_failed_job(base_url: str, tmp_path: Path) -> None:
    dom = dump_dom(page_url(base_url, {"input": {"fail": True, "prompt": ""}}), tmp_path)
    assert 'data-state="failed"' in dom
    assert element(dom, "status") == "FAILED"
    assert "page-visible failure" in element(dom, "output")


def test_page_wraps_a_bare_object_as_input(base_url: str, tmp_path: Path) -> None:
    # Without "input" at the top, the page sends {"input": <what was typed>}.
    dom = dump_dom(page_url(base_url, {"prompt": "bare"}), tmp_path)
    assert element(dom, "status") == "COMPLETED"
    assert json.loads(element(dom, "output")) == [{"token": "BARE"}]
