"""Prometheus metrics: scraped from a running worker and from the local API.

The text is parsed with prometheus_client's own parser, so a malformed
exposition fails here. Without the extra, /metrics answers 404 saying what
to install, and importing wavespeed.serverless never imports the client.
"""

import http.client
import subprocess
import sys
import textwrap
import threading
from typing import Any, Dict, Tuple

import pytest

try:
    from tests.fakeplatform import FakePlatform
    from tests.helpers import free_port, running_worker
except ImportError:  # tests/ run as a plain directory on sys.path
    from fakeplatform import FakePlatform  # type: ignore[no-redef]
    from helpers import free_port, running_worker  # type: ignore[no-redef]

from wavespeed.serverless.config import Config
from wavespeed.serverless.devserver import create_app

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

pytestmark = pytest.mark.timeout(60)

Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, by (name, sorted labels)."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def scrape(port: int) -> Tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read().decode()
    finally:
        conn.close()


def test_a_running_worker_serves_its_metrics(fp: FakePlatform, tmp_path: Any) -> None:
    release = threading.Event()
    holding = threading.Event()

    def handler(job: Dict[str, Any]) -> Any:
        if job["input"].get("fail"):
            raise ValueError("boom")
        if job["input"].get("hold"):
            holding.set()
            release.wait(10)
        if job["input"].get("stream"):
            return (i for i in range(3))
        return {"ok": True}

    port = free_port()
    env = {"WAVESPEED_HEALTH_PORT": str(port)}
    fp.add_jobs([{"n": 1}, {"n": 2}, {"fail": True}, {"stream": True}])
    with running_worker(fp, handler, tmp_path, env=env, concurrency=2):
        assert fp.wait_results(4, 10)
        held = fp.add_job({"hold": True})
        assert holding.wait(10)  # running: it holds a slot until released
        status, content_type, text = scrape(port)
        assert status == 200 and content_type.startswith("text/plain")
        found = samples(text)
        assert found[("wavespeed_jobs_total", (("kind", "sync"), ("status", "COMPLETED")))] == 2
        assert found[("wavespeed_jobs_total", (("kind", "sync"), ("status", "FAILED")))] == 1
        assert (
            found[("wavespeed_jobs_total", (("kind", "sync_generator"), ("status", "COMPLETED")))]
            == 1
        )
        assert found[("wavespeed_job_duration_seconds_count", (("kind", "sync"),))] == 3
        assert found[("wavespeed_result_posts_total", (("outcome", "delivered"),))] == 4
        assert found[("wavespeed_stream_chunks_total", ())] == 3
        assert found[("wavespeed_job_takes_total", (("outcome", "jobs"),))] >= 2
        assert found[("wavespeed_jobs_in_flight", ())] == 1
        assert found[("wavespeed_concurrency", ())] == 2
        assert found[("wavespeed_spool_entries", ())] == 0
        assert found[("wavespeed_heartbeat_failures_total", ())] == 0
        # No label carries a job id: cardinality stays bounded.
        assert held not in text and "job-1" not in text
        release.set()
        assert fp.wait_results(5, 10)


def test_the_local_api_serves_metrics() -> None:
    app = create_app(Config(handler=lambda job: {"echo": job["input"]}))
    try:
        client = app.test_client()
        doc = client.post("/runsync", json={"input": {"x": 1}}).get_json()
        assert doc["status"] == "COMPLETED"
        response = client.get("/metrics")
        assert response.status_code == 200
        found = samples(response.get_data(as_text=True))
        assert found[("wavespeed_jobs_total", (("kind", "sync"), ("status", "COMPLETED")))] == 1
    finally:
        app.extensions["wavespeed"].close(wait=True)


SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["prometheus_client"] = None  # as if the extra were not installed
    import wavespeed.serverless as serverless
    from wavespeed.serverless.config import Config
    from wavespeed.serverless.devserver import create_app
    app = create_app(Config(handler=lambda job: job["input"]))
    response = app.test_client().get("/metrics")
    print(response.status_code, response.get_data(as_text=True).strip())
    app.extensions["wavespeed"].close(wait=True)
    """
)


def test_without_the_extra_metrics_answers_404_naming_it() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("404 ")
    assert "pip install 'wavespeed[metrics]'" in done.stdout


def test_importing_the_sdk_imports_no_prometheus_client() -> None:
    code = "import sys, wavespeed.serverless; print('prometheus_client' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr
