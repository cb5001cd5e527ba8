"""Unit tests of logs.py: runpod text lines, JSON lines, job ids, serverless.log, secrets."""

import io
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterator, List

import pytest

import wavespeed.serverless as serverless
from wavespeed.serverless.config import Config
from wavespeed.serverless.handler import ThreadLoops
from wavespeed.serverless.job import Job
from wavespeed.serverless.logs import logger, setup_logging
from wavespeed.serverless.runner import Runner

pytestmark = pytest.mark.timeout(60)

SECRET = "rpa_SECRET0123456789"


class Capture:
    """Installs our logging on a buffer and gives back the lines."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()

    def setup(self, **config: Any) -> None:
        settings = Config(handler=lambda job: None, **config)
        setup_logging(settings, self.buffer)

    def lines(self) -> List[str]:
        return self.buffer.getvalue().splitlines()

    def records(self) -> List[Dict[str, Any]]:
        return [json.loads(line) for line in self.lines()]


@pytest.fixture
def capture() -> Iterator[Capture]:
    log = logging.getLogger("wavespeed")
    saved = (list(log.handlers), log.level, log.propagate, log.disabled)
    yield Capture()
    log.handlers[:] = saved[0]
    log.setLevel(saved[1])
    log.propagate = saved[2]
    log.disabled = saved[3]


def run_job(handler: Callable[[Job], Any], job_id: str = "job-7") -> Any:
    loops = ThreadLoops()
    try:
        return Runner(Config(handler=handler), loops).run(Job({"id": job_id, "input": None}))
    finally:
        loops.close_all()


# -- text lines -------------------------------------------------------------------


def test_text_line_without_job(capture: Capture) -> None:
    capture.setup()
    logger("worker").info("worker started")
    assert capture.lines() == ["INFO    | worker started"]


def test_text_line_with_job_id(capture: Capture) -> None:
    capture.setup()
    serverless.log.info("loading model", "job-1")
    assert capture.lines() == ["INFO    | job-1 | loading model"]


@pytest.mark.parametrize(
    "call, expected",
    [
        (lambda: serverless.log.info("m", "job-1"), "INFO    | job-1 | m"),
        (lambda: serverless.log.info("m", job_id="job-2"), "INFO    | job-2 | m"),
        (lambda: serverless.log.info("m", request_id="req-3"), "INFO    | req-3 | m"),
        (lambda: serverless.log.warn("careful", "j"), "WARN    | j | careful"),
        (lambda: serverless.log.warning("careful", "j"), "WARN    | j | careful"),
        (lambda: serverless.log.error("broken", "j"), "ERROR   | j | broken"),
        (lambda: serverless.log.debug("detail", "j"), "DEBUG   | j | detail"),
        (lambda: serverless.log.trace("tiny", "j"), "TRACE   | j | tiny"),
        (lambda: serverless.log.info({"not": "a string"}), "INFO    | {'not': 'a string'}"),
    ],
)
def test_serverless_log_surface(capture: Capture, call: Callable[[], None], expected: str) -> None:
    capture.setup(log_level=5)  # TRACE: everything shows
    call()
    assert capture.lines() == [expected]


def test_percent_in_message_is_literal(capture: Capture) -> None:
    capture.setup()
    serverless.log.info("100% done %s %d")
    assert capture.lines() == ["INFO    | 100% done %s %d"]


def test_level_filtering(capture: Capture) -> None:
    capture.setup(log_level=logging.WARNING)
    serverless.log.debug("d")
    serverless.log.info("i")
    serverless.log.warn("w")
    serverless.log.error("e")
    assert capture.lines() == ["WARN    | w", "ERROR   | e"]


def test_default_level_is_info(capture: Capture) -> None:
    capture.setup()
    serverless.log.debug("hidden")
    serverless.log.trace("hidden too")
    serverless.log.info("shown")
    assert capture.lines() == ["INFO    | shown"]


def test_setup_twice_does_not_duplicate_lines(capture: Capture) -> None:
    capture.setup()
    capture.setup()
    serverless.log.info("once")
    assert capture.lines() == ["INFO    | once"]


def test_exception_traceback_is_included(capture: Capture) -> None:
    capture.setup()
    try:
        raise ValueError("kaput")
    except ValueError:
        logger("worker").exception("handler failed")
    text = capture.buffer.getvalue()
    assert text.startswith("ERROR   | handler failed\n")
    assert "ValueError: kaput" in text


# -- JSON lines ---------------------------------------------------------------------


def test_json_lines_when_endpoint_set(capture: Capture) -> None:
    capture.setup(json_logs=True)
    serverless.log.info("hello", "job-1")
    serverless.log.warn("no job here")
    assert capture.records() == [
        {"requestId": "job-1", "message": "hello", "level": "INFO"},
        {"requestId": None, "message": "no job here", "level": "WARN"},
    ]


def test_json_lines_selected_by_endpoint_id(capture: Capture) -> None:
    settings = Config.from_env({"RUNPOD_ENDPOINT_ID": "ep"}, [], {"handler": print})
    setup_logging(settings, capture.buffer)
    serverless.log.info("héllo \"quoted\"\nsecond line")
    lines = capture.lines()
    assert len(lines) == 1  # one line per record, even with a newline in the message
    assert json.loads(lines[0])["message"] == "héllo \"quoted\"\nsecond line"


def test_json_line_from_handler(capture: Capture) -> None:
    capture.setup(json_logs=True)
    run_job(lambda job: serverless.log.info("inside"), "job-9")
    assert {"requestId": "job-9", "message": "inside", "level": "INFO"} in capture.records()


# -- the current job -------------------------------------------------------------------


def test_job_id_from_current_job(capture: Capture) -> None:
    capture.setup()

    def handler(job: Job) -> None:
        serverless.log.info("from serverless.log")
        logging.getLogger("wavespeed.custom").info("from a wavespeed logger")
        serverless.log.info("explicit wins", "other-job")

    run_job(handler, "job-7")
    lines = capture.lines()
    assert "INFO    | job-7 | from serverless.log" in lines
    assert "INFO    | job-7 | from a wavespeed logger" in lines
    assert "INFO    | other-job | explicit wins" in lines
    serverless.log.info("after the job")
    assert capture.lines()[-1] == "INFO    | after the job"


def test_job_ids_in_concurrent_handler_threads(capture: Capture) -> None:
    capture.setup()
    barrier = threading.Barrier(4, timeout=10)

    def handler(job: Job) -> None:
        barrier.wait()  # all four are running at once
        for i in range(5):
            serverless.log.info(f"line {i} of {job['id']}")

    loops = ThreadLoops()
    runner = Runner(Config(handler=handler), loops)
    jobs = [Job({"id": f"job-{n}", "input": None}) for n in range(4)]
    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(runner.run, jobs))
    finally:
        loops.close_all()
    lines = [line for line in capture.lines() if "line " in line]
    assert len(lines) == 20
    for line in lines:
        _, job_id, message = (part.strip() for part in line.split("|"))
        assert message.endswith(f"of {job_id}"), line


def test_job_id_in_async_handler(capture: Capture) -> None:
    capture.setup()

    async def handler(job: Job) -> None:
        serverless.log.info("async inside")

    run_job(handler, "job-async")
    assert "INFO    | job-async | async inside" in capture.lines()


# -- secrets and NOTSET ---------------------------------------------------------------------


@pytest.mark.parametrize("json_logs", [False, True], ids=["text", "json"])
def test_api_key_is_masked(capture: Capture, json_logs: bool) -> None:
    capture.setup(api_key=SECRET, json_logs=json_logs)
    serverless.log.info(f"calling with Authorization: {SECRET}", "job-1")
    logger("transport").warning("url was http://x/?key=%s", SECRET)
    try:
        raise RuntimeError(f"auth failed for {SECRET}")
    except RuntimeError:
        logger("worker").exception("boom")
    text = capture.buffer.getvalue()
    assert SECRET not in text
    assert text.count("***") >= 3


def test_runner_logs_never_show_the_key(capture: Capture) -> None:
    capture.setup(api_key=SECRET)

    def handler(job: Job) -> None:
        raise ValueError(f"token {SECRET} rejected")

    loops = ThreadLoops()
    try:
        Runner(Config(handler=handler, api_key=SECRET), loops).run(Job({"id": "j", "input": None}))
    finally:
        loops.close_all()
    text = capture.buffer.getvalue()
    assert "rejected" in text and SECRET not in text


def test_notset_silences_the_wavespeed_logger(capture: Capture) -> None:
    capture.setup(log_level=logging.NOTSET)
    logger().error("should not appear")
    assert capture.lines() == []


def test_notset_silences_everything(capture: Capture) -> None:
    capture.setup(log_level=logging.NOTSET)
    serverless.log.info("user line")
    serverless.log.error("user error")
    logger("runner").error("runner line")
    run_job(lambda job: 1 / 0)  # the runner logs the handler error
    assert capture.lines() == []


def test_setup_after_notset_logs_again(capture: Capture) -> None:
    capture.setup(log_level=logging.NOTSET)
    capture.setup(log_level=logging.INFO)
    logger().info("back")
    assert capture.lines() == ["INFO    | back"]
