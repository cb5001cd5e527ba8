"""The runpod compatibility layer: module paths, names, logger, debugger, cuda,
cleanup, rp_http, and the ``python -m wavespeed.run`` command."""

import asyncio
import contextvars
import importlib
import json
import logging
import os
import stat
import subprocess
import sys
import threading
import time
from typing import Any, Dict, Iterator, List, Sequence

import pytest

import wavespeed
import wavespeed.serverless
from wavespeed.compat import layer_path
from wavespeed.serverless.utils.debugger import Timings, collecting

try:
    from tests.helpers import capture_logs
except ImportError:  # tests/ run as a plain directory on sys.path
    from helpers import capture_logs  # type: ignore[no-redef]

pytestmark = pytest.mark.timeout(60)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODULE_PATHS = [
    "runpod",
    "runpod.version",
    "runpod.serverless",
    "runpod.serverless.utils",
    "runpod.serverless.utils.rp_validator",
    "runpod.serverless.utils.rp_upload",
    "runpod.serverless.utils.rp_download",
    "runpod.serverless.utils.rp_cleanup",
    "runpod.serverless.utils.rp_cuda",
    "runpod.serverless.utils.rp_debugger",
    "runpod.serverless.utils.rp_model_cache",
    "runpod.serverless.utils.rp_ssrf",
    "runpod.serverless.utils.rp_volume_cache",
    "runpod.serverless.modules",
    "runpod.serverless.modules.rp_logger",
    "runpod.serverless.modules.rp_http",
    "runpod.serverless.modules.rp_progress",
    "runpod.serverless.modules.rp_fitness",
]


def _drop_runpod() -> Dict[str, Any]:
    found = {k: v for k, v in sys.modules.items() if k == "runpod" or k.startswith("runpod.")}
    for name in found:
        del sys.modules[name]
    return found


