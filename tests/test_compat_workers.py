"""Every RunPod-style worker under tests/compat/ runs unmodified on wavespeed.

Each worker folder is copied to a temporary directory (so what the worker
writes stays there) and run with ``python -m wavespeed.run handler.py``:

- in local test mode, on its own ``test_input.json``, checking the printed
  result and the exit code;
- in worker mode against the loopback fake platform, checking what the
  platform received, then stopping it with SIGTERM (exit code 0).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

import pytest

try:
    from tests.fakeplatform import FakePlatform
except ImportError:  # tests/ run as a plain directory on sys.path
    from fakeplatform import FakePlatform  # type: ignore[no-redef]

pytestmark = pytest.mark.timeout(60)

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
COMPAT = os.path.join(TESTS, "compat")
WORKERS = sorted(
    name for name in os.listdir(COMPAT) if os.path.isfile(os.path.join(COMPAT, name, "handler.py"))
)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


# -- helpers -------------------------------------------------------------------


def base_env(**extra: str) -> Dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": ROOT,
        "PYTHONUNBUFFERED": "1",
        "HOME": os.environ.get("HOME", "/tmp"),
        "CUDA_VISIBLE_DEVICES": "",  # the same answer on every machine
    }
    env.update(extra)
    return env


def copy_worker(name: str, tmp_path: Any) -> str:
    target = os.path.join(str(tmp_path), name)
    shutil.copytree(os.path.join(COMPAT, name), target)
    return target


def run_local(
    name: str,
    tmp_path: Any,
    args: Sequence[str] = (),
    env: Optional[Mapping[str, str]] = None,
) -> "subprocess.CompletedProcess[str]":
    folder = copy_worker(name, tmp_path)
    return subprocess.run(
        [sys.executable, "-m", "wavespeed.run", "handler.py", *args],
        cwd=folder,
        env=base_env(**dict(env or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=45,
    )


def printed_result(proc: "subprocess.CompletedProcess[str]") -> Any:
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout)


class CompatWorker:
    """A worker folder run by ``python -m wavespeed.run`` in worker mode."""

    def __init__(
        self,
        name: str,
        tmp_path: Any,
        fp: FakePlatform,
        args: Sequence[str] = (),
        separate_stderr: bool = False,
        **env: str,
    ) -> None:
        self.folder = copy_worker(name, tmp_path)
        spool = os.path.join(str(tmp_path), "spool")
        environ = base_env(**fp.env())
        environ.update(WAVESPEED_SPOOL_DIR=spool, WAVESPEED_HEALTH_PORT="0")
        environ.update(env)
        self.log_path = os.path.join(str(tmp_path), f"{name}.log")
        self.err_path = os.path.join(str(tmp_path), f"{name}.err")
        self._log = open(self.log_path, "wb")
        self._err = open(self.err_path, "wb") if separate_stderr else None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wavespeed.run", "handler.py", *args],
            cwd=self.folder,
            env=environ,
            stdout=self._log,
            stderr=self._err if self._err is not None else subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        """stdout (and stderr, unless it was kept apart)."""
        self._log.flush()
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def errors(self) -> str:
        """stderr, when it was kept apart."""
        with open(self.err_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def stop(self, timeout: float = 20.0) -> Optional[int]:
        """SIGTERM, then the exit code (None if it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float) -> Optional[int]:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def __enter__(self) -> "CompatWorker":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait(10)
        self._log.close()
        if self._err is not None:
            self._err.close()


class FileServer:
    """Serves fixed files on 127.0.0.1 for the download worker."""

    def __init__(self, files: Mapping[str, bytes]) -> None:
        content = dict(files)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                body = content.get(self.path.split("?", 1)[0])
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "FileServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def fp() -> Iterator[FakePlatform]:
    with FakePlatform(longpoll=1.0) as platform:
        yield platform


@pytest.fixture
def files() -> Iterator[FileServer]:
    with FileServer({"/images/cat.png": PNG}) as server:
        yield server


