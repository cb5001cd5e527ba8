"""Secrets never leave the process (issue 12, "Secrets").

The API key and every value registered with ``RunPodLogger().secret(...)`` /
``serverless.log.secret(...)`` are masked in what is posted to the platform
(a handler exception's message and traceback, a returned or yielded
``error``, a streamed job's error body) and so in what is spooled. In-process
workers show the exception path; a real subprocess (``start()`` registers the
key) shows the returned and yielded errors.
"""

import json
import os
import signal
from typing import Any, Dict, Iterator, List

import pytest

try:
    from tests.fakeplatform import FakePlatform
    from tests.helpers import WorkerProcess, running_worker, wait_until
except ImportError:  # tests/ run as a plain directory on sys.path
    from fakeplatform import FakePlatform  # type: ignore[no-redef]
    from helpers import WorkerProcess, running_worker, wait_until  # type: ignore[no-redef]

from wavespeed.serverless.masking import REGISTRY

pytestmark = pytest.mark.timeout(60)

# A key holding JSON's special characters: matched after encoding, it would escape the mask.
KEY = 'rpa_"K3Y"\\with\\specials'
STARTUP = 20.0


def leaks(text: str, secret: str) -> bool:
    """The secret, raw or JSON-escaped, anywhere in ``text``."""
    return secret in text or json.dumps(secret)[1:-1] in text


def spooled(folder: Any) -> List[str]:
    try:
        return [os.path.join(str(folder), n) for n in os.listdir(str(folder)) if n.endswith(".json")]
    except FileNotFoundError:
        return []


def raising(job: Dict[str, Any]) -> Any:
    raise PermissionError(f"upstream refused key {job['input']['key']}")


def streaming_then_raising(job: Dict[str, Any]) -> Iterator[Any]:
    yield {"step": 1}
    raise RuntimeError(f"stream broke using {job['input']['key']}")


@pytest.fixture
def keyed() -> Iterator[FakePlatform]:
    with FakePlatform(api_key=KEY) as platform:
        yield platform


def test_api_key_masked_in_a_posted_exception(keyed: FakePlatform, tmp_path: Any) -> None:
    job_id = keyed.add_job({"key": KEY})
    with running_worker(keyed, raising, tmp_path):
        assert keyed.wait_results(1, 15)
    (post,) = keyed.result_requests(job_id)
    raw = post.body.decode("utf-8")
    assert not leaks(raw, KEY)
    details = json.loads(post.json()["error"])
    assert details["error_message"] == "upstream refused key ***"
    assert "upstream refused key ***" in details["error_traceback"]


def test_api_key_masked_in_a_streamed_jobs_error(keyed: FakePlatform, tmp_path: Any) -> None:
    job_id = keyed.add_job({"key": KEY})
    with running_worker(keyed, streaming_then_raising, tmp_path, config={"return_aggregate_stream": True}):
        assert keyed.wait_results(1, 15)
    (post,) = keyed.result_requests(job_id)
    assert not leaks(post.body.decode("utf-8"), KEY)
    body = post.json()
    assert body["output"] == [{"step": 1}]
    assert json.loads(body["error"])["error_message"] == "stream broke using ***"


def test_api_key_masked_in_the_spool(keyed: FakePlatform, tmp_path: Any) -> None:
    spool = tmp_path / "spool"
    keyed.result_status = 503  # the platform never takes it: the result is spooled
    keyed.add_job({"key": KEY})
    with running_worker(keyed, raising, spool, env={"WAVESPEED_RESULT_DEADLINE": "0.3"}) as run:
        assert wait_until(lambda: spooled(spool), 10)
        texts = []
        for path in spooled(spool):
            with open(path, encoding="utf-8") as handle:
                texts.append(handle.read())
        keyed.result_status = 200
        run.stop()
    assert texts and not any(leaks(text, KEY) for text in texts)
    assert all("***" in text for text in texts)


def test_registered_secret_masked_in_a_posted_exception(fp: FakePlatform, tmp_path: Any) -> None:
    import wavespeed.serverless as serverless

    secret = "hf_registered_0123456789"
    serverless.log.secret("HF_TOKEN", secret)  # what RunPodLogger().secret does too
    try:
        job_id = fp.add_job({"key": secret})
        with running_worker(fp, raising, tmp_path):
            assert fp.wait_results(1, 15)
        (post,) = fp.result_requests(job_id)
        assert not leaks(post.body.decode("utf-8"), secret)
    finally:
        REGISTRY._registered = tuple(s for s in REGISTRY._registered if s != secret)  # noqa: SLF001
        REGISTRY._rebuild()  # noqa: SLF001


WORKER = '''
import sys
import wavespeed.serverless as serverless
from wavespeed.compat import layer_path

sys.path.insert(0, layer_path())
import runpod  # the layer

runpod.RunPodLogger().secret("DB_PASSWORD", "pg-password-0123")


def handler(job):
    mode = job["input"]["mode"]
    key = job["input"]["key"]
    if mode == "return":
        return {"error": "login failed with " + key, "partial": "kept"}
    if mode == "error-chunk":
        def chunks():
            yield {"n": 1}
            yield {"error": "bad chunk for " + key}
        return chunks()
    return {"echo": key}


serverless.start({"handler": handler})
'''


@pytest.mark.parametrize("secret", [KEY, "pg-password-0123"], ids=["api-key", "registered"])
def test_returned_and_yielded_errors_are_masked(keyed: FakePlatform, tmp_path: Any, secret: str) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    returned = keyed.add_job({"mode": "return", "key": secret})
    chunked = keyed.add_job({"mode": "error-chunk", "key": secret})
    env = keyed.env(WAVESPEED_SPOOL_DIR=str(tmp_path / "spool"), WAVESPEED_HEALTH_PORT="0")
    with WorkerProcess(str(script), env) as proc:
        assert keyed.wait_for(lambda f: bool(f.results(returned) and f.results(chunked)), STARTUP), proc.output()
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0, proc.output()
        output = proc.output()
    posts: List[str] = [r.body.decode("utf-8") for j in (returned, chunked) for r in keyed.result_requests(j)]
    assert posts and not any(leaks(p, secret) for p in posts)
    assert keyed.results(returned) == [{"output": {"partial": "kept"}, "error": "login failed with ***"}]
    assert keyed.results(chunked) == [{"error": "bad chunk for ***"}]
    assert not leaks(output, secret)  # nor in any log line
    assert "DB_PASSWORD: p**************3" in output
