"""Issue 13: a pool thread whose job has just left takes the next jobs itself.

While the fetcher waits for a free slot, the thread that delivered a result
asks for the next jobs and runs the first one it gets, so at steady load a
job goes from take to result on one thread. These tests pin what that must
keep: who takes, one take at a time, no job held over the concurrency, the
backoff of an empty answer, and the shutdown cut with its grace.
"""

import threading
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from wavespeed.serverless.transport import TakeResult, Transport
from wavespeed.serverless.worker import Worker

try:
    from tests.fakeplatform import FakePlatform
    from tests.helpers import Meter, RunningWorker, echo, takes, wait_until, worker_config
except ImportError:  # tests/ run as a plain directory on sys.path
    from fakeplatform import FakePlatform  # type: ignore[no-redef]
    from helpers import Meter, RunningWorker, echo, takes, wait_until, worker_config  # type: ignore[no-redef]

pytestmark = pytest.mark.timeout(60)


class RecordingTransport(Transport):
    """The real transport; each take also records its thread, its time and what it brought."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.lock = threading.Lock()
        self.takes: List[Tuple[str, float, List[str]]] = []  # (thread, answered at, job ids)
        self.meter = Meter()  # takes in flight now, and the most at once

    def take(self, free: int, in_progress: bool) -> TakeResult:
        with self.meter:
            result = super().take(free, in_progress)
        with self.lock:
            ids = [str(j.get("id")) for j in result.jobs]
            self.takes.append((threading.current_thread().name, time.monotonic(), ids))
        return result


class FetcherWaits:
    """For a handler: wait until the worker's fetcher waits for a free slot.

    Only then does the thread whose job ends take the next jobs itself; a job
    that ends sooner (an immediate one, a slow machine) frees its slot to a
    fetcher not yet waiting, which then takes as usual. Set ``engine`` once
    the worker exists.
    """

    def __init__(self) -> None:
        self.engine: Any = None

    def __call__(self) -> bool:
        return wait_until(lambda: self.engine is not None and self.engine._parked > 0, 5)


@contextmanager
def recorded_worker(
    fp: FakePlatform, handler: Any, tmp_path: Any, concurrency: int
) -> Iterator[Tuple[RunningWorker, RecordingTransport]]:
    cfg = worker_config(fp, handler, str(tmp_path / "spool"), concurrency=concurrency)
    transport = RecordingTransport(cfg)
    run = RunningWorker(Worker(cfg, transport=transport), fp)
    run.worker.start()
    try:
        yield run, transport
    finally:
        run.stop("test teardown")


def test_at_concurrency_1_the_thread_that_ran_a_job_takes_and_runs_the_next(
    fp: FakePlatform, tmp_path: Any
) -> None:
    ran_on: Dict[int, str] = {}
    meter = Meter()
    fetcher_waits = FetcherWaits()

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        with meter:
            assert fetcher_waits()
            ran_on[job["input"]["n"]] = threading.current_thread().name
        return {"n": job["input"]["n"]}

    with recorded_worker(fp, handler, tmp_path, concurrency=1) as (run, transport):
        fetcher_waits.engine = run.worker.engine
        assert fp.wait_for(lambda f: any(r.status == 204 for r in takes(f)), 10)
        ids = fp.add_jobs([{"n": n} for n in range(20)])
        assert fp.wait_results(20, 20)
        assert run.stop() is True

    assert meter.peak == 1
    assert sorted(fp.results()) == sorted(ids)
    assert all(len(fp.results(i)) == 1 for i in ids)
    by_job = {job_id: thread for thread, _, got in transport.takes for job_id in got}
    assert len(by_job) == 20
    # The first job is the fetcher's; after it, every job was taken by the
    # pool thread whose job had just left, and it ran there. (Allow one take
    # by the fetcher: its wait times out each second, and may do so between a
    # handler's return and the slot being freed.)
    pool_taken = [i for i, job_id in enumerate(ids) if by_job[job_id].startswith("wavespeed-job")]
    assert len(pool_taken) >= 18, [by_job[i] for i in ids]
    for n in pool_taken:
        assert ran_on[n] == by_job[ids[n]], (n, ran_on[n], by_job[ids[n]])
    assert transport.meter.peak == 1  # one take at a time


def test_an_async_jobs_delivery_thread_takes_the_next_jobs(fp: FakePlatform, tmp_path: Any) -> None:
    """Async jobs end on the shared loop; their results leave from a delivery
    thread, which then takes the next jobs (the loop never blocks on a take)."""
    import asyncio

    async def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        await asyncio.sleep(0.02)
        return {"n": job["input"]["n"]}

    with recorded_worker(fp, handler, tmp_path, concurrency=1) as (run, transport):
        assert fp.wait_for(lambda f: any(r.status == 204 for r in takes(f)), 10)
        ids = fp.add_jobs([{"n": n} for n in range(10)])
        assert fp.wait_results(10, 20)
        assert run.stop() is True

    assert all(fp.results(i) == [{"output": {"n": n}}] for n, i in enumerate(ids))
    by_job = {job_id: thread for thread, _, got in transport.takes for job_id in got}
    from_delivery = [i for i in ids if by_job[i].startswith("wavespeed-delivery")]
    assert len(from_delivery) >= 8, [by_job[i] for i in ids]
    assert not any("loop" in thread for thread, _, _ in transport.takes)
    assert transport.meter.peak == 1


def test_at_concurrency_4_jobs_held_never_exceed_the_slots(fp: FakePlatform, tmp_path: Any) -> None:
    meter = Meter()

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        with meter:
            time.sleep(0.005 * (job["input"]["n"] % 3))
        return {"n": job["input"]["n"]}

    with recorded_worker(fp, handler, tmp_path, concurrency=4) as (run, transport):
        ids = fp.add_jobs([{"n": n} for n in range(200)])
        assert fp.wait_results(200, 30)
        assert run.stop() is True

    assert meter.peak <= 4
    assert sorted(fp.results()) == sorted(ids)
    assert all(len(fp.results(i)) == 1 for i in ids)
    assert transport.meter.peak == 1
    assert max(len(got) for _, _, got in transport.takes) <= 4
    assert any(thread.startswith("wavespeed-job") for thread, _, got in transport.takes if got)


def test_an_empty_answer_to_a_pool_threads_take_is_backed_off_by_the_fetcher(
    fp: FakePlatform, tmp_path: Any
) -> None:
    """Waverless answers an empty take with 204 at once: the pause it asks for holds.

    The pool thread's take gets the 204; the fetcher, which takes over, must
    wait the backoff (at least 25 ms: half of the first 50 ms step) rather
    than ask again at once.
    """
    fetcher_waits = FetcherWaits()

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        assert fetcher_waits()  # so this job's thread takes next
        return job["input"]

    with recorded_worker(fp, handler, tmp_path, concurrency=1) as (run, transport):
        fetcher_waits.engine = run.worker.engine
        assert fp.wait_for(lambda f: any(r.status == 204 for r in takes(f)), 10)
        job_id = fp.add_job({"v": 1})
        assert fp.wait_results(1, 10)

        def after_the_job() -> List[Tuple[str, float, List[str]]]:
            with transport.lock:
                served = [i for i, t in enumerate(transport.takes) if job_id in t[2]]
                return transport.takes[served[0] + 1 :] if served else []

        assert wait_until(lambda: len(after_the_job()) >= 2, 5)
        assert run.stop() is True
    first, second = after_the_job()[:2]
    assert first[0].startswith("wavespeed-job"), first  # the pool thread took right after its job
    assert first[2] == [] and second[0] == "wavespeed-fetcher", (first, second)
    assert second[1] - first[1] >= 0.025, (first, second)


def test_a_pool_threads_long_poll_is_cut_at_stop(tmp_path: Any) -> None:
    """RunPod holds an empty take open: one held by a pool thread must not delay the exit."""
    with FakePlatform(longpoll=30.0) as fp:
        with recorded_worker(fp, echo, tmp_path, concurrency=1) as (run, transport):
            fp.add_job({"v": 1})
            assert fp.wait_results(1, 10)
            # The pool thread's take after the job is now held by the platform.
            assert fp.wait_for(
                lambda f: any(r.status is None for r in takes(f)) and transport.meter.current == 1, 5
            )
            started = time.monotonic()
            assert run.stop() is True
            elapsed = time.monotonic() - started
    assert elapsed < 3.0, elapsed


def test_a_pool_threads_take_answered_during_shutdown_is_run_not_cut(
    fp: FakePlatform, tmp_path: Any
) -> None:
    """stop() gives the take in flight its grace whichever thread sent it.

    Job 2 is handed out 0.15 s after the pool thread (which has just delivered
    job 1) asked for it; stop() comes in between. Cutting at once would lose
    job 2: the platform counts it taken, the worker would never see it.
    """
    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        return {"v": job["input"]["v"]}

    with recorded_worker(fp, handler, tmp_path, concurrency=1) as (run, transport):
        assert fp.wait_for(lambda f: any(r.status == 204 for r in takes(f)), 10)
        fp.delay("job-take", 0.15)
        one, two = fp.add_jobs([{"v": 1}, {"v": 2}])
        assert fp.wait_results(1, 10)
        assert fp.wait_for(lambda f: transport.meter.current == 1, 5)
        assert run.stop() is True
    assert set(fp.taken()) == {one, two}
    assert fp.results(two) == [{"output": {"v": 2}}]


def test_the_concurrency_modifier_is_never_called_twice_at_once(fp: FakePlatform, tmp_path: Any) -> None:
    """The fetcher and the threads taking jobs themselves both ask the modifier;
    a user's modifier (which may keep state) sees one call at a time."""
    meter = Meter()
    callers: Dict[str, int] = {}

    def modifier(current: int) -> int:
        with meter:
            name = threading.current_thread().name.rsplit("_", 1)[0]
            callers[name] = callers.get(name, 0) + 1
            if name != "wavespeed-fetcher":
                time.sleep(0.003)  # widen the window the fetcher's next call would hit
        return 4

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        time.sleep(0.002)
        return {"n": job["input"]["n"]}

    cfg = worker_config(fp, handler, str(tmp_path / "spool"), config={"concurrency_modifier": modifier})
    run = RunningWorker(Worker(cfg), fp)
    run.worker.start()
    try:
        ids = fp.add_jobs([{"n": n} for n in range(200)])
        assert fp.wait_results(200, 30)
    finally:
        assert run.stop() is True
    assert all(len(fp.results(i)) == 1 for i in ids)
    assert callers.get("wavespeed-fetcher", 0) >= 1 and callers.get("wavespeed-job", 0) >= 10, callers
    assert meter.peak == 1


