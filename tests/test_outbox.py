"""The per-job outbox (issue 10, item 4), seen from the platform.

A job's stream chunks, progress updates and final result leave in the order
they were made, the final result last, sent by delivery threads while the
generator goes on. The outbox is bounded by count and by bytes: a generator
that yields faster than the platform takes chunks waits (a sync one blocks
its thread, an async one awaits) and gets at most a full outbox ahead of the
platform; progress updates never wait, and while the outbox is full a
queued update is replaced by a newer one.

The stream endpoint is slowed down (``FakePlatform.delay``) so the generator
is always faster than the network. "Ahead" is counted by the generator
itself: chunks it has handed over minus stream posts the platform has
received.
"""

import asyncio
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import pytest

try:
    from tests.fakeplatform import FakePlatform
    from tests.helpers import running_worker, wait_until
except ImportError:  # tests/ run as a plain directory on sys.path
    from fakeplatform import FakePlatform  # type: ignore[no-redef]
    from helpers import running_worker, wait_until  # type: ignore[no-redef]

from wavespeed.serverless import progress_update
from wavespeed.serverless.delivery import MAX_BYTES, MAX_ITEMS

pytestmark = pytest.mark.timeout(60)

Step = Callable[[Dict[str, Any], int], None]


def sequence(fp: FakePlatform, job_id: str) -> List[Tuple[str, Any]]:
    """What the platform received for a job, in arrival order: (kind, output)."""
    out: List[Tuple[str, Any]] = []
    for rec in fp.requests():
        if rec.job_id != job_id:
            continue
        body = rec.json()
        if rec.route == "job-stream":
            out.append(("chunk", body["output"]))
        elif body.get("status") == "IN_PROGRESS":
            out.append(("progress", body["output"]))
        else:
            out.append(("final", body))
    return out


def generator_handler(kind: str, chunks: int, make: Callable[[int], Any], after: Step) -> Any:
    """A sync or async generator yielding ``make(i)``, calling ``after(job, i)`` after each.

    A job's ``input["chunks"]``, when given, replaces ``chunks``.
    """
    if kind == "sync":

        def handler(job: Dict[str, Any]) -> Any:
            for i in range(job["input"].get("chunks", chunks)):
                yield make(i)
                after(job, i)

        return handler

    async def ahandler(job: Dict[str, Any]) -> Any:
        for i in range(job["input"].get("chunks", chunks)):
            yield make(i)
            after(job, i)
            await asyncio.sleep(0)

    return ahandler


KINDS = pytest.mark.parametrize("kind", ["sync", "async"], ids=["generator", "async-generator"])


@KINDS
def test_chunks_and_progress_keep_their_order_under_a_slow_stream_endpoint(
    fp: FakePlatform, tmp_path: Path, kind: str
) -> None:
    chunks = 15  # well under the bound: nothing is coalesced
    received_at_end: List[int] = []

    def after(job: Dict[str, Any], i: int) -> None:
        progress_update(job, {"step": i})
        if i == chunks - 1:
            received_at_end.append(len(fp.requests("job-stream")))

    fp.delay("job-stream", 0.02)
    job_id = fp.add_job({})
    handler = generator_handler(kind, chunks, lambda i: {"i": i}, after)
    with running_worker(fp, handler, tmp_path):
        assert fp.wait_results(1, 20)
    expected: List[Tuple[str, Any]] = []
    for i in range(chunks):
        expected += [("chunk", {"i": i}), ("progress", {"step": i})]
    expected.append(("final", {"output": []}))
    assert sequence(fp, job_id) == expected
    # The generator finished while its chunks were still on their way: the
    # network overlaps generation instead of costing a round trip per chunk.
    assert received_at_end[0] < chunks


