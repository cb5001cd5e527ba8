"""Issue 9, section 3: a spool that cannot jam, leak or double-send.

- One entry that keeps failing without a 4xx (a proxy answering 502 to big
  bodies) does not hold up the entries after it.
- A 3xx on job-done is a refusal: not followed, not retried forever.
- A spool write that fails (the disk is full) leaves no ``.tmp`` behind;
  ``.tmp`` files a crash left are cleaned at start.
- Two workers sharing a folder never both send an entry.
- The resender holds one entry at a time (open files and memory measured).
- The folder is made absolute at ``start()`` (a handler's ``chdir`` cannot
  move it), an existing one is tightened to 0700, a symlinked entry is
  never followed.

Entries are put in place with ``Spool.save`` (the format every core
shares) and read back as plain JSON files.
"""

import json
import os
import signal
import stat
import time
import tracemalloc
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

try:
    from tests.fakeplatform import FakePlatform, Fault
    from tests.helpers import WorkerProcess, echo, running_worker, wait_until
except ImportError:  # tests/ run as a plain directory on sys.path
    from fakeplatform import FakePlatform, Fault  # type: ignore[no-redef]
    from helpers import WorkerProcess, echo, running_worker, wait_until  # type: ignore[no-redef]

from wavespeed.serverless.spool import Spool

pytestmark = pytest.mark.timeout(60)

STARTUP = 20.0


def body(value: Any) -> bytes:
    return json.dumps({"output": value}, separators=(",", ":")).encode()


def on_disk(directory: Any) -> List[str]:
    try:
        return sorted(os.listdir(str(directory)))
    except FileNotFoundError:
        return []


def spooled_ids(directory: Any) -> List[str]:
    ids = []
    for name in on_disk(directory):
        if name.endswith(".json"):
            with open(os.path.join(str(directory), name), encoding="utf-8") as handle:
                ids.append(json.load(handle)["job_id"])
    return ids


# -- one failing entry does not jam the rest ---------------------------------------------------


