"""Unit tests of logs.py: runpod's text lines and JSON lines, job ids, the two
default levels, the 4,096-character cut, secrets masked before encoding,
stdout/stderr, and a handler that can never raise into the SDK.

The exact strings come from runpod 1.12.0's ``rp_logger.RunPodLogger.log``:
``f"{level.ljust(7)}| {message}"``, ``{job_id} | `` before the message when
there is a job id, ``json.dumps({"requestId", "message", "level"})`` when an
endpoint id is set, and the middle cut with ``...TRUNCATED n CHARACTERS...``.
"""

import io
import json
import logging
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterator, List

import pytest

import wavespeed.serverless as serverless
from wavespeed.serverless.config import Config
from wavespeed.serverless.handler import ThreadLoops
from wavespeed.serverless.job import Job
from wavespeed.serverless.logs import HANDLER_LOGGER_NAME, LineHandler, logger, setup_logging
from wavespeed.serverless.masking import REGISTRY
from wavespeed.serverless.runner import Runner

pytestmark = pytest.mark.timeout(60)

SECRET = "rpa_SECRET0123456789"


class Capture:
    """Installs our logging on a buffer and gives back the lines."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()

    def setup(self, **config: Any) -> None:
        if "log_level" in config:  # as Config.from_env does for a level setting: both levels
            config.setdefault("handler_log_level", config["log_level"])
        settings = Config(handler=lambda job: None, **config)
        setup_logging(settings, self.buffer)

    def lines(self) -> List[str]:
        return self.buffer.getvalue().splitlines()

    def records(self) -> List[Dict[str, Any]]:
        return [json.loads(line) for line in self.lines()]


@pytest.fixture
def capture() -> Iterator[Capture]:
    log = logging.getLogger("wavespeed")
    handler_log = logging.getLogger(HANDLER_LOGGER_NAME)
    saved = (list(log.handlers), log.level, log.propagate, log.disabled, handler_log.level, log.__dict__.copy())
    yield Capture()
    log.handlers[:] = saved[0]
    log.setLevel(saved[1])
    log.propagate = saved[2]
    log.disabled = saved[3]
    handler_log.setLevel(saved[4])
    log.__dict__.pop("_wavespeed_user_level", None)
    if "_wavespeed_user_level" in saved[5]:
        log.__dict__["_wavespeed_user_level"] = saved[5]["_wavespeed_user_level"]
    REGISTRY.set_api_key(None)


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
    assert capture.lines() == ["INFO   | worker started"]


def test_text_line_with_job_id(capture: Capture) -> None:
    capture.setup()
    serverless.log.info("loading model", "job-1")
    assert capture.lines() == ["INFO   | job-1 | loading model"]


@pytest.mark.parametrize(
    "call, expected",
    [
        (lambda: serverless.log.info("m", "job-1"), "INFO   | job-1 | m"),
        (lambda: serverless.log.info("m", job_id="job-2"), "INFO   | job-2 | m"),
        (lambda: serverless.log.info("m", request_id="req-3"), "INFO   | req-3 | m"),
        (lambda: serverless.log.warn("careful", "j"), "WARN   | j | careful"),
        (lambda: serverless.log.warning("careful", "j"), "WARN   | j | careful"),
        (lambda: serverless.log.error("broken", "j"), "ERROR  | j | broken"),
        (lambda: serverless.log.debug("detail", "j"), "DEBUG  | j | detail"),
        (lambda: serverless.log.trace("tiny", "j"), "TRACE  | j | tiny"),
        (lambda: serverless.log.info({"not": "a string"}), "INFO   | {'not': 'a string'}"),
    ],
)
def test_serverless_log_surface(capture: Capture, call: Callable[[], None], expected: str) -> None:
    capture.setup(log_level=5)  # TRACE: everything shows
    call()
    assert capture.lines() == [expected]


def test_percent_in_message_is_literal(capture: Capture) -> None:
    capture.setup()
    serverless.log.info("100% done %s %d")
    assert capture.lines() == ["INFO   | 100% done %s %d"]


def test_level_filtering(capture: Capture) -> None:
    capture.setup(log_level=logging.WARNING)
    serverless.log.debug("d")
    serverless.log.info("i")
    serverless.log.warn("w")
    serverless.log.error("e")
    assert capture.lines() == ["WARN   | w", "ERROR  | e"]


def test_default_levels_debug_for_the_handler_info_for_the_sdk(capture: Capture) -> None:
    capture.setup()
    serverless.log.debug("a handler's debug line")  # runpod's default level is DEBUG
    serverless.log.trace("hidden")
    logger("worker").debug("the SDK's own debug line is hidden")
    logger("worker").info("the SDK's info line")
    assert capture.lines() == ["DEBUG  | a handler's debug line", "INFO   | the SDK's info line"]


@pytest.mark.parametrize("source", ["env", "flag"])
def test_log_level_setting_sets_both(capture: Capture, source: str) -> None:
    env = {"RUNPOD_LOG_LEVEL": "TRACE"} if source == "env" else {}
    argv = ["--rp_log_level", "TRACE"] if source == "flag" else []
    setup_logging(Config.from_env(env, argv, {"handler": print}), capture.buffer)
    serverless.log.trace("handler trace")
    logger("worker").debug("sdk debug")
    setup_logging(Config.from_env({"RUNPOD_LOG_LEVEL": "WARN"}, [], {"handler": print}), capture.buffer)
    serverless.log.info("hidden handler info")
    logger("worker").info("hidden sdk info")
    serverless.log.warn("shown")
    assert capture.lines() == ["TRACE  | handler trace", "DEBUG  | sdk debug", "WARN   | shown"]


def test_set_level_before_start_is_kept_by_start(capture: Capture) -> None:
    capture.setup()
    serverless.log.set_level("ERROR")
    capture.setup()  # start() without a level setting keeps the user's choice
    serverless.log.warn("hidden")
    serverless.log.error("shown")
    capture.setup(handler_log_level=logging.WARNING, log_level=logging.WARNING)  # a setting wins
    serverless.log.warn("shown too")
    assert capture.lines() == ["ERROR  | shown", "WARN   | shown too"]


def test_setup_twice_does_not_duplicate_lines(capture: Capture) -> None:
    capture.setup()
    capture.setup()
    serverless.log.info("once")
    assert capture.lines() == ["INFO   | once"]


def test_exception_traceback_is_included(capture: Capture) -> None:
    capture.setup()
    try:
        raise ValueError("kaput")
    except ValueError:
        logger("worker").exception("handler failed")
    text = capture.buffer.getvalue()
    assert text.startswith("ERROR  | handler failed\n")
    assert "ValueError: kaput" in text


# -- JSON lines ---------------------------------------------------------------------


# -- the 4,096-character cut ---------------------------------------------------------


def test_long_message_is_cut_in_the_middle_as_runpod_cuts_it(capture: Capture) -> None:
    capture.setup()
    message = "A" * 3000 + "B" * 3000
    serverless.log.info(message, "job-1")
    text = capture.buffer.getvalue()
    expected = "A" * 2048 + "\n...TRUNCATED 1904 CHARACTERS...\n" + "B" * 2048
    assert text == f"INFO   | job-1 | {expected}\n"


def test_message_of_exactly_4096_is_kept(capture: Capture) -> None:
    capture.setup(json_logs=True)
    serverless.log.info("x" * 4096)
    assert capture.records()[0]["message"] == "x" * 4096


def test_batch_id_prefix(capture: Capture) -> None:
    capture.setup()
    loops = ThreadLoops()
    try:
        job = Job({"id": "j-1", "input": None, "batchId": "b-9"})
        Runner(Config(handler=lambda job: serverless.log.info("inside")), loops).run(job)
    finally:
        loops.close_all()
    assert "INFO   | j-1 | [batchId=b-9] inside" in capture.lines()


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
    # runpod's json.dumps defaults: ASCII escapes, ", " and ": " separators.
    assert lines[0] == '{"requestId": null, "message": "h\\u00e9llo \\"quoted\\"\\nsecond line", "level": "INFO"}'


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
    assert "INFO   | job-7 | from serverless.log" in lines
    assert "INFO   | job-7 | from a wavespeed logger" in lines
    assert "INFO   | other-job | explicit wins" in lines
    serverless.log.info("after the job")
    assert capture.lines()[-1] == "INFO   | after the job"


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
    assert "INFO   | job-async | async inside" in capture.lines()


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


@pytest.mark.parametrize("secret", ['sk-with-"quote"', "sk-with-back\\slash", "sk-ünïcødé-key"])
def test_json_lines_mask_before_encoding(capture: Capture, secret: str) -> None:
    # Matched against the encoded line, a key holding " or \ (or non-ASCII) escaped the mask.
    capture.setup(api_key=secret, json_logs=True)
    serverless.log.info(f"Authorization: {secret}", "job-1")
    text = capture.buffer.getvalue()
    assert secret not in text and json.dumps(secret)[1:-1] not in text
    assert capture.records() == [{"requestId": "job-1", "message": "Authorization: ***", "level": "INFO"}]


def test_registered_secrets_are_masked(capture: Capture) -> None:
    capture.setup(json_logs=True)
    serverless.log.secret("HF_TOKEN", "hf_abcdefghijklmnop")
    serverless.log.info("downloading with hf_abcdefghijklmnop", "job-1")
    assert capture.records() == [
        {"requestId": None, "message": "HF_TOKEN: h*****************p", "level": "INFO"},
        {"requestId": "job-1", "message": "downloading with ***", "level": "INFO"},
    ]


def test_tip_shows_at_every_level_but_notset(capture: Capture) -> None:
    capture.setup(log_level=logging.ERROR, handler_log_level=logging.ERROR)
    serverless.log.tip("use S3 for big outputs")
    capture.setup(log_level=logging.NOTSET, handler_log_level=logging.NOTSET)
    serverless.log.tip("never shown")
    assert capture.lines() == ["TIP    | use S3 for big outputs"]


def test_notset_silences_the_wavespeed_logger(capture: Capture) -> None:
    capture.setup(log_level=logging.NOTSET)
    logger().error("should not appear")
    assert capture.lines() == []


def test_notset_silences_everything(capture: Capture) -> None:
    capture.setup(log_level=logging.NOTSET, handler_log_level=logging.NOTSET)
    serverless.log.info("user line")
    serverless.log.error("user error")
    logger("runner").error("runner line")
    run_job(lambda job: 1 / 0)  # the runner logs the handler error
    assert capture.lines() == []


def test_setup_after_notset_logs_again(capture: Capture) -> None:
    capture.setup(log_level=logging.NOTSET)
    capture.setup(log_level=logging.INFO)
    logger().info("back")
    assert capture.lines() == ["INFO   | back"]


# -- where lines go, and nothing ever raises -----------------------------------------------


def test_lines_go_to_stdout_in_worker_mode_and_stderr_in_local_test_mode(
    capture: Capture, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging(Config(handler=print, mode="worker"))
    serverless.log.info("worker line")
    setup_logging(Config(handler=print, mode="test"))
    serverless.log.info("local test line")
    out, err = capsys.readouterr()
    assert out == "INFO   | worker line\n"
    assert err == "INFO   | local test line\n"


def test_a_replaced_stdout_is_followed(capture: Capture, monkeypatch: pytest.MonkeyPatch) -> None:
    setup_logging(Config(handler=print, mode="worker"))
    replaced = io.StringIO()
    monkeypatch.setattr(sys, "stdout", replaced)
    serverless.log.info("to the new stdout")
    assert replaced.getvalue() == "INFO   | to the new stdout\n"


class Broken(io.StringIO):
    """A stream whose writes fail like a closed pipe."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


