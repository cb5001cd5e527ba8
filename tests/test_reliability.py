"""Issue 6: nothing lost under faults, bad input and shutdown (in-process workers).

Each test pins one guarantee of issue 6 against the loopback fake platform
on 127.0.0.1, waiting on events with timeouts. Guarantees already pinned
well by ``tests/test_worker.py`` or ``tests/test_worker_subprocess.py`` are
not repeated here; the module docstring of ``tests/test_faults_subprocess.py``
and the report list which test covers which guarantee.
"""

import ctypes
import http.client
import json
import os
import select
import stat
import sys
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

try:
    from tests.fakeplatform import FakePlatform, Fault
    from tests.helpers import Meter, echo, free_port, running_worker, takes, wait_until
except ImportError:  # tests/ run as a plain directory on sys.path
    from fakeplatform import FakePlatform, Fault  # type: ignore[no-redef]
    from helpers import (  # type: ignore[no-redef]
        Meter,
        echo,
        free_port,
        running_worker,
        takes,
        wait_until,
    )

from wavespeed.serverless import transport as transport_module
from wavespeed.serverless.config import Config
from wavespeed.serverless.transport import TakeResult, Transport
from wavespeed.serverless.worker import Worker

pytestmark = pytest.mark.timeout(60)

def spool_files(directory: Any) -> List[str]:
    try:
        return sorted(n for n in os.listdir(str(directory)) if n.endswith(".json"))
    except FileNotFoundError:
        return []


# -- 1. every job taken gets exactly one final result ------------------------------------


def test_result_post_timing_out_is_retried_and_accepted_once(
    fp: FakePlatform, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The result read timeout is 30 s in production; shorten it so a response
    # held past it can be shown to be retried rather than lost.
    monkeypatch.setattr(transport_module, "RESULT_READ_TIMEOUT", 0.5)
    fp.script("job-done", Fault(503, delay=3.0))  # held past the timeout, then refused
    job_id = fp.add_job({"v": "slow platform"})
    with running_worker(fp, echo, tmp_path) as run:
        assert fp.wait_results(1, 15)
        run.stop()
    attempts = [r for r in fp.requests("job-done") if r.job_id == job_id]
    assert len(attempts) == 2, [a.status for a in attempts]
    # The first is still held by the fake (status None): the client gave up on it and retried.
    assert attempts[0].faulted is False and attempts[0].status is None
    assert attempts[1].status == 200
    assert fp.results(job_id) == [{"output": {"echo": {"v": "slow platform"}}}]
    assert run.worker.stats["spooled"] == 0


def test_spooled_result_is_a_0600_json_file_in_a_0700_folder(
    fp: FakePlatform, tmp_path: Any
) -> None:
    spool = tmp_path / "spool"
    fp.result_status = 503
    job_id = fp.add_job({"v": "kept"})
    with running_worker(fp, echo, spool, env={"WAVESPEED_RESULT_DEADLINE": "0.3"}) as run:
        assert wait_until(lambda: spool_files(spool), 10), "nothing was spooled"
        (name,) = spool_files(spool)
        path = spool / name
        assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(str(spool)).st_mode) == 0o700
        record = json.loads(path.read_text(encoding="utf-8"))  # JSON, nothing else
        assert record["job_id"] == job_id
        assert json.loads(record["body"]) == {"output": {"echo": {"v": "kept"}}}
        fp.result_status = 200
        # stop() re-sends the spool once before it returns (no 5 s resend tick to wait for).
        run.stop()
    assert fp.results(job_id) == [{"output": {"echo": {"v": "kept"}}}]
    assert os.listdir(str(spool)) == []  # removed once delivered; no temp file left


# -- 2. bounded request rate under 5xx storms and 429s; recovery ---------------------------


def test_429_without_retry_after_backs_off_then_recovers(fp: FakePlatform, tmp_path: Any) -> None:
    fp.script("job-take", Fault(429))
    job_id = fp.add_job({"after": "throttle"})
    with running_worker(fp, echo, tmp_path):
        assert fp.wait_for(lambda f: len(takes(f)) >= 1, 5)
        # runpod's rule for a bare 429: wait about 5 s. Nothing else for 3 s.
        assert not fp.wait_for(lambda f: len(takes(f)) >= 2, 3.0), [t.status for t in takes(fp)]
        assert fp.wait_results(1, 20)
    seen = takes(fp)
    assert [t.status for t in seen[:2]] == [429, 200]
    assert seen[1].time - seen[0].time >= 4.5
    assert fp.results(job_id) == [{"output": {"echo": {"after": "throttle"}}}]


