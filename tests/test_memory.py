"""A large output is freed as soon as its result has left, not at the next GC.

The engine's run, its job and the job's outbox refer to one another; if the
outbox kept the result and its callback after delivery, each large output
(a base64 image) would live until a cycle collection, and a worker returning
20 MB strings would grow by that much per job in between. The cyclic
collector is switched off here, so only reference counting can free them.
"""

import gc
import tracemalloc
from typing import Any, Dict

import pytest

try:
    from tests.fakeplatform import FakePlatform
    from tests.helpers import running_worker
except ImportError:  # tests/ run as a plain directory on sys.path
    from fakeplatform import FakePlatform  # type: ignore[no-redef]
    from helpers import running_worker  # type: ignore[no-redef]

pytestmark = pytest.mark.timeout(60)

SIZE = 4 * 1024 * 1024
JOBS = 8


def test_large_outputs_are_freed_without_the_cycle_collector(
    fp: FakePlatform, tmp_path: Any
) -> None:
    def handler(job: Dict[str, Any]) -> str:
        return "x" * SIZE

    fp.add_jobs([{"n": i} for i in range(JOBS)])
    with running_worker(fp, handler, tmp_path, concurrency=1):
        gc.collect()
        gc.disable()
        tracemalloc.start(40)
        try:
            assert fp.wait_results(JOBS, 30)
            snapshot = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
            gc.enable()
    # The fake platform keeps every body it received: leave its side out.
    ours = snapshot.filter_traces([tracemalloc.Filter(False, "*fakeplatform.py", all_frames=True)])
    held = sum(stat.size for stat in ours.statistics("filename"))
    # Every output and its encoded body were allocated while tracing. What may
    # be left is the last job's pair (a pool thread's locals until its next
    # job): about 2 x SIZE, never the 2 x SIZE x JOBS that kept cycles held.
    assert held < 3 * SIZE, f"{held / 1e6:.1f} MB still held after {JOBS} jobs"