def error_of(body: Dict[str, Any]) -> Any:
    """The ``error`` of a result, parsed when it is JSON text."""
    error = body["error"]
    assert isinstance(error, str)
    try:
        return json.loads(error)
    except ValueError:
        return error


def test_there_are_at_least_twelve_workers_each_with_its_input() -> None:
    assert len(WORKERS) >= 12
    for name in WORKERS:
        with open(os.path.join(COMPAT, name, "test_input.json"), encoding="utf-8") as handle:
            assert "input" in json.load(handle), name
        with open(os.path.join(COMPAT, name, "handler.py"), encoding="utf-8") as handle:
            source = handle.read()
        assert "import runpod" in source and "wavespeed" not in source, name


# -- local test mode -----------------------------------------------------------

LOCAL_OUTPUTS: Dict[str, Any] = {
    "hello_world": {"output": "Hello, RunPod!"},
    "validator_schema": {"output": {"image": "image(a cat|256|50|7.0)", "seed": None, "guidance_scale": 7.0}},
    "async_handler": {"output": {"reversed": "olleh", "job_id": "local_test"}},
    "generator_stream": {
        "output": [
            {"token": "the", "index": 0},
            {"token": "quick", "index": 1},
            {"token": "brown", "index": 2},
            {"token": "fox", "index": 3},
        ]
    },
    "async_generator": {"output": []},
    "progress_updates": {"output": {"steps_done": 3}},
    "logger_worker": {"output": {"logged": 3}},
    "refresh_worker": {"output": {"result": 42}, "stopPod": True},
    "error_handling": {"output": {"status": "ok"}},
    # Fitness checks run only in worker mode, as in runpod.
    "fitness_check": {"output": {"checks": {"sync": False, "async": False}, "echo": {"x": 1}}},
    "concurrency_sync": {"output": {"parties": 1, "thread": True}},  # the job engine: a pool thread, as in worker mode
    "debugger_timers": {"output": {"result": "TIMED"}},
    "cleanup_cuda": {"output": {"device": "cpu", "cleaned": True, "input": {"prompt": "x"}}},
    "rp_http_override": {"output": {"sum": 6}},
    "argparse_main": {"output": {"model": "tiny", "prompt": "hi", "argv0": "handler.py"}},
    "job_stop": {"output": {"slept": 0.01}},
}