def test_a_thread_that_would_take_jobs_itself_leaves_a_running_pause_to_the_fetcher(
    fp: FakePlatform, tmp_path: Any
) -> None:
    """While an earlier answer's pause runs, a finishing thread does not take: the
    fetcher, woken when the take is given back, keeps the pause and takes after it.

    Driven through the feeder the engine calls (``Worker._feed``) on a worker that
    is not started, so the fetcher cannot take in between.
    """
    cfg = worker_config(fp, echo, str(tmp_path / "spool"), concurrency=1)
    transport = RecordingTransport(cfg)
    worker = Worker(cfg, transport=transport)
    try:
        worker._next_take_at = time.monotonic() + 30  # a pause still running
        worker._feed(1)
        assert transport.takes == []
        worker._next_take_at = 0.0  # the pause is over
        worker._feed(1)  # the platform has no job: 204, a new pause begins
        assert len(transport.takes) == 1 and transport.takes[0][2] == []
        assert worker._next_take_at > time.monotonic()
    finally:
        worker.transport.close()
        worker.engine.close()


def test_a_job_that_ends_while_another_thread_takes_does_not_wake_the_fetcher(
    fp: FakePlatform, tmp_path: Any
) -> None:
    """c=2: job a's thread takes the next jobs (the platform holds that take); job b
    ends meanwhile. The fetcher, waiting for a slot, is not woken just to find the
    take busy: the take's end wakes it, with both slots free by then."""
    b_may_end = threading.Event()
    fetcher_waits = FetcherWaits()

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        if job["input"]["n"] == "b":
            assert b_may_end.wait(5)
        else:
            assert fetcher_waits()  # with both slots taken: a's thread takes next
        return {"n": job["input"]["n"]}

    with recorded_worker(fp, handler, tmp_path, concurrency=2) as (run, transport):
        engine = run.worker.engine
        fetcher_waits.engine = engine
        turns: List[int] = []  # what each of the fetcher's claim_take calls returned
        claim_take = engine.claim_take

        def counted(stop: threading.Event, timeout: float = 1.0) -> int:
            free = claim_take(stop, timeout)
            turns.append(free)
            return free

        engine.claim_take = counted  # type: ignore[method-assign]
        assert fp.wait_for(lambda f: any(r.status == 204 for r in takes(f)), 10)
        fp.delay("job-take", 0.4)  # every later take is held: a's thread's take is in flight
        fp.delay("job-take-batch", 0.4)
        fp.add_jobs([{"n": "a"}, {"n": "b"}])
        assert fp.wait_results(1, 10)  # a's result: its thread now takes, held 0.4 s
        assert wait_until(lambda: transport.meter.current == 1, 5)
        before = len(turns)
        b_may_end.set()
        assert fp.wait_results(2, 10)
        assert wait_until(lambda: transport.meter.current == 0, 5)  # the held take ended
        during = turns[before:]
        fp.delay("job-take", 0)
        fp.delay("job-take-batch", 0)
        assert run.stop() is True

    feeders = [name for name, _, _ in transport.takes if "job" in name]
    assert feeders, transport.takes  # the held take was a's thread's
    # Without the rule, b's end woke the fetcher, whose claim_take returned 0.
    assert 0 not in during, during
