"""Unit tests of runner.py with a hand-written Channel: the one place a handler is called.

Covers the four handler kinds, streaming (PROTOCOL §5), errors as data
(PROTOCOL §4), refresh_worker (§10), current_job, the debugger flag and
cancellation.
"""

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

import wavespeed.serverless as serverless
from wavespeed.serverless.config import Config
from wavespeed.serverless.errors import JobCancelled
from wavespeed.serverless.handler import ThreadLoops
from wavespeed.serverless.job import Job, JobResult, current_job, encode
from wavespeed.serverless.runner import Runner

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0  # generous bound for every cross-thread wait


class RecordingChannel:
    """The smallest Channel: records chunks and progress; may cancel after N chunks."""

    def __init__(self, cancel_after: Optional[int] = None) -> None:
        self.chunks: List[Tuple[Any, bytes]] = []
        self.progress: List[Any] = []
        self.cancel_after = cancel_after

    def send_chunk(self, job: Job, value: Any, payload: bytes) -> None:
        self.chunks.append((value, payload))
        if self.cancel_after is not None and len(self.chunks) >= self.cancel_after:
            job.cancel()

    def send_progress(self, job: Job, data: Any) -> None:
        self.progress.append(data)

    @property
    def values(self) -> List[Any]:
        return [value for value, _ in self.chunks]


@pytest.fixture
def loops() -> Iterator[ThreadLoops]:
    owner = ThreadLoops()
    yield owner
    owner.close_all()


def run(
    handler: Callable[..., Any],
    loops: ThreadLoops,
    job_input: Any = None,
    channel: Optional[RecordingChannel] = None,
    **config: Any,
) -> Tuple[JobResult, RecordingChannel]:
    channel = channel or RecordingChannel()
    settings = Config(handler=handler, worker_id="w-1", hostname="host-1", **config)
    job = Job({"id": "job-1", "input": job_input}, channel)
    result = Runner(settings, loops).run(job)
    return result, channel


def error_details(result: JobResult) -> Dict[str, Any]:
    details = json.loads(result.body["error"])
    assert isinstance(details, dict)
    return details


def canon(body: Dict[str, Any]) -> Dict[str, Any]:
    """A body with the traceback dropped, so sync and async errors compare equal."""
    out = dict(body)
    if isinstance(out.get("error"), str) and out["error"].startswith("{"):
        details = json.loads(out["error"])
        details.pop("error_traceback", None)
        out["error"] = details
    return out


def check_payload(result: JobResult) -> None:
    assert json.loads(result.payload) == result.body
    assert result.payload == encode(result.body)


# -- the four kinds -----------------------------------------------------------


def outcome(job: Job) -> Any:
    """Shared handler logic: returns or raises by the job input."""
    what = job["input"]
    if what == "raise":
        raise ValueError("bad input")
    if what == "bytes":
        return {"data": b"\x00"}
    return what


def as_sync(job: Job) -> Any:
    return outcome(job)


async def as_async(job: Job) -> Any:
    await asyncio.sleep(0)
    return outcome(job)


def chunks_for(job: Job) -> List[Any]:
    return list(job["input"]["items"])


def as_gen(job: Job) -> Iterator[Any]:
    for item in chunks_for(job):
        if item == "raise":
            raise RuntimeError("generator broke")
        yield item


async def as_agen(job: Job) -> Any:
    for item in chunks_for(job):
        await asyncio.sleep(0)
        if item == "raise":
            raise RuntimeError("generator broke")
        yield item


RETURN_CASES = [
    None,
    {"a": 1},
    {"output": 1},
    {},
    {"error": "x"},
    {"error": "x", "b": 2},
    {"error": ["a", "b"]},
    {"refresh_worker": True, "a": 1},
    [1, 2, 3],
    "text",
    7,
    True,
    "raise",
    "bytes",
]


@pytest.mark.parametrize("value", RETURN_CASES)
def test_sync_and_async_give_identical_bodies(value: Any, loops: ThreadLoops) -> None:
    sync_result, _ = run(as_sync, loops, value)
    async_result, _ = run(as_async, loops, value)
    assert canon(sync_result.body) == canon(async_result.body)
    for result in (sync_result, async_result):
        assert (result.failed, result.refresh, result.is_stream) == (
            sync_result.failed,
            sync_result.refresh,
            False,
        )
        check_payload(result)


STREAM_CASES = [
    [1, 2, 3],
    [],
    [{"a": 1}, "two", [3]],
    [1, {"error": "stop here"}, 3],
    [1, 2, "raise", 4],
    [{"refresh_worker": True, "x": 1}, 2],
    ["ok", b"bytes"],
]