@pytest.mark.parametrize("name", sorted(LOCAL_OUTPUTS))
def test_local_mode_output(name: str, tmp_path: Any) -> None:
    proc = run_local(name, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert printed_result(proc) == LOCAL_OUTPUTS[name]


def test_every_worker_has_a_local_check() -> None:
    assert set(WORKERS) == set(LOCAL_OUTPUTS) | {"download_upload"}


def test_local_download_upload(tmp_path: Any, files: FileServer) -> None:
    with open(os.path.join(COMPAT, "download_upload", "test_input.json"), encoding="utf-8") as handle:
        test_input = handle.read().replace("__SERVER__", files.url)
    proc = run_local(
        "download_upload",
        tmp_path,
        ["--test_input", test_input],
        {"RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS": "true"},
    )
    assert proc.returncode == 0, proc.stderr
    output = printed_result(proc)["output"]
    assert output["type"] == "png" and output["original_name"] == "cat.png"
    assert output["size"] == len(PNG)
    assert output["extra"][0].endswith(".png") and output["extra"][1] is None
    # No bucket configured: the "upload" is a local copy, as with runpod.
    assert output["image_url"].startswith("simulated_uploaded/")
    folder = os.path.join(str(tmp_path), "download_upload")
    with open(os.path.join(folder, output["image_url"]), "rb") as handle:
        assert handle.read() == PNG[::-1]
    assert not os.path.exists(os.path.join(folder, "output_objects"))  # rp_cleanup.clean


def test_local_download_refused_without_the_switch(tmp_path: Any, files: FileServer) -> None:
    test_input = json.dumps({"input": {"image_url": files.url + "/images/cat.png"}})
    proc = run_local("download_upload", tmp_path, ["--test_input", test_input])
    assert proc.returncode == 1
    error = error_of(printed_result(proc))
    assert "non-public address 127.0.0.1" in error["error_message"]


def test_local_validation_errors_are_runpods(tmp_path: Any) -> None:
    bad = json.dumps({"input": {"width": 100, "guidance_scale": "high", "foo": 1}})
    proc = run_local("validator_schema", tmp_path, ["--test_input", bad])
    assert proc.returncode == 1
    assert error_of(printed_result(proc)) == [
        "Unexpected input. foo is not a valid input option.",
        "prompt is a required input.",
        "width does not meet the constraints.",
        "guidance_scale should be <class 'float'> type, not <class 'str'>.",
    ]


def test_local_flags_reach_the_users_own_parser(tmp_path: Any) -> None:
    proc = run_local("argparse_main", tmp_path, ["--model_name", "big", "--rp_log_level", "ERROR"])
    assert proc.returncode == 0, proc.stderr
    assert printed_result(proc)["output"]["model"] == "big"
    assert "INFO" not in proc.stderr


def test_local_debugger_flag_adds_timing(tmp_path: Any) -> None:
    proc = run_local("debugger_timers", tmp_path, ["--rp_debugger"])
    assert proc.returncode == 0, proc.stderr
    output = printed_result(proc)["output"]
    timings = output.pop("rp_debugger")  # runpod: output["rp_debugger"] when the output is a dict
    assert output == {"result": "TIMED"}
    assert timings["handler_seconds"] > 0
    assert timings["ready_delay_ms"] >= 0
    assert timings["system_info"]["runpod"] == "1.12.0"


def test_local_debugger_timers_reach_the_output(tmp_path: Any) -> None:
    proc = run_local("debugger_timers", tmp_path, ["--rp_debugger"])
    names = [t["name"] for t in printed_result(proc)["output"]["rp_debugger"]["timestamps"]]
    assert names == ["load_inputs", "inference"]


def test_local_logger_lines(tmp_path: Any) -> None:
    proc = run_local("logger_worker", tmp_path)
    assert proc.returncode == 0, proc.stderr
    # runpod's format exactly; on stderr because local test mode's stdout is the result.
    assert "INFO   | Loading model (stand-in)...\n" in proc.stderr  # before start(): not lost
    assert "INFO   | local_test | positional job id\n" in proc.stderr
    assert "WARN   | local_test | keyword job id\n" in proc.stderr
    assert "ERROR  | local_test | keyword request id\n" in proc.stderr
    assert "DEBUG  | local_test | debug line hidden at INFO\n" in proc.stderr  # DEBUG: runpod's default
    quiet = run_local("logger_worker", tmp_path / "quiet", env={"RUNPOD_LOG_LEVEL": "INFO"})
    assert quiet.returncode == 0, quiet.stderr
    assert "debug line" not in quiet.stderr and "INFO   | local_test | positional job id" in quiet.stderr


def test_local_error_modes(tmp_path: Any) -> None:
    raised = run_local("error_handling", tmp_path, ["--test_input", '{"input": {"mode": "raise"}}'])
    assert raised.returncode == 1
    details = error_of(printed_result(raised))
    assert details["error_type"] == "<class 'ValueError'>" and details["error_message"] == "model exploded"
    assert details["runpod_version"] == "1.12.0"


# -- worker mode against the fake platform --------------------------------------


def finals(fp: FakePlatform, job_id: str) -> List[Dict[str, Any]]:
    return fp.results(job_id)


def test_worker_hello_world(tmp_path: Any, fp: FakePlatform) -> None:
    a, b = fp.add_job({"name": "A"}), fp.add_job({})
    with CompatWorker("hello_world", tmp_path, fp) as worker:
        assert fp.wait_results(2, 20), worker.output()
        assert worker.stop() == 0, worker.output()
    assert finals(fp, a) == [{"output": "Hello, A!"}]
    assert finals(fp, b) == [{"output": "Hello, World!"}]
    assert all(r.query.get("isStream") == "false" for r in fp.result_requests(a))


def test_worker_validator(tmp_path: Any, fp: FakePlatform) -> None:
    good = fp.add_job({"prompt": "a dog", "num_inference_steps": 20})
    bad = fp.add_job({"prompt": 3, "seed": 1.5})
    with CompatWorker("validator_schema", tmp_path, fp) as worker:
        assert fp.wait_results(2, 20), worker.output()
        assert worker.stop() == 0, worker.output()
    assert finals(fp, good) == [{"output": {"image": "image(a dog|512|20|7.5)", "seed": None, "guidance_scale": 7.5}}]
    (body,) = finals(fp, bad)
    assert error_of(body) == [
        "prompt should be <class 'str'> type, not <class 'int'>.",
        "seed should be <class 'int'> type, not <class 'float'>.",
    ]


def test_worker_async_handler_takes_a_batch(tmp_path: Any, fp: FakePlatform) -> None:
    ids = fp.add_jobs([{"prompt": f"p{i}"} for i in range(4)])
    with CompatWorker("async_handler", tmp_path, fp) as worker:
        assert fp.wait_results(4, 20), worker.output()
        assert worker.stop() == 0, worker.output()
    for i, job_id in enumerate(ids):
        assert finals(fp, job_id) == [{"output": {"reversed": f"p{i}"[::-1], "job_id": job_id}}]
    batches = fp.requests("job-take-batch")
    assert batches and batches[0].query["batch_size"] == "4"  # concurrency_modifier honoured


def test_worker_generator_streams_and_aggregates(tmp_path: Any, fp: FakePlatform) -> None:
    job = fp.add_job({"prompt": "a b c"})
    with CompatWorker("generator_stream", tmp_path, fp) as worker:
        assert fp.wait_results(1, 20), worker.output()
        assert worker.stop() == 0, worker.output()
    chunks = [{"token": w, "index": i} for i, w in enumerate("a b c".split())]
    assert fp.stream(job) == chunks
    assert finals(fp, job) == [{"output": chunks}]
    assert fp.result_requests(job)[0].query["isStream"] == "true"


def test_worker_async_generator(tmp_path: Any, fp: FakePlatform) -> None:
    job = fp.add_job({"count": 4})
    with CompatWorker("async_generator", tmp_path, fp) as worker:
        assert fp.wait_results(1, 20), worker.output()
        assert worker.stop() == 0, worker.output()
    assert fp.stream(job) == [f"chunk-{i}" for i in range(4)]
    assert finals(fp, job) == [{"output": []}]


def test_worker_progress_updates(tmp_path: Any, fp: FakePlatform) -> None:
    job = fp.add_job({"steps": 2})
    with CompatWorker("progress_updates", tmp_path, fp) as worker:
        assert fp.wait_results(1, 20), worker.output()
        assert worker.stop() == 0, worker.output()
    assert fp.progress(job) == ["step 1/2", "step 2/2", {"phase": "upscaling"}]
    assert finals(fp, job) == [{"output": {"steps_done": 2}}]


def test_worker_logger_json_lines(tmp_path: Any, fp: FakePlatform) -> None:
    job = fp.add_job({})
    with CompatWorker("logger_worker", tmp_path, fp) as worker:
        assert fp.wait_results(1, 20), worker.output()
        assert worker.stop() == 0, worker.output()
        lines = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
    assert {"requestId": job, "message": "positional job id", "level": "INFO"} in lines
    assert {"requestId": job, "message": "keyword job id", "level": "WARN"} in lines
    assert {"requestId": job, "message": "keyword request id", "level": "ERROR"} in lines
    assert {"requestId": job, "message": "debug line hidden at INFO", "level": "DEBUG"} in lines


def test_worker_logs_go_to_stdout(tmp_path: Any, fp: FakePlatform) -> None:
    job = fp.add_job({})
    with CompatWorker("logger_worker", tmp_path, fp, separate_stderr=True) as worker:
        assert fp.wait_results(1, 20), worker.output()
        assert worker.stop() == 0, worker.output()
        out, err = worker.output(), worker.errors()
    lines = [json.loads(line) for line in out.splitlines()]  # every stdout line is a JSON log line
    assert {"requestId": job, "message": "positional job id", "level": "INFO"} in lines
    assert {"requestId": None, "message": "Loading model (stand-in)...", "level": "INFO"} in lines
    assert err == ""


def test_worker_refresh_worker_exits_after_the_job(tmp_path: Any, fp: FakePlatform) -> None:
    first = fp.add_job({"value": 5})
    fp.add_job({"value": 6})
    with CompatWorker("refresh_worker", tmp_path, fp) as worker:
        assert worker.wait(20) == 0, worker.output()  # exits by itself
    assert finals(fp, first) == [{"output": {"result": 10}, "stopPod": True}]
    assert fp.taken() == [first]


def test_worker_error_modes(tmp_path: Any, fp: FakePlatform) -> None:
    ids = fp.add_jobs([{"mode": m} for m in ("raise", "dict_error", "json_error", "empty_error", "ok")])
    with CompatWorker("error_handling", tmp_path, fp) as worker:
        assert fp.wait_results(5, 20), worker.output()
        assert worker.stop() == 0, worker.output()
    raised, dict_error, json_error, empty_error, ok = (finals(fp, i)[0] for i in ids)
    details = error_of(raised)
    assert details["error_type"] == "<class 'ValueError'>" and details["error_message"] == "model exploded"
    assert list(details)[:6] == [
        "error_type", "error_message", "error_traceback", "hostname", "worker_id", "runpod_version"
    ]
    assert details["runpod_version"] == "1.12.0"
    assert "model exploded" in details["error_traceback"]
    assert error_of(dict_error) == {"code": 42, "message": "bad prompt"}  # sent as a string
    assert error_of(json_error) == {"detail": "out of memory"}
    assert empty_error == {"output": {"value": 1}}
    assert ok == {"output": {"status": "ok"}}


def test_worker_download_upload(tmp_path: Any, fp: FakePlatform, files: FileServer) -> None:
    job = fp.add_job({"image_url": files.url + "/images/cat.png"})
    with CompatWorker("download_upload", tmp_path, fp, RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS="1") as worker:
        assert fp.wait_results(1, 20), worker.output()
        assert worker.stop() == 0, worker.output()
        folder = worker.folder
    (body,) = finals(fp, job)
    output = body["output"]
    assert output["original_name"] == "cat.png" and output["size"] == len(PNG)
    assert os.path.exists(os.path.join(folder, output["image_url"]))
    (saved,) = os.listdir(os.path.join(folder, "jobs", job, "downloaded_files"))
    assert output["extra"] == [saved, None]


def test_worker_fitness_checks_registered(tmp_path: Any, fp: FakePlatform) -> None:
    job = fp.add_job({"x": 2})
    with CompatWorker("fitness_check", tmp_path, fp) as worker:
        assert fp.wait_results(1, 20), worker.output()
        assert worker.stop() == 0, worker.output()
    (body,) = finals(fp, job)
    assert body["output"] == {"checks": {"sync": True, "async": True}, "echo": {"x": 2}}


def test_worker_failing_fitness_check_exits_1_without_taking_a_job(
    tmp_path: Any, fp: FakePlatform
) -> None:
    fp.add_job({"x": 3})
    with CompatWorker("fitness_check", tmp_path, fp, FAIL_FITNESS="1") as worker:
        assert worker.wait(20) == 1, worker.output()
    assert fp.taken() == []
    unhealthy = [p for p in fp.pings() if p.query.get("status") == "unhealthy"]
    assert len(unhealthy) == 1, [p.query for p in fp.pings()]
    assert "model file missing" in unhealthy[0].query.get("reason", "")


def test_worker_sync_handlers_run_in_parallel(tmp_path: Any, fp: FakePlatform) -> None:
    # The handler's barrier only opens when three jobs run at the same time.
    ids = fp.add_jobs([{"parties": 3}] * 3)
    with CompatWorker("concurrency_sync", tmp_path, fp) as worker:
        assert fp.wait_results(3, 30), worker.output()
        assert worker.stop() == 0, worker.output()
        assert "concurrency_controller" in worker.output()  # the legacy key is called out
    for job_id in ids:
        assert finals(fp, job_id) == [{"output": {"parties": 3, "thread": True}}]


def test_worker_debugger(tmp_path: Any, fp: FakePlatform) -> None:
    job = fp.add_job({"text": "abc"})
    with CompatWorker("debugger_timers", tmp_path, fp, ["--rp_debugger"]) as worker:
        assert fp.wait_results(1, 20), worker.output()
        assert worker.stop() == 0, worker.output()
    (body,) = finals(fp, job)
    timings = body["output"].pop("rp_debugger")  # where the endpoint's clients see it
    assert body == {"output": {"result": "ABC"}}
    assert [t["name"] for t in timings["timestamps"]] == ["load_inputs", "inference"]
    assert timings["ready_delay_ms"] >= 0


def test_worker_cleanup_cuda(tmp_path: Any, fp: FakePlatform) -> None:
    job = fp.add_job({"prompt": "y"})
    with CompatWorker("cleanup_cuda", tmp_path, fp) as worker:
        assert fp.wait_results(1, 20), worker.output()
        assert worker.stop() == 0, worker.output()
    assert finals(fp, job) == [{"output": {"device": "cpu", "cleaned": True, "input": {"prompt": "y"}}}]


def test_worker_rp_http_job_done_url_assignment(tmp_path: Any, fp: FakePlatform) -> None:
    job = fp.add_job({"numbers": [4, 5]})
    custom = "%s/v2/%s/job-done/custom-pod/$ID?gpu=test" % (fp.url, fp.endpoint)
    with CompatWorker("rp_http_override", tmp_path, fp, CUSTOM_DONE_URL=custom) as worker:
        assert fp.wait_results(1, 20), worker.output()
        assert worker.stop() == 0, worker.output()
    assert finals(fp, job) == [{"output": {"sum": 9}}]
    assert [r.worker_id for r in fp.result_requests(job)] == ["custom-pod"]


def test_worker_main_argparse_and_user_sigterm_handler(tmp_path: Any, fp: FakePlatform) -> None:
    job = fp.add_job({"prompt": "hey"})
    marker = os.path.join(str(tmp_path), "sigterm.txt")
    with CompatWorker("argparse_main", tmp_path, fp, ["--model_name", "big"], SIGTERM_MARKER=marker) as worker:
        assert fp.wait_results(1, 20), worker.output()
        assert worker.stop() == 0, worker.output()
    assert finals(fp, job) == [{"output": {"model": "big", "prompt": "hey", "argv0": "handler.py"}}]
    with open(marker, encoding="utf-8") as handle:
        assert handle.read() == "called"  # the user's own handler still ran


def test_worker_job_stopped_by_the_platform(tmp_path: Any, fp: FakePlatform) -> None:
    long_job = fp.add_job({"seconds": 30})
    with CompatWorker("job_stop", tmp_path, fp) as worker:
        assert fp.wait_for(lambda p: long_job in p.taken(), 20), worker.output()
        fp.stop_job(long_job)
        short_job = fp.add_job({"seconds": 0})
        assert fp.wait_results(1, 20), worker.output()
        assert finals(fp, short_job) == [{"output": {"slept": 0}}]
        # The stopped job is cancelled, so the worker drains and exits at once.
        assert worker.stop(timeout=15) == 0, worker.output()
    assert finals(fp, long_job) == []  # nothing is posted for a stopped job
    assert fp.requests("job-stop")


def test_worker_mode_covers_every_worker() -> None:
    tested = {
        "hello_world", "validator_schema", "async_handler", "generator_stream", "async_generator",
        "progress_updates", "logger_worker", "refresh_worker", "error_handling", "download_upload",
        "fitness_check", "concurrency_sync", "debugger_timers", "cleanup_cuda", "rp_http_override",
        "argparse_main", "job_stop",
    }
    assert tested == set(WORKERS)