def test_429_storm_with_retry_after_zero_stays_bounded(fp: FakePlatform, tmp_path: Any) -> None:
    fp.script("job-take", *[Fault(429, headers={"Retry-After": "0"})] * 400)
    with running_worker(fp, echo, tmp_path):
        hot = fp.wait_for(lambda f: len(takes(f)) >= 40, 2.0)
        count = len(takes(fp))
    assert not hot, f"{count} takes in 2 s against a 429 storm"


def test_5xx_storm_on_results_is_bounded_and_recovers(fp: FakePlatform, tmp_path: Any) -> None:
    fp.result_status = 502
    ids = fp.add_jobs({"n": n} for n in range(4))
    with running_worker(fp, echo, tmp_path, concurrency=4) as run:
        assert fp.wait_for(
            lambda f: all(f.result_requests(i, include_rejected=True) for i in ids), 10
        )
        started = time.monotonic()
        hot = fp.wait_for(lambda f: len(f.requests("job-done")) >= 60, 2.0)
        count = len(fp.requests("job-done"))
        assert not hot, f"{count} result posts in {time.monotonic() - started:.1f} s"
        fp.result_status = 200
        # The retry backoff is capped at 8 s: recovery comes by itself.
        assert fp.wait_results(4, 20)
        run.stop()
    for n, job_id in enumerate(ids):
        assert fp.results(job_id) == [{"output": {"echo": {"n": n}}}]
    assert run.worker.stats["spooled"] == 0


# -- 3. handler failure modes ----------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [SystemExit(1), SystemExit(0), KeyboardInterrupt()],
    ids=["sys.exit(1)", "sys.exit(0)", "KeyboardInterrupt"],
)
def test_handler_raising_systemexit_or_keyboardinterrupt_is_a_failed_result(
    fp: FakePlatform, tmp_path: Any, exc: BaseException
) -> None:
    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        if job["input"]["die"]:
            raise exc
        return {"n": job["input"]["n"]}

    dying, alive = fp.add_jobs([{"die": True, "n": 0}, {"die": False, "n": 1}])
    with running_worker(fp, handler, tmp_path) as run:
        assert fp.wait_results(2, 10)
        assert not run.worker.stopping  # the worker did not take it as its own exit
        # The slot is released once the post returns, just after the fake accepted it.
        assert wait_until(lambda: run.worker.job_ids() == [], 5), run.worker.job_ids()
        assert run.stop()
    (body,) = fp.results(dying)
    details = json.loads(body["error"])
    assert details["error_type"] == str(type(exc))  # runpod's format on RunPod
    assert fp.results(alive) == [{"output": {"n": 1}}]


def test_50mb_output_is_delivered_once_and_the_worker_goes_on(
    fp: FakePlatform, tmp_path: Any
) -> None:
    size = 50 * 1024 * 1024

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        if job["input"]["big"]:
            return {"blob": "x" * size}
        return {"small": True}

    big, small = fp.add_jobs([{"big": True}, {"big": False}])
    with running_worker(fp, handler, tmp_path) as run:
        assert fp.wait_results(2, 40)
        assert run.stop()
    (post,) = fp.result_requests(big, include_rejected=True)
    assert len(post.body) > size
    assert post.body.startswith(b'{"output":{"blob":"xxx')
    assert fp.results(small) == [{"output": {"small": True}}]