@KINDS
def test_a_generator_gets_at_most_a_full_outbox_ahead_of_the_platform(
    fp: FakePlatform, tmp_path: Path, kind: str
) -> None:
    chunks = 2 * MAX_ITEMS + 8
    ahead: List[int] = []

    def after(job: Dict[str, Any], i: int) -> None:
        # Chunk i has been handed over (the generator resumed): i + 1 in all.
        ahead.append(i + 1 - len(fp.requests("job-stream")))

    fp.delay("job-stream", 0.005)
    job_id = fp.add_job({})
    handler = generator_handler(kind, chunks, lambda i: i, after)
    with running_worker(fp, handler, tmp_path):
        assert fp.wait_results(1, 30)
    # Full: MAX_ITEMS queued, plus the one a delivery thread has taken and
    # not yet finished sending.
    assert MAX_ITEMS - 1 <= max(ahead) <= MAX_ITEMS + 2, max(ahead)
    seq = sequence(fp, job_id)
    assert seq[:-1] == [("chunk", i) for i in range(chunks)]
    assert seq[-1] == ("final", {"output": []})


def test_the_outbox_is_bounded_in_bytes_too(fp: FakePlatform, tmp_path: Path) -> None:
    size = 1 << 20  # 1 MiB chunks: the byte bound binds long before the count bound
    chunks = 28
    bound = MAX_BYTES // size
    ahead: List[int] = []

    def after(job: Dict[str, Any], i: int) -> None:
        ahead.append(i + 1 - len(fp.requests("job-stream")))

    fp.delay("job-stream", 0.005)
    job_id = fp.add_job({})
    handler = generator_handler("sync", chunks, lambda i: {"i": i, "pad": "x" * size}, after)
    with running_worker(fp, handler, tmp_path):
        assert fp.wait_results(1, 30)
    # What waits in memory stays flat at the byte bound, however long the stream.
    assert bound - 1 <= max(ahead) <= bound + 2, max(ahead)
    assert [output["i"] for kind, output in sequence(fp, job_id)[:-1]] == list(range(chunks))
    assert sequence(fp, job_id)[-1][0] == "final"


@KINDS
def test_progress_updates_coalesce_while_full_and_keep_their_place(
    fp: FakePlatform, tmp_path: Path, kind: str
) -> None:
    chunks = MAX_ITEMS + 36

    def after(job: Dict[str, Any], i: int) -> None:
        for j in range(3):
            progress_update(job, [i, j])

    fp.delay("job-stream", 0.005)
    job_id = fp.add_job({})
    handler = generator_handler(kind, chunks, lambda i: i, after)
    with running_worker(fp, handler, tmp_path):
        assert fp.wait_results(1, 30)
    seq = sequence(fp, job_id)
    assert seq[-1] == ("final", {"output": []})
    assert [value for k, value in seq if k == "chunk"] == list(range(chunks))
    progress = [tuple(value) for k, value in seq if k == "progress"]
    assert progress == sorted(set(progress))  # in order, none twice
    # Each step's newest update arrives, between its chunk and the next one.
    last_chunk = -1
    for k, value in seq[:-1]:
        if k == "chunk":
            last_chunk = value
        else:
            assert value[0] == last_chunk, seq
    assert {i for i, j in progress if j == 2} == set(range(chunks))
    # The bound held for progress too: while full, older updates were replaced.
    assert len(progress) < 3 * chunks


@KINDS
def test_job_stop_while_the_outbox_is_full_ends_the_job_without_sending_the_queue(
    tmp_path: Path, kind: str
) -> None:
    full = threading.Event()
    stopped_at: List[int] = []

    def after(job: Dict[str, Any], i: int) -> None:
        if i + 1 - len(fp.requests("job-stream")) >= MAX_ITEMS:
            full.set()

    # A job-stop held open answers as soon as the platform stops the job.
    with FakePlatform(stop_longpoll=5) as fp:
        fp.delay("job-stream", 0.2)  # a full outbox would take ~13 s to send
        job_id = fp.add_job({})
        handler = generator_handler(kind, 100 * MAX_ITEMS, lambda i: i, after)
        with running_worker(fp, handler, tmp_path) as run:
            assert full.wait(10)
            stopped_at.append(len(fp.requests("job-stream")))
            fp.stop_job(job_id)
            assert wait_until(lambda: not run.worker.job_ids(), 5), "the stopped job kept its slot"
            follow_up = fp.add_job({"chunks": 0})
            assert fp.wait_results(1, 10)
        posted = len(fp.stream(job_id))
    # The chunk in flight (and one the generator handed over meanwhile) at most.
    assert posted <= stopped_at[0] + 2, (posted, stopped_at)
    assert fp.results(job_id, include_rejected=True) == []  # PROTOCOL 9: no result
    assert fp.results(follow_up)
