"""Integration tests: real in-process workers against the loopback fake platform.

Every test runs a ``Worker`` (through ``tests.helpers.running_worker``, which
always stops it) against a ``FakePlatform`` on 127.0.0.1 and checks what the
platform received: results, stream chunks, progress updates, pings and the
shape of every job-take. PROTOCOL.md section numbers are cited where a test
pins a wire rule.
"""

import asyncio
import copy
import http.client
import json
import logging
import os
import socket
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

try:
    from tests.fakeplatform import FakePlatform, Fault, Recorded
    from tests.helpers import (
        TAKE_ROUTES,
        Meter,
        capture_logs,
        echo,
        free_port,
        running_worker,
        wait_until,
    )
except ImportError:  # tests/ run as a plain directory on sys.path
    from fakeplatform import FakePlatform, Fault, Recorded  # type: ignore[no-redef]
    from helpers import (  # type: ignore[no-redef]
        TAKE_ROUTES,
        Meter,
        capture_logs,
        echo,
        free_port,
        running_worker,
        wait_until,
    )

from wavespeed.serverless import progress_update

pytestmark = pytest.mark.timeout(60)

def spool_files(directory: Any) -> List[str]:
    try:
        return sorted(n for n in os.listdir(str(directory)) if n.endswith(".json"))
    except FileNotFoundError:
        return []


def final_posts(fp: FakePlatform, job_id: str) -> List[Recorded]:
    """Every job-done post of a job that is not a progress update, refused ones too."""
    return fp.result_requests(job_id, include_rejected=True)


# -- handler kinds (issue 2, item 5) --------------------------------------------


def sync_handler(job: Dict[str, Any]) -> Dict[str, Any]:
    return {"double": job["input"]["n"] * 2}


async def async_handler(job: Dict[str, Any]) -> Dict[str, Any]:
    await asyncio.sleep(0.001)
    return {"double": job["input"]["n"] * 2}