def test_no_failure_mode_stops_the_worker_or_leaks_a_slot(fp: FakePlatform, tmp_path: Any) -> None:
    """At concurrency 1 a single leaked slot would starve every later job."""
    release = threading.Event()

    async def async_raises(job: Dict[str, Any]) -> None:
        raise ValueError("async failure")

    def gen_raises(job: Dict[str, Any]) -> Iterator[int]:
        yield 1
        raise ValueError("midway")

    def handler(job: Dict[str, Any]) -> Any:
        kind = job["input"]["kind"]
        if kind == "raise":
            raise RuntimeError("boom")
        if kind == "exit":
            sys.exit(3)
        if kind == "interrupt":
            raise KeyboardInterrupt
        if kind == "not-json":
            return {"a set": {1, 2}}
        if kind == "gen-raises":
            return gen_raises(job)
        if kind == "async-raises":
            return async_raises(job)
        if kind == "stuck":
            release.wait(20)  # outlives the per-job timeout
            return {"late": True}
        return {"ok": job["input"]["n"]}

    kinds = ["raise", "exit", "interrupt", "not-json", "gen-raises", "async-raises", "stuck"]
    bad = fp.add_jobs({"kind": k} for k in kinds)
    good = fp.add_jobs({"kind": "ok", "n": n} for n in range(3))
    with running_worker(fp, handler, tmp_path, config={"job_timeout": 1.0}) as run:
        try:
            assert run.config.concurrency_modifier is None  # concurrency stays 1
            assert fp.wait_results(len(bad) + len(good), 20), sorted(fp.results())
            assert wait_until(lambda: run.worker.job_ids() == [], 5), run.worker.job_ids()
            healthy, details = run.worker.health_status()
            assert healthy and details["fetcher_alive"] and not run.worker.stopping
        finally:
            # Before stop(): stop() waits for a thread the timeout abandoned
            # (see test_stop_is_not_held_by_a_handler_the_job_timeout_abandoned).
            release.set()
    for job_id, kind in zip(bad, kinds):
        (body,) = fp.results(job_id, include_rejected=True)
        assert body.get("error"), (kind, body)
    (timed_out,) = fp.results(bad[-1])
    assert "TIMED_OUT" in timed_out["error"]
    for n, job_id in enumerate(good):
        assert fp.results(job_id) == [{"output": {"ok": n}}]
    assert run.worker.stats["taken"] == len(bad) + len(good)


def test_per_job_timeout_is_off_by_default(tmp_path: Any) -> None:
    with FakePlatform() as fp:
        cfg = Config.from_env(fp.env(WAVESPEED_SPOOL_DIR=str(tmp_path)), [], {"handler": echo})
    assert cfg.job_timeout is None


# -- 5. heartbeat period while every handler blocks; health when the fetcher dies ------------


def test_heartbeat_keeps_its_period_within_20_percent_while_every_thread_blocks(
    fp: FakePlatform, tmp_path: Any
) -> None:
    """Three pool threads block: in time.sleep, in select(), in a ctypes read()."""
    interval, window = 0.3, 3.0
    wake_r, wake_w = os.pipe()
    libc = ctypes.CDLL(None, use_errno=True)
    meter = Meter()

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        with meter:
            kind = job["input"]["block"]
            if kind == "sleep":
                time.sleep(window + 1.5)
            elif kind == "select":
                select.select([wake_r], [], [], 30)  # a C call releasing the GIL
            else:
                buf = ctypes.create_string_buffer(1)
                libc.read(wake_r, buf, 1)  # ctypes releases the GIL around the call
        return {}

    ids = fp.add_jobs({"block": k} for k in ("sleep", "select", "ctypes"))
    try:
        with running_worker(
            fp,
            handler,
            tmp_path,
            concurrency=3,
            env={"RUNPOD_PING_INTERVAL": str(int(interval * 1000))},
            config={"drain_timeout": 0.2},
        ) as run:
            assert meter.wait_running(3, 10)
            begin = time.monotonic()
            # Evidence, not a sleep: wait for the beat due after the window.
            assert fp.wait_for(
                lambda f: any(p.time > begin + window for p in f.pings()), window + 5
            )
            assert meter.current == 3  # still all blocked during the whole window
            run.stop()  # returns False: the handler threads are stuck, as expected
    finally:
        os.write(wake_w, b"xx")  # wake select() and read() (one byte each)
        os.close(wake_w)
    beats = [
        p.time
        for p in fp.pings()
        if begin <= p.time <= begin + window and set(p.query.get("job_id", "").split(",")) == set(ids)
    ]
    assert len(beats) >= 2, beats
    gaps = [b - a for a, b in zip(beats, beats[1:])]
    mean = (beats[-1] - beats[0]) / (len(beats) - 1)
    assert abs(mean - interval) <= 0.2 * interval, (mean, gaps)
    assert len(beats) >= int(0.8 * window / interval), beats
    assert max(gaps) < 2 * interval, gaps
    assert wait_until(lambda: meter.current == 0, 10)  # all woke before the pipe closes
    os.close(wake_r)