@pytest.mark.parametrize("aggregate", [False, True], ids=["plain", "aggregate"])
@pytest.mark.parametrize("items", STREAM_CASES)
def test_sync_and_async_generators_identical(
    items: List[Any], aggregate: bool, loops: ThreadLoops
) -> None:
    config = {"return_aggregate_stream": aggregate}
    gen_result, gen_channel = run(as_gen, loops, {"items": items}, **config)
    agen_result, agen_channel = run(as_agen, loops, {"items": items}, **config)
    assert gen_channel.chunks == agen_channel.chunks
    assert canon(gen_result.body) == canon(agen_result.body)
    assert (gen_result.failed, gen_result.refresh) == (agen_result.failed, agen_result.refresh)
    assert gen_result.is_stream and agen_result.is_stream
    check_payload(gen_result)
    check_payload(agen_result)


@pytest.mark.parametrize("handler", [as_sync, as_async, as_gen, as_agen])
def test_all_four_kinds_agree_with_aggregate(handler: Callable[..., Any], loops: ThreadLoops) -> None:
    # A list returned, or the same items yielded with return_aggregate_stream.
    job_input = {"items": [1, "two", {"three": 3}]}

    def returning(job: Job) -> Any:
        return handler(Job({"id": job.id, "input": job["input"]["items"]}))

    target = handler if handler in (as_gen, as_agen) else returning
    result, _ = run(target, loops, job_input, return_aggregate_stream=True)
    assert result.body == {"output": [1, "two", {"three": 3}]}
    assert not result.failed


def test_wrapper_returning_coroutine_is_awaited(loops: ThreadLoops) -> None:
    def wrapper(job: Job) -> Any:  # e.g. a decorator that drops the async
        return as_async(job)

    result, _ = run(wrapper, loops, {"a": 1})
    assert result.body == {"output": {"a": 1}}


def test_async_handlers_reuse_the_threads_loop(loops: ThreadLoops) -> None:
    seen = []

    async def handler(job: Job) -> Any:
        seen.append(asyncio.get_running_loop())
        return None

    run(handler, loops)
    run(handler, loops)
    assert seen[0] is seen[1]


# -- streaming ------------------------------------------------------------------


@pytest.mark.parametrize("handler", [as_gen, as_agen], ids=["gen", "agen"])
def test_streaming_order_and_payloads(handler: Callable[..., Any], loops: ThreadLoops) -> None:
    items = list(range(50)) + ["héllo", {"k": [1, 2]}]
    result, channel = run(handler, loops, {"items": items})
    assert channel.values == items
    assert [payload for _, payload in channel.chunks] == [encode({"output": i}) for i in items]
    assert result.body == {"output": []}
    assert result.is_stream and not result.failed


@pytest.mark.parametrize("handler", [as_gen, as_agen], ids=["gen", "agen"])
def test_return_aggregate_stream(handler: Callable[..., Any], loops: ThreadLoops) -> None:
    result, channel = run(handler, loops, {"items": ["a", "b"]}, return_aggregate_stream=True)
    assert channel.values == ["a", "b"]
    assert result.body == {"output": ["a", "b"]}


@pytest.mark.parametrize("handler", [as_gen, as_agen], ids=["gen", "agen"])
def test_error_dict_mid_stream(handler: Callable[..., Any], loops: ThreadLoops) -> None:
    items = [1, 2, {"error": "model exploded"}, 3]
    result, channel = run(handler, loops, {"items": items})
    assert channel.values == [1, 2]  # the error is not streamed, 3 never comes
    assert result.body == {"error": "model exploded"}
    assert result.failed and result.is_stream


def test_error_dict_mid_stream_keeps_aggregate(loops: ThreadLoops) -> None:
    items = [1, {"error": "x"}]
    result, _ = run(as_gen, loops, {"items": items}, return_aggregate_stream=True)
    assert result.body == {"error": "x", "output": [1]}


@pytest.mark.parametrize("handler", [as_gen, as_agen], ids=["gen", "agen"])
def test_generator_raising_midway(handler: Callable[..., Any], loops: ThreadLoops) -> None:
    result, channel = run(handler, loops, {"items": ["a", "b", "raise", "c"]})
    assert channel.values == ["a", "b"]
    assert result.failed and result.is_stream
    details = error_details(result)
    assert details["error_type"] == "<class 'RuntimeError'>"  # runpod's str(type(exc))
    assert details["error_message"] == "generator broke"
    assert "output" not in result.body


def test_generator_raising_keeps_aggregate(loops: ThreadLoops) -> None:
    result, _ = run(as_gen, loops, {"items": ["a", "raise"]}, return_aggregate_stream=True)
    assert result.body["output"] == ["a"]
    assert error_details(result)["error_type"] == "<class 'RuntimeError'>"