def gen_handler(job: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    for i in range(3):
        yield {"n": job["input"]["n"], "i": i}


async def agen_handler(job: Dict[str, Any]) -> Any:
    for i in range(3):
        await asyncio.sleep(0.001)
        yield {"n": job["input"]["n"], "i": i}


@pytest.mark.parametrize(
    "handler, streams",
    [(sync_handler, False), (async_handler, False), (gen_handler, True), (agen_handler, True)],
    ids=["sync", "async", "generator", "async-generator"],
)
def test_every_handler_kind_end_to_end(
    fp: FakePlatform, tmp_path: Any, handler: Any, streams: bool
) -> None:
    ids = fp.add_jobs({"n": n} for n in range(4))
    with running_worker(fp, handler, tmp_path, concurrency=2):
        assert fp.wait_results(4, 15)
    for n, job_id in enumerate(ids):
        posts = fp.result_requests(job_id)
        assert len(posts) == 1
        if streams:
            assert fp.stream(job_id) == [{"n": n, "i": i} for i in range(3)]
            assert posts[0].json() == {"output": []}
            assert posts[0].query["isStream"] == "true"
        else:
            assert fp.stream(job_id) == []
            assert posts[0].json() == {"output": {"double": 2 * n}}
            assert posts[0].query["isStream"] == "false"
        # PROTOCOL 4 and 8: the headers of a result post.
        assert posts[0].headers["authorization"] == "test-key"
        assert posts[0].headers["x-request-id"] == job_id
        assert posts[0].headers["content-type"] == "application/x-www-form-urlencoded"


# -- normalisation (PROTOCOL 4), end to end --------------------------------------

NORMALISATION_ROWS = [
    (None, {"output": None}),
    ({"a": 1}, {"output": {"a": 1}}),
    ({"output": 1}, {"output": {"output": 1}}),
    ({}, {}),
    ({"error": "x"}, {"error": "x"}),
    ({"error": "x", "b": 2}, {"output": {"b": 2}, "error": "x"}),
    ({"error": ""}, {}),
    ({"refresh_worker": False, "a": 1}, {"output": {"a": 1}}),
    ([1, "two", None], {"output": [1, "two", None]}),
    ("text", {"output": "text"}),
    (3.5, {"output": 3.5}),
    (0, {"output": 0}),
    (True, {"output": True}),
    (False, {"output": False}),
    ({"text": "héllo ✓ 日本"}, {"output": {"text": "héllo ✓ 日本"}}),
]


@pytest.mark.parametrize(
    "value, expected", NORMALISATION_ROWS, ids=[repr(v)[:30] for v, _ in NORMALISATION_ROWS]
)
def test_normalisation_row_end_to_end(
    fp: FakePlatform, tmp_path: Any, value: Any, expected: Dict[str, Any]
) -> None:
    pristine = copy.deepcopy(value)

    def handler(job: Dict[str, Any]) -> Any:
        return value  # the very same object for every job: it must not be mutated

    ids = fp.add_jobs({} for _ in range(3))
    with running_worker(fp, handler, tmp_path):
        assert fp.wait_results(3, 10)
    for job_id in ids:
        posts = final_posts(fp, job_id)
        assert len(posts) == 1
        assert posts[0].json() == expected
        assert posts[0].query["isStream"] == "false"
        # Non-ASCII text leaves as UTF-8, not \\u escapes.
        assert b"\\u" not in posts[0].body
        assert json.loads(posts[0].body.decode("utf-8")) == expected
    assert value == pristine


@pytest.mark.parametrize("error", [["bad", "worse"], {"code": 7, "why": "no"}], ids=["list", "dict"])
def test_non_string_error_is_sent_as_a_string(fp: FakePlatform, tmp_path: Any, error: Any) -> None:
    job_id = fp.add_job({})
    with running_worker(fp, lambda job: {"error": error}, tmp_path):
        assert fp.wait_results(1, 10)
    (body,) = fp.results(job_id)
    assert set(body) == {"error"}
    assert isinstance(body["error"], str)
    assert json.loads(body["error"]) == error


@pytest.mark.parametrize("value", [b"raw bytes", {"s": {1, 2}}], ids=["bytes", "set"])
def test_output_that_is_not_json_is_a_failed_result(fp: FakePlatform, tmp_path: Any, value: Any) -> None:
    job_id = fp.add_job({})
    with running_worker(fp, lambda job: value, tmp_path):
        assert fp.wait_results(1, 10)
    (body,) = fp.results(job_id)
    assert "output" not in body
    details = json.loads(body["error"])
    assert "JSON" in details["error_message"]


def test_handler_exception_becomes_the_error_payload(fp: FakePlatform, tmp_path: Any) -> None:
    def handler(job: Dict[str, Any]) -> Any:
        raise ValueError("the model fell over")

    ids = fp.add_jobs({} for _ in range(2))
    with running_worker(fp, handler, tmp_path) as run:
        assert fp.wait_results(2, 10)
        assert run.worker.health_status()[1]["fetcher_alive"]
    for job_id in ids:
        (body,) = fp.results(job_id)
        assert set(body) == {"error"}
        details = json.loads(body["error"])
        assert details["error_type"] == "<class 'ValueError'>"  # runpod's format on RunPod
        assert details["error_message"] == "the model fell over"
        assert "Traceback" in details["error_traceback"]
        assert details["worker_id"] == "pod-1"
        assert details["hostname"] == "pod-1"


# -- streaming (PROTOCOL 5) ---------------------------------------------------------


def counting_gen(job: Dict[str, Any]) -> Iterator[int]:
    for i in range(job["input"]["count"]):
        yield i


async def counting_agen(job: Dict[str, Any]) -> Any:
    for i in range(job["input"]["count"]):
        await asyncio.sleep(0)
        yield i


@pytest.mark.parametrize("aggregate", [False, True], ids=["plain", "aggregate"])
@pytest.mark.parametrize("handler", [counting_gen, counting_agen], ids=["sync-gen", "async-gen"])
def test_stream_chunks_in_order_then_final(
    fp: FakePlatform, tmp_path: Any, handler: Any, aggregate: bool
) -> None:
    ids = fp.add_jobs({"count": 12} for _ in range(2))
    with running_worker(
        fp, handler, tmp_path, concurrency=2, config={"return_aggregate_stream": aggregate}
    ):
        assert fp.wait_results(2, 15)
    for job_id in ids:
        assert fp.stream(job_id) == list(range(12))
        chunks = [r for r in fp.requests("job-stream") if r.job_id == job_id]
        assert all(r.query["isStream"] == "false" for r in chunks)
        (final,) = fp.result_requests(job_id)
        assert final.query["isStream"] == "true"
        assert final.json() == {"output": list(range(12)) if aggregate else []}
        # Every chunk was in before the final post went out.
        assert max(r.time for r in chunks) <= final.time
        order = fp.requests()
        assert max(order.index(r) for r in chunks) < order.index(final)


def test_generator_error_streams_what_came_before(fp: FakePlatform, tmp_path: Any) -> None:
    def handler(job: Dict[str, Any]) -> Iterator[int]:
        yield 1
        yield 2
        raise RuntimeError("half way")

    job_id = fp.add_job({})
    with running_worker(fp, handler, tmp_path, config={"return_aggregate_stream": True}):
        assert fp.wait_results(1, 10)
    assert fp.stream(job_id) == [1, 2]
    (final,) = fp.result_requests(job_id)
    body = final.json()
    assert json.loads(body["error"])["error_message"] == "half way"
    assert body["output"] == [1, 2]
    assert final.query["isStream"] == "true"


# -- 1,000 jobs, batch route, never more held than the concurrency ----------------


def test_thousand_trivial_jobs_at_concurrency_8(fp: FakePlatform, tmp_path: Any) -> None:
    meter = Meter()

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        with meter:
            return {"square": job["input"]["n"] ** 2}

    total, concurrency = 1000, 8
    ids = fp.add_jobs({"n": n} for n in range(total))
    with running_worker(fp, handler, tmp_path, concurrency=concurrency) as run:
        assert fp.wait_results(total, 45), f"only {len(fp.results())} results"
        run.stop()

    # Every job answered exactly once, and correctly; nothing posted twice.
    everything = fp.results(include_rejected=True)
    assert set(everything) == set(ids)
    for n, job_id in enumerate(ids):
        assert everything[job_id] == [{"output": {"square": n * n}}]
    assert fp.taken() == ids
    assert meter.peak <= concurrency
    assert fp.requests("job-take-batch"), "the batch route was never used"

    # Replay the platform's log: at each take, the worker held at least
    # (jobs handed out so far - results received so far) jobs, so it may
    # ask for at most concurrency minus that (PROTOCOL 3: Waverless trusts
    # batch_size and never enforces the concurrency itself).
    remaining, handed, finals = total, 0, 0
    for rec in fp.requests():
        if rec.route == "job-done" and rec.accepted:
            finals += 1
        elif rec.route in TAKE_ROUTES:
            size = int(rec.query["batch_size"]) if rec.route == "job-take-batch" else 1
            held_at_least = handed - finals
            if rec.route == "job-take-batch":
                assert 2 <= size <= concurrency
            assert size <= concurrency - held_at_least, (size, held_at_least)
            if held_at_least > 0:
                assert rec.query["job_in_progress"] == "1"
            if rec.status == 200:
                got = min(size, remaining)
                handed += got
                remaining -= got
    assert handed == total


def test_a_freed_slot_is_refilled_at_once(fp: FakePlatform, tmp_path: Any) -> None:
    ids = fp.add_jobs({"n": n} for n in range(30))
    started = time.monotonic()
    with running_worker(fp, sync_handler, tmp_path):
        assert fp.wait_results(30, 20)
        wall = time.monotonic() - started
    assert all(fp.results(i) == [{"output": {"double": 2 * n}}] for n, i in enumerate(ids))
    # One at a time, no fixed sleep between a result and the next take
    # (runpod sleeps 1 s per job: 30 s here).
    assert wall < 3.0, wall
    assert len(fp.requests("job-take-batch")) == 0  # one free slot: the single route


# -- concurrency: real parallelism for blocking handlers (PROTOCOL 11) -----------


@pytest.mark.parametrize("concurrency, jobs", [(1, 4), (4, 12), (16, 40)])
def test_blocking_handlers_run_in_parallel(
    fp: FakePlatform, tmp_path: Any, concurrency: int, jobs: int
) -> None:
    meter = Meter()
    block = 0.25

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        with meter:
            time.sleep(block)
        return {"n": job["input"]["n"]}

    ids = fp.add_jobs({"n": n} for n in range(jobs))
    started = time.monotonic()
    with running_worker(fp, handler, tmp_path, concurrency=concurrency):
        assert fp.wait_results(jobs, 30)
        wall = time.monotonic() - started
    for n, job_id in enumerate(ids):
        assert fp.results(job_id) == [{"output": {"n": n}}]
    serial = jobs * block
    assert meter.peak == concurrency
    if concurrency == 1:
        assert wall >= serial * 0.95
    else:
        # The figure: 40 x 0.25 s at 16 in under 2 s (serial 10 s).
        assert wall < min(0.5 * serial, 2.0), f"{wall:.2f} s for {jobs} jobs at {concurrency}"


def test_live_concurrency_change_without_waiting_for_idle(fp: FakePlatform, tmp_path: Any) -> None:
    widen = threading.Event()
    release = threading.Event()
    calls: List[int] = []
    meter = Meter()

    def modifier(current: int) -> int:
        calls.append(current)
        return 4 if widen.is_set() else 1

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        with meter:
            release.wait(15)
        return {"ok": True}

    fp.add_jobs({} for _ in range(6))
    with running_worker(fp, handler, tmp_path, config={"concurrency_modifier": modifier}):
        assert meter.wait_running(1, 5)
        asked = len(calls)
        # The fetcher re-reads the modifier while its one slot is busy...
        assert wait_until(lambda: len(calls) > asked, 5)
        assert meter.current == 1 and len(fp.taken()) == 1
        widen.set()
        # ...and the new value applies while the first job still runs.
        assert meter.wait_running(4, 5), f"running {meter.current}"
        assert not release.is_set()
        release.set()
        assert fp.wait_results(6, 10)
    assert meter.peak == 4
    assert 4 in calls  # the modifier is handed the value in force


class Boom(Exception):
    pass


@pytest.mark.parametrize("bad", [0, "x", "raise", 1.5, -2], ids=["zero", "str", "raises", "float", "negative"])
def test_bad_modifier_value_keeps_the_old_one(fp: FakePlatform, tmp_path: Any, bad: Any) -> None:
    calls: List[int] = []
    release = threading.Event()
    meter = Meter()

    def modifier(current: int) -> int:
        calls.append(current)
        if len(calls) == 1:
            return 2
        if bad == "raise":
            raise Boom("modifier bug")
        return bad  # type: ignore[no-any-return]

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        with meter:
            release.wait(15)
        return {}

    fp.add_jobs({} for _ in range(4))
    with capture_logs() as logs:
        with running_worker(fp, handler, tmp_path, config={"concurrency_modifier": modifier}) as run:
            # Every call after the first answered badly, before the first take too.
            assert meter.wait_running(2, 5), f"running {meter.current}"
            assert len(fp.taken()) == 2
            release.set()
            assert fp.wait_results(4, 10)
            assert run.worker.health_status()[1]["fetcher_alive"]
    assert meter.peak == 2
    assert len(calls) >= 2 and all(c == 2 for c in calls[1:])
    assert logs.find("concurrency_modifier", logging.WARNING)


# -- heartbeat (PROTOCOL 7) -----------------------------------------------------------


def test_heartbeat_names_running_jobs_then_none(fp: FakePlatform, tmp_path: Any) -> None:
    release = threading.Event()
    meter = Meter()

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        with meter:
            release.wait(15)
        return {}

    ids = fp.add_jobs({} for _ in range(2))
    with running_worker(
        fp, handler, tmp_path, concurrency=2, env={"RUNPOD_PING_INTERVAL": "200"}
    ):
        assert meter.wait_running(2, 5)
        assert fp.wait_for(
            lambda f: any(set(p.query.get("job_id", "").split(",")) == set(ids) for p in f.pings()), 5
        ), [p.query for p in fp.pings()]
        release.set()
        assert fp.wait_results(2, 5)
        done_at = max(r.time for i in ids for r in fp.result_requests(i))
        assert fp.wait_for(
            lambda f: any(p.time > done_at and "job_id" not in p.query for p in f.pings()), 5
        )
    pings = fp.pings()
    for ping in pings:
        assert ping.method == "GET"
        assert ping.worker_id == "pod-1"
        assert ping.headers["authorization"] == "test-key"
        assert ping.query["runpod_version"]
        assert ping.query.get("job_id", "x") != ""  # omitted when idle, never empty
        assert set(ping.query.get("job_id", ",".join(ids)).split(",")) <= set(ids)


def test_heartbeat_keeps_its_period_while_every_pool_thread_sleeps(
    fp: FakePlatform, tmp_path: Any
) -> None:
    meter = Meter()

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        with meter:
            time.sleep(1.4)
        return {}

    ids = fp.add_jobs({} for _ in range(4))
    with running_worker(
        fp, handler, tmp_path, concurrency=4, env={"RUNPOD_PING_INTERVAL": "200"}
    ):
        assert meter.wait_running(4, 5)
        assert fp.wait_results(4, 10)
    busy = [p.time for p in fp.pings() if set(p.query.get("job_id", "").split(",")) == set(ids)]
    # 1.4 s of four sleeping handlers at a 0.2 s interval is about 7 beats.
    assert len(busy) >= 4, busy
    gaps = [b - a for a, b in zip(busy, busy[1:])]
    assert max(gaps) < 0.7, gaps


# -- progress_update (PROTOCOL 6) -----------------------------------------------------


def test_progress_is_ordered_before_the_result_and_dropped_after(
    fp: FakePlatform, tmp_path: Any
) -> None:
    allow_late = threading.Event()
    late_called = threading.Event()

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        for step in range(5):
            progress_update(job, {"step": step})

        def from_another_thread() -> None:
            for i in range(3):
                progress_update(job, f"thread-{i}")

        helper = threading.Thread(target=from_another_thread)
        helper.start()
        helper.join()

        def too_late() -> None:
            allow_late.wait(10)
            progress_update(job, "late")
            late_called.set()

        threading.Thread(target=too_late, daemon=True).start()
        return {"done": True}

    job_id = fp.add_job({})
    with running_worker(fp, handler, tmp_path):
        assert fp.wait_results(1, 10)
        allow_late.set()
        assert late_called.wait(5)
    expected = [{"step": s} for s in range(5)] + [f"thread-{i}" for i in range(3)]
    assert fp.progress(job_id) == expected
    posts = [r for r in fp.requests("job-done") if r.job_id == job_id]
    bodies = [r.json() for r in posts]
    assert bodies[:-1] == [{"status": "IN_PROGRESS", "output": o} for o in expected]
    assert bodies[-1] == {"output": {"done": True}}
    assert all(r.query["isStream"] == "false" for r in posts)
    assert not any(b.get("output") == "late" for b in bodies)


# -- job-take: 429, 5xx, idle 204 (PROTOCOL 3) ------------------------------------------


def test_429_retry_after_is_honoured(fp: FakePlatform, tmp_path: Any) -> None:
    fp.script("job-take", Fault(429, headers={"Retry-After": "0.5"}))
    job_id = fp.add_job({"x": 1})
    with running_worker(fp, echo, tmp_path):
        assert fp.wait_results(1, 10)
    takes = fp.requests("job-take")
    assert takes[0].status == 429 and takes[1].status == 200
    gap = takes[1].time - takes[0].time
    # Not before the delay asked for; and the header, not a 5 s default, ruled.
    assert 0.45 <= gap < 3.0, gap
    assert fp.results(job_id) == [{"output": {"echo": {"x": 1}}}]


def test_500_storm_on_job_take_stays_bounded(fp: FakePlatform, tmp_path: Any) -> None:
    fp.script("job-take", *[Fault(500, body="down")] * 500)
    with running_worker(fp, echo, tmp_path):
        hot = fp.wait_for(lambda f: len(f.requests("job-take")) >= 60, 2.0)
        count = len(fp.requests("job-take"))
    assert not hot, f"{count} takes in 2 s against a 500 storm"
    assert count >= 3  # it does keep trying


def test_worker_recovers_when_job_take_recovers(fp: FakePlatform, tmp_path: Any) -> None:
    fp.script("job-take", *[Fault(500)] * 4, Fault(reset=True))
    job_id = fp.add_job({"x": 2})
    with running_worker(fp, echo, tmp_path):
        assert fp.wait_results(1, 15)
    takes = fp.requests("job-take")
    assert [t.status for t in takes[:6]] == [500] * 4 + [None, 200]
    # Exponential backoff between errors: at least half of 50+100+200+400+800 ms.
    assert takes[5].time - takes[0].time >= 0.7
    assert fp.results(job_id) == [{"output": {"echo": {"x": 2}}}]


def test_idle_worker_against_immediate_204_polls_gently(fp: FakePlatform, tmp_path: Any) -> None:
    with running_worker(fp, echo, tmp_path):
        hot = fp.wait_for(lambda f: len(f.requests("job-take")) >= 15, 2.0)
        count = len(fp.requests("job-take"))
        assert not hot, f"{count} takes in 2 s while idle"
        assert count >= 3
        # The empty-answer backoff is capped near 1 s: a new job is not left waiting.
        queued = time.monotonic()
        job_id = fp.add_job({"late": True})
        assert fp.wait_results(1, 5)
        assert fp.result_requests(job_id)[0].time - queued < 2.5
    for take in fp.requests("job-take"):
        assert take.headers["authorization"] == "test-key"
        assert take.worker_id == "pod-1"
        assert take.query["gpu"] == "test"


# -- result delivery (PROTOCOL 4) --------------------------------------------------------


def test_result_post_failing_then_recovering_is_accepted_once(
    fp: FakePlatform, tmp_path: Any
) -> None:
    fp.script("job-done", Fault(500), Fault(reset=True), Fault(503))
    job_id = fp.add_job({"v": 1})
    with running_worker(fp, echo, tmp_path) as run:
        assert fp.wait_results(1, 15)
        run.stop()
    assert fp.results(job_id) == [{"output": {"echo": {"v": 1}}}]
    attempts = final_posts(fp, job_id)
    assert [a.status for a in attempts] == [500, None, 503, 200]
    assert len({a.body for a in attempts}) == 1  # the same result each time
    assert run.worker.stats["delivered"] == 1
    assert run.worker.stats["spooled"] == 0
    assert spool_files(tmp_path) == []


@pytest.mark.parametrize("status", [400, 413])
def test_refused_result_is_replaced_by_a_small_failed_one(
    fp: FakePlatform, tmp_path: Any, status: int
) -> None:
    fp.script("job-done", Fault(status, body="refused by the platform"))
    job_id = fp.add_job({})
    with running_worker(fp, lambda job: {"blob": "x" * 200_000}, tmp_path) as run:
        assert fp.wait_results(1, 10)
    attempts = final_posts(fp, job_id)
    assert [a.status for a in attempts] == [status, 200]  # a 4xx is never retried as is
    (body,) = fp.results(job_id)
    assert set(body) == {"error"}
    assert str(status) in body["error"]
    assert len(attempts[1].body) < 2000
    assert run.worker.stats["refused"] == 1


def test_undeliverable_result_is_spooled_then_resent(fp: FakePlatform, tmp_path: Any) -> None:
    spool = tmp_path / "spool"
    fp.result_status = 503  # the platform is down for results
    job_id = fp.add_job({"v": 3})
    with capture_logs() as logs:
        with running_worker(
            fp, echo, spool, env={"WAVESPEED_RESULT_DEADLINE": "0.5"}
        ) as run:
            assert wait_until(lambda: spool_files(spool), 10), "nothing was spooled"
            assert fp.results(job_id) == []
            fp.result_status = 200  # the platform recovers
            # The resender retries every few seconds while the worker runs.
            assert fp.wait_results(1, 15)
            assert wait_until(lambda: not spool_files(spool), 5)
    assert fp.results(job_id) == [{"output": {"echo": {"v": 3}}}]
    assert run.worker.stats["spooled"] == 1
    assert logs.find("spooled", logging.WARNING)
    assert logs.find("re-sent")


def test_fresh_worker_resends_a_spool_left_by_a_previous_one(
    fp: FakePlatform, tmp_path: Any
) -> None:
    spool = tmp_path / "spool"
    fp.result_status = 503
    job_id = fp.add_job({"v": 4})
    with running_worker(fp, echo, spool, env={"WAVESPEED_RESULT_DEADLINE": "0.5"}) as first:
        assert wait_until(lambda: spool_files(spool), 10)
        first.stop()
    left = spool_files(spool)
    assert len(left) == 1 and fp.results(job_id) == []

    fp.result_status = 200
    calls: List[Any] = []
    with running_worker(fp, calls.append, spool, worker_id="pod-2"):
        assert fp.wait_results(1, 10)
        assert wait_until(lambda: not spool_files(spool), 5)
    assert fp.results(job_id) == [{"output": {"echo": {"v": 4}}}]
    assert calls == []  # re-sent from disk, not run again


# -- malformed and duplicate jobs (PROTOCOL 3) -------------------------------------------


def test_malformed_jobs(fp: FakePlatform, tmp_path: Any) -> None:
    seen: List[str] = []

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        seen.append(job["id"])
        return {"ok": True}

    fp.add_raw({"id": "no-input"})
    fp.add_raw("not a dict")
    fp.add_raw({"input": {"no": "id"}})
    fp.add_raw([1, "two"])
    good = fp.add_job({"fine": True})
    with running_worker(fp, handler, tmp_path) as run:
        assert fp.wait_results(2, 10)
        assert fp.pending() == 0
        assert run.worker.health_status()[1]["fetcher_alive"]
    assert set(fp.results()) == {"no-input", good}
    (failed,) = fp.results("no-input")
    assert set(failed) == {"error"} and "input" in failed["error"]
    assert fp.results(good) == [{"output": {"ok": True}}]
    assert seen == [good]  # the handler never sees a malformed job


def test_duplicate_job_handed_out_while_running_starts_once(
    fp: FakePlatform, tmp_path: Any
) -> None:
    release = threading.Event()
    started: List[str] = []
    meter = Meter()

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        started.append(job["id"])
        with meter:
            release.wait(15)
        return {"id": job["id"]}

    fp.add_job({}, id="dup")
    with running_worker(fp, handler, tmp_path, concurrency=2) as run:
        assert meter.wait_running(1, 5)
        fp.requeue("dup")
        assert fp.wait_for(lambda f: f.taken().count("dup") == 2, 5)
        assert wait_until(lambda: run.worker.stats["duplicates"] == 1, 5)
        release.set()
        assert fp.wait_results(1, 5)
        run.stop()
    assert started == ["dup"]
    assert fp.results("dup", include_rejected=True) == [{"output": {"id": "dup"}}]


# -- refresh_worker (PROTOCOL 10) -----------------------------------------------------------


@pytest.mark.parametrize("raises", [False, True], ids=["returns", "raises"])
def test_refresh_worker_in_start_config(fp: FakePlatform, tmp_path: Any, raises: bool) -> None:
    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        if raises:
            raise RuntimeError("bad job")
        return {"n": job["input"]["n"]}

    ids = fp.add_jobs({"n": n} for n in range(3))
    with running_worker(fp, handler, tmp_path, config={"refresh_worker": True}) as run:
        assert run.worker.wait_stop_requested(10)
        assert fp.wait_results(1, 5)
        assert run.stop()
    assert run.worker.stop_reason == "refresh_worker"
    assert fp.taken() == ids[:1] and fp.pending() == 2
    (body,) = fp.results(ids[0])
    assert body["stopPod"] is True
    if raises:
        assert "error" in body
    else:
        assert body["output"] == {"n": 0}


def test_refresh_worker_returned_by_the_handler(fp: FakePlatform, tmp_path: Any) -> None:
    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        return {"refresh_worker": job["input"]["last"], "n": job["input"]["n"]}

    ids = fp.add_jobs([{"n": 0, "last": False}, {"n": 1, "last": True}, {"n": 2, "last": False}])
    with running_worker(fp, handler, tmp_path) as run:
        assert run.worker.wait_stop_requested(10)
        assert run.stop()
    assert run.worker.stop_reason == "refresh_worker"
    assert fp.results(ids[0]) == [{"output": {"n": 0}}]
    assert fp.results(ids[1]) == [{"output": {"n": 1}, "stopPod": True}]
    assert fp.taken() == ids[:2] and fp.pending() == 1


# -- shutdown (PROTOCOL 12) -----------------------------------------------------------------


def test_request_stop_during_an_open_long_poll_returns_promptly(tmp_path: Any) -> None:
    with FakePlatform(longpoll=30) as fp:
        with running_worker(fp, echo, tmp_path) as run:
            assert fp.wait_for(
                lambda f: any(r.status is None for r in f.requests("job-take")), 5
            ), "no long-poll was open"
            assert run.stop()
        assert run.stop_seconds is not None and run.stop_seconds < 2.0, run.stop_seconds


def test_drain_lets_running_jobs_finish_and_post(fp: FakePlatform, tmp_path: Any) -> None:
    meter = Meter()

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        with meter:
            time.sleep(0.4)
        return {"n": job["input"]["n"]}

    ids = fp.add_jobs({"n": n} for n in range(3))
    with running_worker(fp, handler, tmp_path) as run:
        assert meter.wait_running(1, 5)
        assert run.stop()
        # stop() returned after the running job's result was posted.
        assert fp.results(ids[0]) == [{"output": {"n": 0}}]
    assert fp.taken() == ids[:1]  # nothing new was taken once stopping


def test_drain_deadline_reports_still_running_jobs_failed(fp: FakePlatform, tmp_path: Any) -> None:
    release = threading.Event()
    left = threading.Event()
    meter = Meter()

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        try:
            with meter:
                release.wait(15)
            return {"late": True}
        finally:
            left.set()

    job_id = fp.add_job({})
    try:
        with running_worker(fp, handler, tmp_path, config={"drain_timeout": 0.3}) as run:
            assert meter.wait_running(1, 5)
            assert run.stop() is False  # a handler thread was still stuck
            assert run.stop_seconds is not None and run.stop_seconds < 3.0
            (body,) = fp.results(job_id)
            assert "worker shutting down" in body["error"]
    finally:
        release.set()
    assert left.wait(5)
    # The handler's own late result is never posted after the FAILED one.
    assert not fp.wait_for(lambda f: len(f.results(job_id, include_rejected=True)) > 1, 0.3)


def test_per_job_timeout_fails_the_job_and_frees_its_slot(fp: FakePlatform, tmp_path: Any) -> None:
    release = threading.Event()
    meter = Meter()

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        if job["input"]["stuck"]:
            with meter:
                release.wait(15)
        return {"n": job["input"]["n"]}

    stuck, quick = fp.add_jobs([{"n": 0, "stuck": True}, {"n": 1, "stuck": False}])
    with running_worker(fp, handler, tmp_path, config={"job_timeout": 0.3}):
        try:
            assert fp.wait_results(2, 10)
            # The slot came back while the stuck handler still blocks.
            assert meter.current == 1
            (body,) = fp.results(stuck)
            assert "TIMED_OUT" in body["error"]
            assert fp.results(quick) == [{"output": {"n": 1}}]
        finally:
            release.set()  # before the teardown stop(): see the next test
    assert fp.results(stuck, include_rejected=True) == [body]  # the late return is not posted


def test_stop_is_not_held_by_a_handler_the_job_timeout_abandoned(
    fp: FakePlatform, tmp_path: Any
) -> None:
    release = threading.Event()

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        release.wait(20)
        return {}

    job_id = fp.add_job({})
    with running_worker(
        fp, handler, tmp_path, config={"job_timeout": 0.3, "drain_timeout": 0.5}
    ) as run:
        assert fp.wait_results(1, 10)
        assert "TIMED_OUT" in fp.results(job_id)[0]["error"]
        # The watchdog has freed the slot (released the job) ...
        assert wait_until(lambda: run.worker.job_ids() == [], 5)
        # ... but the handler thread still blocks.
        stopper = threading.Thread(target=run.stop, daemon=True)
        stopper.start()
        try:
            # The drain deadline is 0.5 s: stop() must be back well within 2.5 s.
            stopped_in_time = wait_until(lambda: not stopper.is_alive(), 2.5)
        finally:
            release.set()
            stopper.join(10)
    assert stopped_in_time
    assert run.stop_result is False  # a handler thread was still stuck


def test_job_stop_cancels_a_running_job_and_posts_nothing(fp: FakePlatform, tmp_path: Any) -> None:
    cancelled = threading.Event()
    meter = Meter()

    def handler(job: Any) -> Dict[str, Any]:
        with meter:
            if job.cancelled.wait(3):
                cancelled.set()
        return {"finished": True}

    job_id = fp.add_job({})
    with running_worker(fp, handler, tmp_path):
        assert meter.wait_running(1, 5)
        fp.stop_job(job_id)
        assert cancelled.wait(4), "the handler never saw job.cancelled"
    assert fp.requests("job-stop")
    assert fp.results(job_id, include_rejected=True) == []  # PROTOCOL 9: nothing is posted


def _stoppable_async(started: threading.Event, reached_end: threading.Event) -> Any:
    async def handler(job: Any) -> Dict[str, Any]:
        if job["input"]:
            return {"follow_up": True}
        started.set()
        await asyncio.sleep(10)  # cancelled here by the job-stop
        reached_end.set()
        return {"finished": True}

    return handler


def _stoppable_generator(started: threading.Event, reached_end: threading.Event) -> Any:
    def handler(job: Any) -> Any:
        if job["input"]:
            return
        for i in range(50):
            started.set()
            yield i
            time.sleep(0.05)  # the runner stops asking once job.cancelled is set
        reached_end.set()

    return handler


def _stoppable_async_generator(started: threading.Event, reached_end: threading.Event) -> Any:
    async def handler(job: Any) -> Any:
        yield 0
        if job["input"]:
            return
        started.set()
        await asyncio.sleep(10)  # cancelled here by the job-stop
        reached_end.set()
        yield 1

    return handler


@pytest.mark.parametrize(
    "make_handler",
    [_stoppable_async, _stoppable_generator, _stoppable_async_generator],
    ids=["async", "generator", "async-generator"],
)
def test_job_stop_ends_every_other_handler_kind_and_posts_nothing(
    fp: FakePlatform, tmp_path: Any, make_handler: Any
) -> None:
    started, reached_end = threading.Event(), threading.Event()
    job_id = fp.add_job({})
    with running_worker(fp, make_handler(started, reached_end), tmp_path) as run:
        assert started.wait(5)
        fp.stop_job(job_id)
        assert wait_until(lambda: not run.worker.job_ids(), 5), "the stopped job still holds its slot"
        follow_up = fp.add_job({"after": "stop"})
        assert fp.wait_for(lambda f: bool(f.results(follow_up)), 10)
    assert not reached_end.is_set(), "the handler ran to its end"
    assert fp.results(job_id, include_rejected=True) == []  # PROTOCOL 9: nothing is posted


# -- health endpoint (issue 2, item 12) -----------------------------------------------------


def http_get(port: int, method: str = "GET") -> Tuple[int, Optional[Dict[str, Any]]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, "/health")
        response = conn.getresponse()
        raw = response.read()
        return response.status, (json.loads(raw) if raw else None)
    finally:
        conn.close()


def test_health_endpoint_reports_running_then_draining(fp: FakePlatform, tmp_path: Any) -> None:
    port = free_port()
    release = threading.Event()
    meter = Meter()

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        with meter:
            release.wait(15)
        return {}

    fp.add_job({})
    with running_worker(fp, handler, tmp_path, env={"WAVESPEED_HEALTH_PORT": str(port)}) as run:
        status, body = http_get(port)
        assert status == 200 and body is not None
        assert body["state"] == "running" and body["fetcher_alive"] is True
        assert http_get(port, "HEAD") == (200, None)
        assert meter.wait_running(1, 5)
        run.worker.request_stop("test")
        status, body = http_get(port)
        assert status == 200 and body is not None and body["state"] == "draining"
        assert body["jobs_in_progress"] == 1
        release.set()
        assert run.stop()
    with pytest.raises(OSError):
        http_get(port)  # closed with the worker


def test_health_port_in_use_is_a_warning_not_a_crash(fp: FakePlatform, tmp_path: Any) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        job_id = fp.add_job({"still": "works"})
        with capture_logs() as logs:
            with running_worker(fp, echo, tmp_path, env={"WAVESPEED_HEALTH_PORT": str(port)}):
                assert fp.wait_results(1, 10)
    assert logs.find("health endpoint not started", logging.WARNING)
    assert fp.results(job_id) == [{"output": {"echo": {"still": "works"}}}]


# -- Waverless (PROTOCOL 1-2) ----------------------------------------------------------------


def test_waverless_style_end_to_end(tmp_path: Any) -> None:
    with FakePlatform(style="waverless") as fp:
        ids = fp.add_jobs({"n": n} for n in range(6))
        with running_worker(
            fp, sync_handler, tmp_path, concurrency=3, env={"WAVERLESS_PING_INTERVAL": "200"}
        ) as run:
            assert run.config.platform == "waverless"
            assert fp.wait_results(6, 10)
            assert fp.wait_for(lambda f: len(f.pings()) >= 1, 5)
        for n, job_id in enumerate(ids):
            (post,) = fp.result_requests(job_id)
            assert post.json() == {"output": {"double": 2 * n}}
            assert post.path == f"/v2/ep/job-done/pod-1/{job_id}?isStream=false"
            assert post.headers["x-request-id"] == job_id
            assert post.headers["authorization"] == "test-key"
        takes = fp.requests("job-take") + fp.requests("job-take-batch")
        assert all(t.worker_id == "pod-1" for t in takes)
        # X-Request-ID is per result post, never left on a shared session.
        assert not any("x-request-id" in r.headers for r in takes + fp.pings())
        assert fp.requests("job-take-batch")
        assert fp.pings()[0].query["runpod_version"]
        assert fp.pings()[0].path.startswith("/v2/ep/ping/pod-1?")