class FetcherKilled(BaseException):
    """Raised inside job-take: what no ``except Exception`` catches."""


class DyingTransport(Transport):
    """A transport whose job-take dies with a BaseException once told to."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.die = threading.Event()

    def take(self, free: int, in_progress: bool) -> TakeResult:
        if self.die.is_set():
            raise FetcherKilled("fetcher killed by the test")
        return super().take(free, in_progress)


def get_health(port: int) -> Tuple[int, Optional[Dict[str, Any]]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        raw = response.read()
        return response.status, (json.loads(raw) if raw else None)
    finally:
        conn.close()


def test_a_fetcher_that_keeps_failing_is_unhealthy_then_recovers(
    fp: FakePlatform, tmp_path: Any
) -> None:
    port = free_port()
    env = fp.env(WAVESPEED_SPOOL_DIR=str(tmp_path), WAVESPEED_HEALTH_PORT=str(port))
    cfg = Config.from_env(env, [], {"handler": echo})
    transport = DyingTransport(cfg)
    worker = Worker(cfg, transport=transport)
    worker.start()
    try:
        assert fp.wait_for(lambda f: len(takes(f)) >= 1, 5)
        assert get_health(port)[0] == 200
        transport.die.set()
        # Every take now raises a BaseException: the guard logs it and backs off;
        # the thread lives on and /health says what is failing.
        assert wait_until(lambda: not worker.health_status()[0], 10)
        status, body = get_health(port)
        assert status == 503 and body is not None
        assert body["status"] == "unhealthy" and body["fetcher_alive"] is True
        assert "FetcherKilled" in body["threads"]["failing"]["fetcher"]
        transport.die.clear()
        job_id = fp.add_job({"back": True})
        assert fp.wait_results(1, 15)
        assert fp.results(job_id) == [{"output": {"echo": {"back": True}}}]
        assert wait_until(lambda: worker.health_status()[0], 10)
    finally:
        worker.request_stop("test")
        worker.stop()


# -- 7. a job handed out again while it runs starts once ------------------------------------


def test_duplicate_ids_in_one_batch_start_once(fp: FakePlatform, tmp_path: Any) -> None:
    started: List[str] = []
    lock = threading.Lock()

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        with lock:
            started.append(job["id"])
        return {"v": job["input"]["v"]}

    twice = {"id": "twin", "input": {"v": 1}}
    fp.script("job-take-batch", Fault.json([twice, dict(twice), {"id": "other", "input": {"v": 2}}]))
    with running_worker(fp, handler, tmp_path, concurrency=4) as run:
        assert fp.wait_results(2, 10)
        assert wait_until(lambda: run.worker.stats["duplicates"] == 1, 5)
        run.stop()
    assert sorted(started) == ["other", "twin"]
    assert fp.results("twin", include_rejected=True) == [{"output": {"v": 1}}]


# -- malformed job-take answers (issue 6 fault list; the rest is in test_worker.py) ----------


def test_non_json_take_and_a_20mb_input_do_not_stop_the_worker(
    fp: FakePlatform, tmp_path: Any
) -> None:
    fp.script(
        "job-take",
        Fault(200, body="<html>bad gateway</html>", headers={"Content-Type": "text/html"}),
        Fault(200, body=b"\x00\xff not json"),
    )
    blob = "y" * (20 * 1024 * 1024)
    big = fp.add_job({"blob": blob})

    def handler(job: Dict[str, Any]) -> Dict[str, Any]:
        return {"length": len(job["input"]["blob"])}

    with running_worker(fp, handler, tmp_path) as run:
        assert fp.wait_results(1, 30)
        assert run.worker.health_status()[1]["fetcher_alive"]
    assert [t.status for t in takes(fp)[:3]] == [200, 200, 200]
    assert fp.results(big) == [{"output": {"length": len(blob)}}]
