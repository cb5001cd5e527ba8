"""Issue 9, section 4: a bounded request rate in every case.

- A job-take answer that brings nothing runnable (only duplicates of jobs
  running here, or only malformed jobs) counts as an empty answer for the
  backoff: no hot loop. Measured as job-takes within a window.
- A generator job's stream chunks stop at its final result: a chunk
  yielded after the job timed out is not posted.
"""

import itertools
import threading
import time
from typing import Any, Dict, Iterator

import pytest

try:
    from tests.fakeplatform import FakePlatform, Fault, Recorded
    from tests.helpers import running_worker, takes, wait_until
except ImportError:  # tests/ run as a plain directory on sys.path
    from fakeplatform import FakePlatform, Fault, Recorded  # type: ignore[no-redef]
    from helpers import running_worker, takes, wait_until  # type: ignore[no-redef]

pytestmark = pytest.mark.timeout(60)

WINDOW = 2.0
# The empty-answer backoff (50 ms doubling to 1 s, with jitter) makes about 6
# takes in 2 s; a hot loop makes thousands.
MAX_TAKES = 40


def takes_in_window(fp: FakePlatform) -> int:
    """Job-takes made during the next WINDOW seconds (returns early past MAX_TAKES)."""
    before = len(takes(fp))
    fp.wait_for(lambda f: len(takes(f)) >= before + MAX_TAKES, WINDOW)
    return len(takes(fp)) - before


def on_every_take(fp: FakePlatform, answer: Any) -> None:
    fp.rule("job-take", answer)
    fp.rule("job-take-batch", answer)


def test_a_take_of_only_duplicates_of_running_jobs_does_not_hot_loop(
    fp: FakePlatform, tmp_path: Any
) -> None:
    started, release = threading.Event(), threading.Event()

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        started.set()
        release.wait(20)
        return {"n": job["input"]["n"]}

    job_id = fp.add_job({"n": 1})
    # Once it runs, every take hands the same job out again (platforms re-queue).
    on_every_take(fp, lambda rec: Fault.json({"id": job_id, "input": {"n": 1}}) if started.is_set() else None)
    with running_worker(fp, handler, tmp_path, concurrency=2) as run:  # a slot stays free
        try:
            assert started.wait(10)
            count = takes_in_window(fp)
            assert count < MAX_TAKES, f"{count} job-takes in {WINDOW:g} s"
            assert run.worker.stats["duplicates"] >= 1
        finally:
            release.set()
        assert fp.wait_results(1, 10)
    assert fp.results(job_id) == [{"output": {"n": 1}}]
    assert len(fp.result_requests(job_id, include_rejected=True)) == 1


@pytest.mark.parametrize("repeat", [False, True], ids=["new-ids", "same-id"])
def test_a_take_of_only_malformed_jobs_does_not_hot_loop(fp: FakePlatform, tmp_path: Any, repeat: bool) -> None:
    serial = itertools.count()

    def malformed(rec: Recorded) -> Fault:
        job_id = "bad" if repeat else f"bad-{next(serial)}"
        return Fault.json({"id": job_id, "inputs": "typo"})  # no "input": malformed

    on_every_take(fp, malformed)
    with running_worker(fp, lambda job: {}, tmp_path) as run:
        assert fp.wait_for(lambda f: len(takes(f)) >= 1, 10)
        count = takes_in_window(fp)
        assert count < MAX_TAKES, f"{count} job-takes in {WINDOW:g} s"
        on_every_take(fp, None)
        assert wait_until(lambda: run.worker.job_ids() == [], 5)
        run.stop()
    # Each malformed job it took was answered FAILED (PROTOCOL section 3, ours).
    answered = fp.results()
    assert answered, "no malformed job was answered"
    for job_id, bodies in answered.items():
        assert job_id.startswith("bad")
        assert all("malformed" in b["error"] for b in bodies), bodies


def test_a_generator_jobs_chunks_stop_at_its_final_result(fp: FakePlatform, tmp_path: Any) -> None:
    ended = threading.Event()

    def working(job: Dict[str, Any]) -> Iterator[Dict[str, int]]:
        try:
            for i in itertools.count():
                yield {"i": i}
                time.sleep(0.2)  # work between chunks: the timeout comes while it works
        finally:
            ended.set()  # closed by the SDK once it sees the job was cancelled

    job_id = fp.add_job({})
    with running_worker(fp, working, tmp_path, config={"job_timeout": 0.3, "drain_timeout": 2.0}):
        assert fp.wait_for(lambda f: bool(f.result_requests(job_id, include_rejected=True)), 15)
        # The chunk yielded after the timeout (i == 2, at about 0.4 s) has been
        # handed to the SDK by the time the generator is closed.
        assert ended.wait(5)
    (final,) = fp.result_requests(job_id, include_rejected=True)
    assert "TIMED_OUT" in final.json()["error"]
    chunks = [r for r in fp.requests("job-stream") if r.job_id == job_id]
    assert chunks, "the job streamed nothing"
    assert [c.time < final.time for c in chunks] == [True] * len(chunks), [c.json() for c in chunks]
    assert [c.json()["output"]["i"] for c in chunks] == list(range(len(chunks)))