def test_unencodable_chunk_fails_the_job(loops: ThreadLoops) -> None:
    result, channel = run(as_gen, loops, {"items": ["ok", {"blob": b"\x00"}, "never"]})
    assert channel.values == ["ok"]
    assert result.failed
    assert "bytes" in error_details(result)["error_message"]


# -- errors as data ---------------------------------------------------------------


@pytest.mark.parametrize(
    "exc, type_name",
    [
        (ValueError("bad input"), "ValueError"),
        (SystemExit(3), "SystemExit"),
        (KeyboardInterrupt("stop"), "KeyboardInterrupt"),
    ],
    ids=["exception", "systemexit", "keyboardinterrupt"],
)
@pytest.mark.parametrize("kind", ["sync", "async", "gen"])
def test_handler_raising_is_an_error_result(
    exc: BaseException, type_name: str, kind: str, loops: ThreadLoops
) -> None:
    def sync(job: Job) -> Any:
        raise exc

    async def coro(job: Job) -> Any:
        raise exc

    def gen(job: Job) -> Iterator[Any]:
        raise exc
        yield  # pragma: no cover

    handler = {"sync": sync, "async": coro, "gen": gen}[kind]
    result, _ = run(handler, loops)
    assert result.failed and not result.cancelled
    assert set(result.body) == {"error"}
    details = error_details(result)
    assert details["error_type"] == str(type(exc))  # runpod's format on RunPod
    assert details["error_message"] == str(exc)
    assert type_name in details["error_traceback"]
    assert (details["hostname"], details["worker_id"]) == ("host-1", "w-1")
    check_payload(result)
    # the runner (and its thread's loop) still work afterwards
    again, _ = run(as_async, loops, {"ok": True})
    assert again.body == {"output": {"ok": True}}


@pytest.mark.parametrize(
    "value, type_name",
    [
        (b"raw", "bytes"),
        ({"tags": {1, 2}}, "set"),
    ],
    ids=["bytes", "set"],
)
def test_non_json_output_is_a_failed_result(value: Any, type_name: str, loops: ThreadLoops) -> None:
    result, _ = run(lambda job: value, loops)
    assert result.failed
    details = error_details(result)
    assert type_name in details["error_message"]
    assert "JSON" in details["error_message"]
    assert details["error_type"].endswith("OutputNotSerializable'>")
    check_payload(result)


def test_returned_error_is_failed(loops: ThreadLoops) -> None:
    result, _ = run(lambda job: {"error": "nope"}, loops)
    assert result.failed and result.body == {"error": "nope"}


def test_users_returned_dict_not_mutated(loops: ThreadLoops) -> None:
    value = {"refresh_worker": True, "error": "x", "data": [1]}
    run(lambda job: value, loops)
    assert value == {"refresh_worker": True, "error": "x", "data": [1]}


# -- refresh_worker -----------------------------------------------------------------


def test_refresh_worker_in_return(loops: ThreadLoops) -> None:
    result, _ = run(lambda job: {"refresh_worker": True, "a": 1}, loops)
    assert result.refresh
    assert result.body == {"output": {"a": 1}, "stopPod": True}


def test_refresh_worker_false_in_return(loops: ThreadLoops) -> None:
    result, _ = run(lambda job: {"refresh_worker": False, "a": 1}, loops)
    assert not result.refresh and result.body == {"output": {"a": 1}}


@pytest.mark.parametrize("handler", [as_gen, as_agen], ids=["gen", "agen"])
def test_refresh_worker_in_yielded_dict(handler: Callable[..., Any], loops: ThreadLoops) -> None:
    items = [1, {"refresh_worker": True, "x": 2}, 3]
    result, channel = run(handler, loops, {"items": items})
    assert channel.values == [1, {"x": 2}, 3]  # the key is not streamed
    assert result.refresh
    assert result.body == {"output": [], "stopPod": True}


def test_refresh_worker_yielded_then_raise_keeps_stop_pod(loops: ThreadLoops) -> None:
    result, _ = run(as_gen, loops, {"items": [{"refresh_worker": True}, "raise"]})
    assert result.failed
    assert result.refresh and result.body.get("stopPod") is True


@pytest.mark.parametrize(
    "handler, job_input",
    [
        (as_sync, {"a": 1}),
        (as_sync, "raise"),
        (as_sync, {"error": "x"}),
        (as_sync, "bytes"),
        (as_async, {"a": 1}),
        (as_gen, {"items": [1]}),
        (as_gen, {"items": [1, "raise"]}),
        (as_agen, {"items": [1, {"error": "y"}]}),
    ],
)
def test_refresh_worker_in_config_stops_pod_always(
    handler: Callable[..., Any], job_input: Any, loops: ThreadLoops
) -> None:
    result, _ = run(handler, loops, job_input, refresh_worker=True)
    assert result.refresh
    assert result.body["stopPod"] is True
    check_payload(result)