@pytest.mark.parametrize("kind", ["closed", "broken-pipe"])
def test_closed_or_broken_stream_never_raises(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    stream: Any = Broken() if kind == "broken-pipe" else io.StringIO()
    if kind == "closed":
        stream.close()
    handler = LineHandler(stream)
    handler.setFormatter(logging.Formatter())
    # logging.Handler.handleError writes to sys.stderr: closed too, its ValueError would escape.
    closed_stderr = io.StringIO()
    closed_stderr.close()
    monkeypatch.setattr(sys, "stderr", closed_stderr)
    monkeypatch.setattr(logging, "raiseExceptions", True)
    log = logging.Logger("standalone")  # outside the logging tree: only our handler sees it
    log.addHandler(handler)
    log.error("must not raise")
    log.error("a bad format %d", "not a number")
    handler.flush()


def test_closed_sys_stdout_falls_back_to_the_descriptor(capture: Capture, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    import os

    target = tmp_path / "fd.txt"
    handler = LineHandler("stdout")
    handler.setFormatter(logging.Formatter("%(message)s"))
    with open(target, "wb") as sink:
        saved = os.dup(1)
        os.dup2(sink.fileno(), 1)
        try:
            closed = io.StringIO()
            closed.close()
            monkeypatch.setattr(sys, "stdout", closed)
            handler.emit(logging.LogRecord("wavespeed", logging.INFO, __file__, 1, "still written", None, None))
        finally:
            os.dup2(saved, 1)
            os.close(saved)
    assert target.read_text() == "still written\n"