def test_an_entry_failing_with_502_does_not_block_later_entries(fp: FakePlatform, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    store = Spool(str(spool))
    store.save("big-1", body("x" * (256 * 1024)), False)  # the oldest: tried first
    small = [f"small-{n}" for n in range(3)]
    for job_id in small:
        store.save(job_id, body({"n": job_id}), False)
    # A proxy in front of the platform that refuses big bodies with a 502, forever.
    fp.rule("job-done", lambda rec: Fault(502, body=b"bad gateway") if len(rec.body) > 64 * 1024 else None)
    with running_worker(fp, echo, spool, env={"WAVESPEED_RESULT_DEADLINE": "1"}, config={"drain_timeout": 1.0}):
        assert fp.wait_results(3, 15), sorted(fp.results())
        assert fp.result_requests("big-1", include_rejected=True)  # it was tried, and failed
    for job_id in small:
        assert fp.results(job_id) == [{"output": {"n": job_id}}]
    assert spooled_ids(spool) == ["big-1"]  # kept for later, not dropped


# -- a 3xx is a refusal ----------------------------------------------------------------------------


def redirect(fp: FakePlatform, status: int = 307) -> Fault:
    return Fault(status, headers={"Location": f"{fp.url}/v2/{fp.endpoint}/elsewhere"})


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_3xx_on_job_done_is_a_refusal(fp: FakePlatform, tmp_path: Path, status: int) -> None:
    spool = tmp_path / "spool"
    fp.script("job-done", redirect(fp, status))
    job_id = fp.add_job({"n": 1})
    with running_worker(fp, echo, spool, env={"WAVESPEED_RESULT_DEADLINE": "2"}) as run:
        assert wait_until(lambda: len(fp.result_requests(job_id, include_rejected=True)) >= 2 or on_disk(spool), 10)
        run.stop()
    first, second = fp.result_requests(job_id, include_rejected=True)
    assert first.status == status
    # Replaced by a small FAILED result saying why, as for a 4xx.
    reason = second.json()["error"]
    assert f"HTTP {status}" in reason and "refused" in reason, reason
    assert fp.requests("other") == []  # the redirect was not followed
    assert on_disk(spool) == [] and run.worker.stats["spooled"] == 0


def test_a_spooled_result_answered_3xx_is_replaced_then_given_up_not_retried_forever(
    fp: FakePlatform, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    Spool(str(spool)).save("moved-1", body({"n": 1}), False)
    fp.rule("job-done", lambda rec: redirect(fp, 302))
    with running_worker(fp, echo, spool, env={"WAVESPEED_RESULT_DEADLINE": "1"}, config={"drain_timeout": 1.0}) as run:
        assert fp.wait_for(lambda f: len(f.result_requests("moved-1", include_rejected=True)) >= 2, 10)
        assert wait_until(lambda: on_disk(spool) == [], 5), on_disk(spool)
        run.stop()
    # The result, then the small FAILED one saying why (refused too): then nothing more.
    first, second = fp.result_requests("moved-1", include_rejected=True)
    assert first.json() == {"output": {"n": 1}}
    assert "HTTP 302" in second.json()["error"] and "refused" in second.json()["error"]
    assert fp.requests("other") == []


def test_a_spooled_result_the_platform_refuses_is_replaced_by_a_failed_result(
    fp: FakePlatform, tmp_path: Path
) -> None:
    """As for a live result: a refused re-send (a 400) still gives the job a final answer.

    Found by the soak: a result spooled during an outage, then refused on its
    re-send, was dropped, and the job never got a result.
    """
    spool = tmp_path / "spool"
    Spool(str(spool)).save("refused-1", body({"n": 1}), False)
    fp.script("job-done", Fault(400, body=b"bad result"))
    with running_worker(fp, echo, spool, config={"drain_timeout": 1.0}) as run:
        assert fp.wait_results(1, 10)
        assert wait_until(lambda: on_disk(spool) == [], 5), on_disk(spool)
        run.stop()
    answers = fp.result_requests("refused-1", include_rejected=True)
    assert [a.status for a in answers] == [400, 200]
    reason = fp.results("refused-1")[0]["error"]
    assert "HTTP 400" in reason and "refused" in reason and "bad result" in reason, reason
    assert run.worker.stats["refused"] == 1


# -- writes that fail, writes a crash cut short ------------------------------------------------------


@pytest.mark.slow
def test_a_spool_write_that_fails_leaves_no_tmp_file(fp: FakePlatform, tmp_path: Path) -> None:
    """A worker process whose files may not grow past 4 kB: a 100 kB result cannot be spooled."""
    spool = tmp_path / "spool"
    fp.rule("job-done", lambda rec: Fault(503))
    job_id = fp.add_job({"blob": "y" * 100_000})
    env = fp.env(
        WAVESPEED_SPOOL_DIR=str(spool),
        WAVESPEED_HEALTH_PORT="0",
        WAVESPEED_RESULT_DEADLINE="0.5",
        WAVESPEED_DRAIN_TIMEOUT="1",
        HOSTILE_FSIZE="4096",
        # Under the 4 kB cap, a .pyc this process compiles would be cut at 4,096 bytes
        # (one short write, then renamed into place) and break every later import.
        PYTHONDONTWRITEBYTECODE="1",
    )
    with WorkerProcess("hostile.py", env) as proc:
        assert proc.wait_output(f"the result of job {job_id} is lost", STARTUP), proc.output()
        assert on_disk(spool) == [], on_disk(spool)  # the half-written .tmp was removed
        fp.rule("job-done", None)
        later = fp.add_job({"n": 2})  # the worker goes on
        assert fp.wait_for(lambda f: bool(f.results(later)), 10), proc.output()
        proc.signal(signal.SIGTERM)
        assert proc.wait(15) == 0, proc.output()
    assert "File too large" in proc.output()
    assert on_disk(spool) == []


def test_stale_tmp_files_are_cleaned_at_start(fp: FakePlatform, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    stale = spool / "00000000000000000001-dead.json.tmp"
    fresh = spool / "00000000000000000002-live.json.tmp"  # maybe another worker writing now
    for path in (stale, fresh):
        path.write_text('{"job_id": "half')
    two_minutes_ago = time.time() - 120
    os.utime(str(stale), (two_minutes_ago, two_minutes_ago))
    with running_worker(fp, echo, spool):
        assert not stale.exists()
        assert fresh.exists()


# -- two workers, one folder -----------------------------------------------------------------------


def test_two_workers_sharing_a_spool_never_both_send_an_entry(fp: FakePlatform, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    store = Spool(str(spool))
    ids = [f"shared-{n}" for n in range(40)]
    for job_id in ids:
        store.save(job_id, body({"n": job_id}), False)
    # Each post takes a little while, so both resenders are busy at the same time.
    fp.rule("job-done", lambda rec: Fault(200, body=b"{}", delay=0.05))
    with running_worker(fp, echo, spool, worker_id="pod-a"), running_worker(fp, echo, spool, worker_id="pod-b"):
        assert fp.wait_results(len(ids), 30), len(fp.results())
        assert wait_until(lambda: on_disk(spool) == [], 5), on_disk(spool)
    senders = set()
    for job_id in ids:
        posts = fp.result_requests(job_id, include_rejected=True)
        assert len(posts) == 1, (job_id, [p.worker_id for p in posts])
        assert posts[0].json() == {"output": {"n": job_id}}
        senders.add(posts[0].worker_id)
    assert senders == {"pod-a", "pod-b"}  # both took part: the claims were contended


# -- the resender streams the spool ------------------------------------------------------------------


def open_entries(directory: str) -> int:
    """How many of this process's file descriptors are open on files in ``directory``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if os.path.dirname(target) == directory:
            count += 1
    return count


def test_spool_entries_are_claimed_lazily_one_at_a_time(tmp_path: Path) -> None:
    store = Spool(str(tmp_path / "spool"))
    for n in range(5):
        store.save(f"lazy-{n}", body(n), False)
    claims = store.entries()
    assert open_entries(store.directory) == 0  # nothing opened before the first is asked for
    first = next(claims)
    assert open_entries(store.directory) == 1
    first.release()
    seen = [first.entry.job_id]
    for claim in claims:
        assert open_entries(store.directory) == 1
        seen.append(claim.entry.job_id)
        claim.release()
    assert seen == [f"lazy-{n}" for n in range(5)]


def test_the_resender_reads_one_entry_at_a_time(tmp_path: Path) -> None:
    from wavespeed.serverless.spool import Resender

    size, count = 1024 * 1024, 24
    store = Spool(str(tmp_path / "spool"))
    for n in range(count):
        store.save(f"big-{n}", body("z" * size), False)
    held: List[int] = []
    sent: List[str] = []

    def send(entry: Any) -> Tuple[bool, str]:
        held.append(open_entries(store.directory))
        sent.append(entry.job_id)
        return True, ""

    resender = Resender(store, send)
    tracemalloc.start()
    try:
        resender.turn()
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sent == [f"big-{n}" for n in range(count)]
    assert held == [1] * count  # only the entry being sent is open
    # Reading all 24 entries at once would hold 24 MB; one at a time stays a few MB.
    assert peak < 6 * size, f"peak {peak / size:.1f} MB"
    assert len(store) == 0


# -- where the folder is, what it allows, what it follows ---------------------------------------------


def test_a_relative_spool_dir_is_made_absolute_at_start(
    fp: FakePlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(str(home))

    def wanders(job: Dict[str, Any]) -> Dict[str, Any]:
        os.chdir(str(elsewhere))  # a handler that changes the working directory
        return {"n": job["input"]["n"]}

    fp.rule("job-done", lambda rec: Fault(503))
    job_id = fp.add_job({"n": 1})
    with running_worker(fp, wanders, "spool", env={"WAVESPEED_RESULT_DEADLINE": "0.3"}, config={"drain_timeout": 1.0}):
        assert wait_until(lambda: spooled_ids(home / "spool") or spooled_ids(elsewhere / "spool"), 10)
        assert spooled_ids(home / "spool") == [job_id]
        fp.rule("job-done", None)
    assert not (elsewhere / "spool").exists()


@pytest.mark.parametrize("mode", [0o755, 0o777, 0o711])
def test_an_existing_spool_folder_is_tightened_to_0700(fp: FakePlatform, tmp_path: Path, mode: int) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    os.chmod(str(spool), mode)
    with running_worker(fp, echo, spool):
        assert stat.S_IMODE(os.stat(str(spool)).st_mode) == 0o700


def test_a_symlinked_spool_entry_is_never_followed(fp: FakePlatform, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    store = Spool(str(spool))
    store.save("good-1", body({"n": 1}), False)
    target = tmp_path / "secret.json"
    planted = json.dumps({"job_id": "evil-1", "is_stream": False, "body": '{"output": "leaked"}'})
    target.write_text(planted)
    link = spool / "00000000000000000001-evil.json"  # sorts before the real entry
    os.symlink(str(target), str(link))
    with running_worker(fp, echo, spool):
        assert fp.wait_for(lambda f: bool(f.results("good-1")), 10)
    assert fp.results("evil-1", include_rejected=True) == []
    assert target.read_text() == planted  # not removed, renamed or rewritten
    assert link.is_symlink()