# -- current_job, progress, debugger -------------------------------------------------


def test_current_job_is_set_for_every_kind(loops: ThreadLoops) -> None:
    seen: List[Any] = []

    def sync(job: Job) -> Any:
        seen.append((current_job.get(), job))

    async def coro(job: Job) -> Any:
        seen.append((current_job.get(), job))

    def gen(job: Job) -> Iterator[Any]:
        seen.append((current_job.get(), job))
        yield 1
        seen.append((current_job.get(), job))

    async def agen(job: Job) -> Any:
        seen.append((current_job.get(), job))
        yield 1
        seen.append((current_job.get(), job))

    for handler in (sync, coro, gen, agen):
        run(handler, loops)
    assert len(seen) == 6
    assert all(current is job for current, job in seen)
    assert current_job.get() is None  # reset after each run


def test_current_job_isolated_between_threads(loops: ThreadLoops) -> None:
    barrier = threading.Barrier(4, timeout=WAIT)

    def handler(job: Job) -> Any:
        barrier.wait()  # all four handlers are inside at once
        return current_job.get().id  # type: ignore[union-attr]

    settings = Config(handler=handler)
    runner = Runner(settings, loops)
    jobs = [Job({"id": f"job-{i}", "input": None}, RecordingChannel()) for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(runner.run, jobs))
    assert [r.body["output"] for r in results] == [f"job-{i}" for i in range(4)]


def test_progress_update_reaches_the_channel(loops: ThreadLoops) -> None:
    def handler(job: Job) -> Any:
        serverless.progress_update(job, {"pct": 10})
        serverless.progress_update(dict(job), {"pct": 20})  # a plain copy: current job is used
        worker = threading.Thread(target=serverless.progress_update, args=(job, {"pct": 30}))
        worker.start()
        worker.join(WAIT)
        return "done"

    result, channel = run(handler, loops)
    assert channel.progress == [{"pct": 10}, {"pct": 20}, {"pct": 30}]
    assert result.body == {"output": "done"}


def test_debugger_adds_timings(loops: ThreadLoops) -> None:
    ready = threading.Event()

    def handler(job: Job) -> Any:
        ready.wait(0.05)  # a measurable handler time, nothing to wait for
        return {"a": 1}

    result, _ = run(handler, loops, debugger=True)
    check_payload(result)
    output = dict(result.body["output"])
    timings = output.pop("rp_debugger")  # where runpod puts it
    assert output == {"a": 1}
    assert timings["handler_seconds"] >= 0.04
    plain, _ = run(handler, loops)
    assert plain.body == {"output": {"a": 1}}


def test_debugger_on_error_result(loops: ThreadLoops) -> None:
    result, _ = run(as_sync, loops, "raise", debugger=True)
    assert result.failed and "rp_debugger" in result.body and "error" in result.body


# -- cancellation --------------------------------------------------------------------


def test_job_cancelled_exception(loops: ThreadLoops) -> None:
    def handler(job: Job) -> Any:
        raise JobCancelled(job.id)

    result, _ = run(handler, loops)
    assert result.cancelled and result.payload == b""


def test_cancelled_flag_turns_any_error_into_cancelled(loops: ThreadLoops) -> None:
    def handler(job: Job) -> Any:
        job.cancelled.set()
        raise RuntimeError("interrupted by the stop")

    result, _ = run(handler, loops)
    assert result.cancelled


def test_cancelled_result_has_no_debugger(loops: ThreadLoops) -> None:
    def handler(job: Job) -> Any:
        raise JobCancelled(job.id)

    result, _ = run(handler, loops, debugger=True)
    assert result.cancelled and result.body == {}


@pytest.mark.parametrize("handler", [as_gen, as_agen], ids=["gen", "agen"])
def test_cancel_during_stream(handler: Callable[..., Any], loops: ThreadLoops) -> None:
    channel = RecordingChannel(cancel_after=2)
    result, channel = run(handler, loops, {"items": list(range(10))}, channel=channel)
    assert result.cancelled
    assert channel.values == [0, 1]


def test_cancel_from_another_thread_stops_async_handler(loops: ThreadLoops) -> None:
    started = threading.Event()

    async def handler(job: Job) -> Any:
        started.set()
        await asyncio.sleep(WAIT * 3)  # only a cancel ends this in time
        return "slept"

    settings = Config(handler=handler)
    job = Job({"id": "job-1", "input": None}, RecordingChannel())
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(Runner(settings, loops).run, job)
        assert started.wait(WAIT)
        job.cancel()
        result = future.result(timeout=WAIT)
    assert result.cancelled