@pytest.fixture
def runpod(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh import of the layer as ``runpod``, undone afterwards."""
    saved = _drop_runpod()
    monkeypatch.syspath_prepend(layer_path())
    # RunPodLogger may give the wavespeed logger a handler: restore it afterwards.
    base = logging.getLogger("wavespeed")
    state = (list(base.handlers), base.level, base.propagate, base.disabled)
    try:
        yield importlib.import_module("runpod")
    finally:
        _drop_runpod()
        sys.modules.update(saved)
        base.handlers[:] = state[0]
        base.setLevel(state[1])
        base.propagate, base.disabled = state[2], state[3]


def env_for_subprocess(**extra: str) -> Dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": ROOT, "HOME": os.environ.get("HOME", "/tmp")}
    env.update(extra)
    return env


def run(args: Sequence[str], cwd: str, **env: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env_for_subprocess(**env), capture_output=True, text=True, timeout=30
    )


# -- module paths and names ---------------------------------------------------------


def test_every_runpod_module_path_imports(runpod: Any) -> None:
    for name in MODULE_PATHS:
        module = importlib.import_module(name)
        assert module.__file__ is not None and module.__file__.startswith(layer_path()), name


def test_names_are_wavespeeds(runpod: Any) -> None:
    from wavespeed.serverless.fitness import register_fitness_check
    from wavespeed.serverless.utils import download_files_from_urls, validate

    assert runpod.serverless.progress_update is wavespeed.serverless.progress_update
    assert runpod.serverless.register_fitness_check is register_fitness_check
    assert runpod.serverless.modules.rp_fitness.register_fitness_check is register_fitness_check
    assert runpod.serverless.modules.rp_progress.progress_update is wavespeed.serverless.progress_update
    assert runpod.serverless.utils.rp_validator.validate is validate
    assert runpod.serverless.utils.validate is validate
    assert runpod.serverless.utils.download_files_from_urls is download_files_from_urls
    assert runpod.serverless.utils.rp_download.download_files_from_urls is download_files_from_urls
    assert runpod.RunPodLogger is runpod.serverless.modules.rp_logger.RunPodLogger
    for name in ("upload_image", "files", "bucket_upload", "upload_file_to_bucket", "upload_in_memory_object"):
        assert callable(getattr(runpod.serverless.utils.rp_upload, name)), name
    assert callable(runpod.serverless.utils.rp_download.file)
    assert callable(runpod.serverless.utils.rp_cleanup.clean)
    assert callable(runpod.serverless.utils.rp_cuda.is_available)
    assert runpod.serverless.utils.upload_file_to_bucket is runpod.serverless.utils.rp_upload.upload_file_to_bucket


def test_version(runpod: Any) -> None:
    # Exactly the runpod release whose protocol is spoken: platforms and workers may gate on it.
    assert runpod.__version__ == "1.12.0" == wavespeed.RUNPOD_VERSION
    assert runpod.serverless.runpod_version == "1.12.0"
    assert importlib.import_module("runpod.version").get_version() == "1.12.0"
    assert wavespeed.__version__ == "1.1.0"  # the wavespeed 1.x line: `wavespeed>=1,<2` pins install it


def test_runpod_1_12_public_names(runpod: Any) -> None:
    # Every name runpod 1.12.0 exports to workers from these modules (its __all__ and module globals).
    expected = {
        "runpod": ["serverless", "RunPodLogger", "__version__", "api_key", "profile", "SSH_KEY_PATH", "endpoint_url_base"],
        "runpod.serverless": ["start", "progress_update", "register_fitness_check", "runpod_version", "VolumeCache", "log"],
        "runpod.serverless.utils": ["download_files_from_urls", "upload_file_to_bucket", "upload_in_memory_object", "VolumeCache"],
        "runpod.serverless.utils.rp_download": [
            "file", "download_files_from_urls", "calculate_chunk_size", "parse_content_length",
            "extract_disposition_params", "HEADERS",
        ],
        "runpod.serverless.utils.rp_upload": [
            "get_boto_client", "extract_region_from_url", "upload_image", "files", "bucket_upload",
            "upload_file_to_bucket", "upload_in_memory_object",
        ],
        "runpod.serverless.utils.rp_ssrf": [
            "SSRFError", "is_safe_address", "resolve_and_validate", "max_download_bytes",
            "iter_content_capped", "safe_get", "PinnedIPAdapter",
        ],
        "runpod.serverless.utils.rp_volume_cache": ["VolumeCache"],
        "runpod.serverless.utils.rp_model_cache": ["resolve_model_cache_path_from_hugginface_repository"],
        "runpod.serverless.utils.rp_debugger": [
            "Checkpoints", "LineTimer", "FunctionTimer", "get_debugger_output", "clear_debugger_output",
        ],
        "runpod.serverless.utils.rp_cleanup": ["clean"],
        "runpod.serverless.utils.rp_cuda": ["is_available"],
        "runpod.serverless.modules.rp_logger": ["RunPodLogger", "LOG_LEVELS", "MAX_MESSAGE_LENGTH"],
        "runpod.version": ["get_version", "__version__"],
    }
    for module_name, names in expected.items():
        module = importlib.import_module(module_name)
        for name in names:
            assert hasattr(module, name), f"{module_name}.{name}"
    assert runpod.serverless.VolumeCache is runpod.serverless.utils.VolumeCache
    assert runpod.serverless.log is runpod.RunPodLogger()
    logger_module = importlib.import_module("runpod.serverless.modules.rp_logger")
    assert logger_module.LOG_LEVELS == ["NOTSET", "TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
    assert logger_module.MAX_MESSAGE_LENGTH == 4096


def test_rp_download_errors_are_request_exceptions(
    runpod: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    import requests

    monkeypatch.chdir(tmp_path)  # file() makes ./job_files

    dl = importlib.import_module("runpod.serverless.utils.rp_download")
    ssrf = importlib.import_module("runpod.serverless.utils.rp_ssrf")
    assert issubclass(dl.DownloadError, requests.RequestException)
    with pytest.raises(requests.RequestException):
        dl.file("ftp://example.invalid/x")  # refused: only http(s)
    with pytest.raises(ssrf.SSRFError):  # runpod's name for a refusal, a ValueError
        dl.file("http://169.254.169.254/latest/meta-data/")
    assert issubclass(ssrf.SSRFError, ValueError)
    assert dl.calculate_chunk_size(1024) == 1024
    assert dl.calculate_chunk_size(2 * 1024 * 1024) == 1024 * 1024
    assert dl.calculate_chunk_size(2 * 1024**3) == 10 * 1024 * 1024
    assert dl.parse_content_length({"Content-Length": "12"}) == 12
    assert dl.parse_content_length({"Content-Length": "lots"}) == 0 and dl.parse_content_length({}) == 0
    assert dl.extract_disposition_params('attachment; filename="a b.png"; Size=3') == {
        "filename": "a b.png",
        "size": "3",
    }


def test_rp_model_cache(runpod: Any) -> None:
    resolve = importlib.import_module(
        "runpod.serverless.utils.rp_model_cache"
    ).resolve_model_cache_path_from_hugginface_repository
    assert resolve("runwayml/stable-diffusion-v1-5:experimental") == "/runpod/cache/runwayml/stable-diffusion-v1-5/experimental"
    assert resolve("runwayml/stable-diffusion-v1-5") == "/runpod/cache/runwayml/stable-diffusion-v1-5/main"
    assert resolve("stable-diffusion-v1-5:main") == "/runpod/cache/stable-diffusion-v1-5/main"
    assert resolve(":experimental") is None
    assert resolve("org/m:rev", path_template="/models/{model}@{revision}") == "/models/org/m@rev"
    with pytest.raises(TypeError):
        resolve(huggingface_repository="org/m")  # positional only, as runpod's


def test_rp_ssrf_guard(runpod: Any) -> None:
    ssrf = importlib.import_module("runpod.serverless.utils.rp_ssrf")
    for address in ("127.0.0.1", "10.0.0.1", "169.254.169.254", "100.64.0.1", "::1", "::ffff:10.0.0.1", "bogus"):
        assert ssrf.is_safe_address(address) is False, address
    assert ssrf.is_safe_address("8.8.8.8") is True
    with pytest.raises(ssrf.SSRFError, match="127.0.0.1"):
        ssrf.resolve_and_validate("127.0.0.1", 80)
    with pytest.raises(ssrf.SSRFError):
        ssrf.safe_get("http://127.0.0.1:9/")
    with pytest.raises(ssrf.SSRFError):
        ssrf.safe_get("file:///etc/passwd")


def test_client_api_names_explain_themselves(runpod: Any) -> None:
    with pytest.raises(AttributeError, match="client API"):
        runpod.Endpoint  # noqa: B018
    with pytest.raises(AttributeError):
        runpod.no_such_thing  # noqa: B018
    runpod.api_key = "abc"  # workers set it; it must simply stick
    assert runpod.api_key == "abc"
    assert runpod.endpoint_url_base.startswith("https://")


def test_validator_constants_are_runpods_strings(runpod: Any) -> None:
    v = runpod.serverless.utils.rp_validator
    assert v.UNEXPECTED_INPUT_ERROR == "Unexpected input. {} is not a valid input option."
    assert v.MISSING_REQUIRED_ERROR == "{} is a required input."
    assert v.MISSING_DEFAULT_ERROR == "Schema error, missing default value for {}."
    assert v.MISSING_TYPE_ERROR == "Schema error, missing type for {}."
    assert v.INVALID_TYPE_ERROR == "{} should be {} type, not {}."
    assert v.CONSTRAINTS_ERROR == "{} does not meet the constraints."
    assert v.SCHEMA_ERROR == "Schema error, {} is not a dictionary."


def test_import_is_cheap(tmp_path: Any) -> None:
    code = (
        "import json, sys; import runpod; "
        "import runpod.serverless.utils.rp_validator, runpod.serverless.modules.rp_logger; "
        "import runpod.serverless.utils.rp_debugger, runpod.serverless.utils.rp_upload; "
        "import runpod.serverless.utils.rp_cuda, runpod.serverless.utils.rp_volume_cache; "
        "import runpod.serverless.utils.rp_model_cache; runpod.serverless.VolumeCache; "
        "heavy = ['requests', 'urllib3', 'flask', 'waitress', 'boto3', 'asyncio', 'torch', "
        "'wavespeed.serverless.worker', 'wavespeed.serverless.transport']; "
        "print(json.dumps([m for m in heavy if m in sys.modules]))"
    )
    proc = run(["-c", code], str(tmp_path), PYTHONPATH=os.pathsep.join([layer_path(), ROOT]))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
    # rp_download's errors are requests.RequestException: importing it brings requests, nothing more.
    code = (
        "import json, sys; import runpod.serverless.utils.rp_download; "
        "print(json.dumps([m for m in ['boto3', 'flask', 'waitress', 'wavespeed.serverless.worker'] if m in sys.modules]))"
    )
    proc = run(["-c", code], str(tmp_path), PYTHONPATH=os.pathsep.join([layer_path(), ROOT]))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_layer_is_not_visible_without_the_command(tmp_path: Any) -> None:
    proc = run(["-c", "import wavespeed.compat, wavespeed.serverless; import runpod; print(runpod.__file__)"], str(tmp_path))
    if proc.returncode == 0:  # a real runpod-python is installed in this environment
        assert layer_path() not in proc.stdout
    else:
        assert "ModuleNotFoundError" in proc.stderr


# -- start() --------------------------------------------------------------------------


def test_start_hands_the_config_to_wavespeed(runpod: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: List[Any] = []
    monkeypatch.setattr(wavespeed.serverless, "start", lambda config, **kw: calls.append((config, kw)))
    config = {"handler": lambda job: None, "return_aggregate_stream": True, "refresh_worker": False}
    runpod.serverless.start(config)
    ((given, kwargs),) = calls
    assert given is config and kwargs == {"environ": None}  # None: os.environ, untouched


def test_assigned_job_done_url_reaches_start(runpod: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: List[Any] = []
    monkeypatch.setattr(wavespeed.serverless, "start", lambda config, **kw: calls.append(kw["environ"]))
    monkeypatch.setenv("RUNPOD_WEBHOOK_POST_OUTPUT", "http://platform/job-done/$RUNPOD_POD_ID/$ID?gpu=x")
    monkeypatch.setenv("RUNPOD_POD_ID", "pod-9")
    rp_http = importlib.import_module("runpod.serverless.modules.rp_http")
    assert rp_http.JOB_DONE_URL == "http://platform/job-done/pod-9/$ID?gpu=x"
    rp_http.JOB_DONE_URL = "http://mine/done/$ID?"
    runpod.serverless.start({"handler": lambda job: None})
    (environ,) = calls
    assert environ["RUNPOD_WEBHOOK_POST_OUTPUT"] == "http://mine/done/$ID?"
    assert environ["RUNPOD_POD_ID"] == "pod-9"
    assert os.environ["RUNPOD_WEBHOOK_POST_OUTPUT"].startswith("http://platform/")  # process env untouched


def test_job_urls_without_env(runpod: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RUNPOD_WEBHOOK_POST_OUTPUT", "RUNPOD_WEBHOOK_POST_STREAM", "WAVERLESS_ENDPOINT_ID"):
        monkeypatch.delenv(name, raising=False)
    rp_http = importlib.import_module("runpod.serverless.modules.rp_http")
    assert rp_http.JOB_DONE_URL == "JOB_DONE_URL" and rp_http.JOB_STREAM_URL == "JOB_STREAM_URL"
    assert rp_http.environ_with_overrides({}) is None


def test_assigned_url_on_waverless(runpod: Any) -> None:
    rp_http = importlib.import_module("runpod.serverless.modules.rp_http")
    rp_http.JOB_STREAM_URL = "http://mine/stream/$ID"
    environ = rp_http.environ_with_overrides({"WAVERLESS_ENDPOINT_ID": "ep"})
    assert environ == {"WAVERLESS_ENDPOINT_ID": "ep", "WAVERLESS_WEBHOOK_POST_STREAM": "http://mine/stream/$ID"}


# -- RunPodLogger ----------------------------------------------------------------------


def test_logger_job_id_forms(runpod: Any) -> None:
    log = runpod.RunPodLogger()
    with capture_logs() as records:
        log.info("positional", "job-1")
        log.warn("keyword", job_id="job-2")
        log.error("request", request_id="job-3")
        log.debug("plain")
        log.log("by name", "WARN", "job-4")
        log.tip("a tip")
        log.secret("API_KEY", "abcdef")
    got = [(r.getMessage(), logging.getLevelName(r.levelno), getattr(r, "job_id", None)) for r in records]
    assert got == [
        ("positional", "INFO", "job-1"),
        ("keyword", "WARNING", "job-2"),
        ("request", "ERROR", "job-3"),
        ("plain", "DEBUG", None),
        ("by name", "WARNING", "job-4"),
        ("a tip", "INFO", None),
        ("API_KEY: a****f", "INFO", None),
    ]
    assert getattr(records[5], "level_name") == "TIP"


def test_logger_is_one_instance_with_runpods_level(runpod: Any) -> None:
    RunPodLogger = runpod.RunPodLogger
    assert RunPodLogger() is RunPodLogger() is runpod.serverless.modules.rp_logger.RunPodLogger()
    log = RunPodLogger()
    base = logging.getLogger("wavespeed")
    handler_log = logging.getLogger("wavespeed.handler")
    before = base.level, handler_log.level, base.__dict__.get("_wavespeed_user_level")
    try:
        handler_log.setLevel(logging.DEBUG)
        assert log.level == "DEBUG"  # runpod's default
        log.set_level("error")
        assert log.level == "ERROR" and base.level == logging.ERROR and handler_log.level == logging.ERROR
        log.set_level(2)  # runpod's index: DEBUG
        assert log.level == "DEBUG" and base.level == logging.DEBUG
        log.set_level("NOTSET")
        assert log.level == "NOTSET"
        for bad in ("LOUD", 6, -1, "WARNING", 2.0):
            with pytest.raises(ValueError, match="Invalid debug level"):
                log.set_level(bad)
        with pytest.raises(ValueError):
            log.log("x", "LOUD")
        with pytest.raises(ValueError):
            log.log("x", "info")  # runpod's names are upper case
    finally:
        base.setLevel(before[0])
        handler_log.setLevel(before[1])
        base.__dict__.pop("_wavespeed_user_level", None)


def test_set_level_says_so(runpod: Any) -> None:
    log = runpod.RunPodLogger()
    base = logging.getLogger("wavespeed")
    handler_log = logging.getLogger("wavespeed.handler")
    before = base.level, handler_log.level
    try:
        with capture_logs() as records:
            log.set_level("INFO")
        assert [r.getMessage() for r in records] == ["Log level set to INFO"]
    finally:
        base.setLevel(before[0])
        handler_log.setLevel(before[1])
        base.__dict__.pop("_wavespeed_user_level", None)


def test_every_method_goes_through_log(runpod: Any) -> None:
    seen: List[Any] = []

    class Recording(runpod.RunPodLogger):  # type: ignore[misc, name-defined]
        def log(self, message: Any, message_level: str = "INFO", job_id: Any = None) -> None:
            seen.append((message, message_level, job_id))

    log = Recording()
    assert Recording() is log and runpod.RunPodLogger() is not log
    log.debug("d", "j1")
    log.info("i", request_id="j2")
    log.warn("w")
    log.error("e", "j3")
    log.trace("t")
    log.tip("tip")
    log.secret("TOKEN", "abcdefgh")
    assert seen == [
        ("d", "DEBUG", "j1"),
        ("i", "INFO", "j2"),
        ("w", "WARN", None),
        ("e", "ERROR", "j3"),
        ("t", "TRACE", None),
        ("tip", "TIP", None),
        ("TOKEN: a******h", "INFO", None),
    ]


def test_logger_prints_before_start(tmp_path: Any) -> None:
    code = "import runpod; log = runpod.RunPodLogger(); log.info('loading', 'job-7'); log.debug('detail')"
    path = os.pathsep.join([layer_path(), ROOT])
    proc = run(["-c", code], str(tmp_path), PYTHONPATH=path)
    # No platform: this will be a local test run, whose stdout is the result's. Lines: stderr.
    assert proc.stdout == ""
    assert proc.stderr == "INFO   | job-7 | loading\nDEBUG  | detail\n"  # DEBUG: runpod's default level
    proc = run(["-c", code], str(tmp_path), PYTHONPATH=path, RUNPOD_WEBHOOK_GET_JOB="http://127.0.0.1:9/x")
    assert proc.stderr == "" and proc.stdout == "INFO   | job-7 | loading\nDEBUG  | detail\n"  # a worker: stdout
    proc = run(["-c", code], str(tmp_path), PYTHONPATH=path, RUNPOD_ENDPOINT_ID="ep", RUNPOD_LOG_LEVEL="INFO")
    assert json.loads(proc.stderr) == {"requestId": "job-7", "message": "loading", "level": "INFO"}


# -- rp_debugger -------------------------------------------------------------------------


def test_timers_do_nothing_outside_a_debugged_job(runpod: Any) -> None:
    dbg = runpod.serverless.utils.rp_debugger

    @dbg.FunctionTimer
    def double(x: int) -> int:
        return x * 2

    assert double(4) == 8 and double.__name__ == "double"
    with dbg.LineTimer("block"):
        pass
    report = dbg.get_debugger_output()
    assert report["timestamps"] == []
    assert set(report["system_info"]) >= {"os", "processor", "python_version", "runpod"}
    assert report["system_info"]["runpod"] == "1.12.0"


def test_timers_record_into_the_jobs_collector(runpod: Any) -> None:
    dbg = runpod.serverless.utils.rp_debugger

    @dbg.FunctionTimer
    def load() -> str:
        time.sleep(0.005)
        return "ok"

    @dbg.FunctionTimer
    async def infer() -> str:
        await asyncio.sleep(0.005)
        return "done"

    class Model:
        @dbg.FunctionTimer
        def predict(self, x: int) -> int:
            return x + 1

    timings = Timings()
    with collecting(timings):
        assert load() == "ok"
        assert asyncio.run(infer()) == "done"
        assert Model().predict(1) == 2
        with dbg.LineTimer("post"):
            pass
        checkpoints = dbg.Checkpoints()
        checkpoints.add("manual")
        checkpoints.start("manual")
        checkpoints.stop("manual")
        report = dbg.get_debugger_output()
    names = [t["name"] for t in report["timestamps"]]
    assert names == ["load", "infer", "predict", "post", "manual"]
    assert report["timestamps"][0]["duration_ms"] >= 4
    assert report["timestamps"][1]["duration_ms"] >= 4  # the await is timed, not just the call
    assert set(report["timestamps"][0]) == {"name", "start_utc", "stop_utc", "duration_ms"}
    assert report["system_info"]["wavespeed"] == wavespeed.__version__
    assert timings.entries() == []  # get_debugger_output empties the job's book, as runpod's does


def test_concurrent_jobs_keep_their_own_timings(runpod: Any) -> None:
    dbg = runpod.serverless.utils.rp_debugger
    barrier = threading.Barrier(2, timeout=10)
    results: Dict[str, List[str]] = {}

    def job(name: str) -> None:
        timings = Timings()
        with collecting(timings):
            with dbg.LineTimer(f"{name}-a"):
                barrier.wait()
            with dbg.LineTimer(f"{name}-b"):
                pass
        results[name] = [t["name"] for t in timings.entries()]

    threads = [threading.Thread(target=job, args=(n,)) for n in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == {"x": ["x-a", "x-b"], "y": ["y-a", "y-b"]}


def test_copied_context_carries_the_collector_into_a_thread(runpod: Any) -> None:
    dbg = runpod.serverless.utils.rp_debugger
    timings = Timings()
    with collecting(timings):
        ctx = contextvars.copy_context()
    thread = threading.Thread(target=ctx.run, args=(lambda: dbg.LineTimer("in-thread").__enter__().__exit__(),))
    thread.start()
    thread.join(10)
    assert [t["name"] for t in timings.entries()] == ["in-thread"]


@pytest.mark.parametrize("in_a_job", [True, False], ids=["in-a-job", "outside-a-job"])
def test_checkpoints_raise_keyerror_where_runpods_do(runpod: Any, in_a_job: bool) -> None:
    dbg = runpod.serverless.utils.rp_debugger
    assert dbg.Checkpoints() is dbg.Checkpoints()
    with collecting(Timings(enabled=False) if in_a_job else None):
        checkpoints = dbg.Checkpoints()
        checkpoints.clear()
        with pytest.raises(KeyError, match="Checkpoint name 'never' does not exist."):
            checkpoints.start("never")
        with pytest.raises(KeyError, match="Checkpoint name 'never' does not exist."):
            checkpoints.stop("never")
        checkpoints.add("load")
        with pytest.raises(KeyError, match='Checkpoint name "load" already exists.'):
            checkpoints.add("load")
        with pytest.raises(KeyError, match="Checkpoint has not been started."):
            checkpoints.stop("load")
        checkpoints.start("load")
        checkpoints.stop("load")
        (entry,) = checkpoints.get_checkpoints()
        assert set(entry) == {"name", "start_utc", "stop_utc", "duration_ms"} and entry["name"] == "load"
        checkpoints.clear()
        checkpoints.add("load")  # a cleared book (a new job) takes the name again


def test_each_job_has_its_own_checkpoint_book(runpod: Any) -> None:
    dbg = runpod.serverless.utils.rp_debugger
    for _job in range(2):
        with collecting(Timings(enabled=False)):
            dbg.Checkpoints().add("per-job")  # no "already exists" on the second job


# -- rp_cuda and rp_cleanup --------------------------------------------------------------


def fake_nvidia_smi(folder: Any, gpus: int, code: int = 0) -> str:
    path = os.path.join(str(folder), "nvidia-smi")
    body = "".join(f'echo "GPU {i}: NVIDIA Fake (UUID: GPU-{i})"\n' for i in range(gpus))
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f"#!/bin/sh\n{body}exit {code}\n")
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
    return str(folder)


def test_cuda_hidden_by_env(runpod: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = runpod.serverless.utils.rp_cuda
    for value in ("", "-1", "NoDevFiles"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
        assert cuda.is_available() is False
    assert "torch" not in sys.modules


@pytest.mark.skipif(os.path.exists("/proc/driver/nvidia/gpus"), reason="a real driver answers first")
def test_cuda_from_nvidia_smi(runpod: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    cuda = runpod.serverless.utils.rp_cuda
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing else on PATH
    assert cuda.is_available() is False  # no nvidia-smi
    fake_nvidia_smi(tmp_path, 2)
    assert cuda.is_available() is True and cuda.device_count() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert cuda.device_count() == 1
    fake_nvidia_smi(tmp_path, 0, code=9)  # driver broken
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert cuda.is_available() is False


def test_clean_removes_job_folders(runpod: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.chdir(tmp_path)
    for folder in ("input_objects", "output_objects", "job_files/sub", "mine/deep"):
        os.makedirs(folder)
    with open("output.zip", "wb") as handle:
        handle.write(b"z")
    with open("keep.txt", "w") as handle:
        handle.write("k")
    removed = runpod.serverless.utils.rp_cleanup.clean(["mine", "not-there"])
    assert sorted(removed) == ["input_objects", "job_files", "mine", "output.zip", "output_objects"]
    assert sorted(os.listdir(".")) == ["keep.txt"]


def test_clean_refuses_dangerous_folders(runpod: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "keep.txt").write_text("k")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    runpod.serverless.utils.rp_cleanup.clean([".", str(work), str(tmp_path), "/", str(tmp_path / "home")])
    assert (work / "keep.txt").exists() and (tmp_path / "home").exists()


def test_upload_region_helper(runpod: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BUCKET_ENDPOINT_URL", raising=False)
    up = runpod.serverless.utils.rp_upload
    assert up.extract_region_from_url("https://s3.eu-central-1.amazonaws.com") == "eu-central-1"
    assert up.extract_region_from_url("https://ams3.digitaloceanspaces.com") == "ams3"
    assert up.extract_region_from_url("https://minio.local:9000") is None
    assert up.get_boto_client() == (None, None)  # no bucket configured


# -- python -m wavespeed.run -------------------------------------------------------------

SCRIPT = """\
import sys
import runpod
print("RUNPOD", runpod.__file__)
print("ARGV", sys.argv)
print("MAIN", __name__)
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 0)
"""


def write_script(folder: Any) -> str:
    path = os.path.join(str(folder), "handler.py")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(SCRIPT)
    return path


def fake_real_runpod(folder: Any) -> str:
    package = os.path.join(str(folder), "site", "runpod")
    os.makedirs(package)
    with open(os.path.join(package, "__init__.py"), "w", encoding="utf-8") as handle:
        handle.write("__version__ = '9.9.9'\n")
    return os.path.join(str(folder), "site")


def test_run_help(tmp_path: Any) -> None:
    proc = run(["-m", "wavespeed.run", "--help"], str(tmp_path))
    assert proc.returncode == 0 and "usage: python -m wavespeed.run" in proc.stdout
    assert "--runpod=installed" in proc.stdout and "WAVESPEED_RUNPOD" in proc.stdout


@pytest.mark.parametrize("args", [[], ["missing.py"], ["--runpod=nope", "handler.py"], ["--bogus", "handler.py"]])
def test_run_usage_errors(tmp_path: Any, args: List[str]) -> None:
    write_script(tmp_path)
    proc = run(["-m", "wavespeed.run", *args], str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.startswith("wavespeed.run:")


def test_run_script_gets_the_layer_its_args_and_exit_code(tmp_path: Any) -> None:
    (tmp_path / "sub").mkdir()
    script = write_script(tmp_path / "sub")  # run from another folder, like `python sub/handler.py`
    proc = run(["-m", "wavespeed.run", script, "7", "--rp_debugger", "--help"], str(tmp_path))
    assert proc.returncode == 7, proc.stderr
    assert f"RUNPOD {os.path.join(layer_path(), 'runpod', '__init__.py')}" in proc.stdout
    assert f"ARGV {[script, '7', '--rp_debugger', '--help']!r}" in proc.stdout  # --help after the script is the script's
    assert "MAIN __main__" in proc.stdout
    assert proc.stderr == ""  # no real runpod installed: nothing to say


def test_run_module_form(tmp_path: Any) -> None:
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "worker.py").write_text(SCRIPT)
    proc = run(["-m", "wavespeed.run", "-m", "mypkg.worker", "0"], str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "MAIN __main__" in proc.stdout and layer_path() in proc.stdout


def test_run_says_when_a_real_runpod_is_shadowed(tmp_path: Any) -> None:
    write_script(tmp_path)
    site = fake_real_runpod(tmp_path)
    pythonpath = os.pathsep.join([ROOT, site])
    proc = run(["-m", "wavespeed.run", "handler.py"], str(tmp_path), PYTHONPATH=pythonpath)
    assert proc.returncode == 0, proc.stderr
    assert layer_path() in proc.stdout
    assert f"runpod-python is installed at {os.path.join(site, 'runpod')}" in proc.stderr
    assert "--runpod=installed" in proc.stderr


@pytest.mark.parametrize("how", ["flag", "env"])
def test_run_can_use_the_installed_runpod(tmp_path: Any, how: str) -> None:
    write_script(tmp_path)
    site = fake_real_runpod(tmp_path)
    pythonpath = os.pathsep.join([ROOT, site])
    if how == "flag":
        proc = run(["-m", "wavespeed.run", "--runpod=installed", "handler.py"], str(tmp_path), PYTHONPATH=pythonpath)
    else:
        proc = run(["-m", "wavespeed.run", "handler.py"], str(tmp_path), PYTHONPATH=pythonpath, WAVESPEED_RUNPOD="installed")
    assert proc.returncode == 0, proc.stderr
    assert f"RUNPOD {os.path.join(site, 'runpod', '__init__.py')}" in proc.stdout
    assert "using the installed runpod-python" in proc.stderr


def test_run_installed_without_runpod_is_an_error(tmp_path: Any) -> None:
    write_script(tmp_path)
    proc = run(["-m", "wavespeed.run", "--runpod", "installed", "handler.py"], str(tmp_path))
    assert proc.returncode == 2 and "not installed" in proc.stderr
