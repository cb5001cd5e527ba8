"""Unit tests of the configuration: env (both platforms), argv and the start() dict.

Every test passes its own environ dict, so nothing here depends on the
variables of the machine running the tests.
"""

import dataclasses
import importlib.util
import logging
import pathlib
import re
import warnings
from typing import Any, Dict, Iterator, List, Mapping, Optional

import pytest

import wavespeed.serverless as serverless
from wavespeed.serverless.config import TRACE, Config
from wavespeed.serverless.errors import ConfigError
from wavespeed.serverless.config import SETTINGS
from wavespeed.serverless.settings import REQUIRED, Computed

pytestmark = pytest.mark.timeout(60)

RUNPOD_TAKE = "http://rp.test/v2/ep/job-take/$ID?gpu=A100"
RUNPOD_DONE = "http://rp.test/v2/ep/job-done/$RUNPOD_POD_ID/$ID?gpu=A100"
WAVERLESS_TAKE = "http://wl.test/v2/ep/job-take/$ID?"
WAVERLESS_DONE = "http://wl.test/v2/ep/job-done/$WAVERLESS_POD_ID/$ID?"


def handler(job: Dict[str, Any]) -> Any:
    return job["input"]


def build(
    environ: Optional[Mapping[str, str]] = None,
    argv: Optional[List[str]] = None,
    **user: Any,
) -> Config:
    user.setdefault("handler", handler)
    return Config.from_env(dict(environ or {}), list(argv or []), user)


def runpod_worker(**extra: str) -> Dict[str, str]:
    env = {
        "RUNPOD_WEBHOOK_GET_JOB": RUNPOD_TAKE,
        "RUNPOD_WEBHOOK_POST_OUTPUT": RUNPOD_DONE,
        "RUNPOD_POD_ID": "rp-pod",
    }
    env.update(extra)
    return env


def waverless_worker(**extra: str) -> Dict[str, str]:
    env = {
        "WAVERLESS_WEBHOOK_GET_JOB": WAVERLESS_TAKE,
        "WAVERLESS_WEBHOOK_POST_OUTPUT": WAVERLESS_DONE,
        "WAVERLESS_POD_ID": "wl-pod",
    }
    env.update(extra)
    return env


@pytest.fixture
def restore_wavespeed_logging() -> Iterator[None]:
    """start() installs a handler on the 'wavespeed' logger; undo it afterwards."""
    log = logging.getLogger("wavespeed")
    saved = (list(log.handlers), log.level, log.propagate, log.disabled)
    yield
    log.handlers[:] = saved[0]
    log.setLevel(saved[1])
    log.propagate = saved[2]
    log.disabled = saved[3]


# -- platform detection ------------------------------------------------------


@pytest.mark.parametrize(
    "environ, platform",
    [
        ({}, "runpod"),
        (runpod_worker(), "runpod"),
        ({"RUNPOD_ENDPOINT_ID": "ep"}, "runpod"),
        ({"WAVERLESS_ENDPOINT_ID": "ep"}, "waverless"),
        ({"WAVERLESS_WEBHOOK_POST_OUTPUT": WAVERLESS_DONE}, "waverless"),
        ({"WAVERLESS_WEBHOOK_PING": "http://wl.test/ping/$WAVERLESS_POD_ID"}, "waverless"),
        ({"WAVERLESS_WEBHOOK_GET_JOB": ""}, "runpod"),  # empty means unset
        ({"WAVERLESS_POD_ID": "p"}, "runpod"),  # a pod id alone says nothing
        (waverless_worker(), "waverless"),
    ],
)
def test_platform_detection(environ: Dict[str, str], platform: str) -> None:
    assert build(environ).platform == platform


def test_waverless_reads_waverless_names_only() -> None:
    env = waverless_worker(
        WAVERLESS_API_KEY="wl-key",
        RUNPOD_AI_API_KEY="rp-key",
        WAVERLESS_ENDPOINT_ID="wl-ep",
        RUNPOD_ENDPOINT_ID="rp-ep",
    )
    cfg = build(env)
    assert (cfg.platform, cfg.api_key, cfg.endpoint_id) == ("waverless", "wl-key", "wl-ep")


def test_runpod_api_key_and_endpoint() -> None:
    cfg = build(runpod_worker(RUNPOD_AI_API_KEY="rp-key", RUNPOD_ENDPOINT_ID="rp-ep"))
    assert (cfg.api_key, cfg.endpoint_id, cfg.json_logs) == ("rp-key", "rp-ep", True)


def test_no_endpoint_means_text_logs() -> None:
    assert build(runpod_worker()).json_logs is False


def test_api_key_is_not_in_repr() -> None:
    cfg = build(runpod_worker(RUNPOD_AI_API_KEY="super-secret-key"))
    assert "super-secret-key" not in repr(cfg)


# -- worker id and hostname --------------------------------------------------

ID_VARS = ["WAVERLESS_POD_ID", "RUNPOD_POD_ID", "DEVICE_ID", "HOSTNAME"]


@pytest.mark.parametrize("winner", range(len(ID_VARS)))
def test_worker_id_precedence(winner: int) -> None:
    # Only the variables from `winner` on are set; the first of them wins.
    env = {name: f"id-from-{name}" for name in ID_VARS[winner:]}
    assert build(env).worker_id == f"id-from-{ID_VARS[winner]}"


def test_worker_id_skips_empty_values() -> None:
    env = {"WAVERLESS_POD_ID": "", "RUNPOD_POD_ID": "", "DEVICE_ID": "dev-7"}
    assert build(env).worker_id == "dev-7"


def test_worker_id_fallback_uses_endpoint_and_uuid() -> None:
    first = build({"RUNPOD_ENDPOINT_ID": "myep"}).worker_id
    second = build({"RUNPOD_ENDPOINT_ID": "myep"}).worker_id
    assert re.fullmatch(r"myep-[0-9a-f]{32}", first)
    assert first != second


def test_worker_id_fallback_without_endpoint() -> None:
    assert re.fullmatch(r"worker-[0-9a-f]{32}", build({}).worker_id)


def test_hostname_defaults_to_worker_id() -> None:
    assert build(runpod_worker()).hostname == "rp-pod"


def test_hostname_from_env() -> None:
    assert build(runpod_worker(RUNPOD_POD_HOSTNAME="rp-host")).hostname == "rp-host"
    assert build(waverless_worker(WAVERLESS_POD_HOSTNAME="wl-host")).hostname == "wl-host"


# -- URL templates -----------------------------------------------------------

ALL_PLACEHOLDERS = "a=$RUNPOD_POD_ID&b=$WAVERLESS_POD_ID&c=$DEVICE_ID"


def test_take_url_fills_every_placeholder_with_the_worker_id() -> None:
    env = runpod_worker(
        RUNPOD_WEBHOOK_GET_JOB=f"http://rp.test/v2/ep/job-take/$ID?{ALL_PLACEHOLDERS}",
        RUNPOD_POD_ID="w9",
    )
    assert build(env).job_take_url == "http://rp.test/v2/ep/job-take/w9?a=w9&b=w9&c=w9"


@pytest.mark.parametrize(
    "var, field",
    [
        ("RUNPOD_WEBHOOK_POST_OUTPUT", "job_done_url"),
        ("RUNPOD_WEBHOOK_POST_STREAM", "job_stream_url"),
    ],
)
def test_done_and_stream_urls_keep_id_for_the_job(var: str, field: str) -> None:
    env = runpod_worker(RUNPOD_POD_ID="w9")
    env[var] = f"http://rp.test/v2/ep/x/$RUNPOD_POD_ID/$ID?{ALL_PLACEHOLDERS}"
    assert getattr(build(env), field) == "http://rp.test/v2/ep/x/w9/$ID?a=w9&b=w9&c=w9"


def test_ping_url_fills_pod_placeholders() -> None:
    env = runpod_worker(
        RUNPOD_WEBHOOK_PING=f"http://rp.test/v2/ep/ping/$RUNPOD_POD_ID?{ALL_PLACEHOLDERS}",
        RUNPOD_POD_ID="w9",
    )
    assert build(env).ping_url == "http://rp.test/v2/ep/ping/w9?a=w9&b=w9&c=w9"


def test_waverless_templates() -> None:
    env = waverless_worker(
        WAVERLESS_WEBHOOK_POST_STREAM="http://wl.test/v2/ep/job-stream/$WAVERLESS_POD_ID/$ID?",
        WAVERLESS_WEBHOOK_PING="http://wl.test/v2/ep/ping/$WAVERLESS_POD_ID",
    )
    cfg = build(env)
    assert cfg.job_take_url == "http://wl.test/v2/ep/job-take/wl-pod?"
    assert cfg.job_done_url == "http://wl.test/v2/ep/job-done/wl-pod/$ID?"
    assert cfg.job_stream_url == "http://wl.test/v2/ep/job-stream/wl-pod/$ID?"
    assert cfg.ping_url == "http://wl.test/v2/ep/ping/wl-pod"


def test_stream_alias_job_stream() -> None:
    env = runpod_worker(RUNPOD_WEBHOOK_JOB_STREAM="http://rp.test/stream-alias/$ID")
    assert build(env).job_stream_url == "http://rp.test/stream-alias/$ID"


def test_post_stream_wins_over_alias() -> None:
    env = runpod_worker(
        RUNPOD_WEBHOOK_JOB_STREAM="http://rp.test/alias/$ID",
        RUNPOD_WEBHOOK_POST_STREAM="http://rp.test/main/$ID",
    )
    assert build(env).job_stream_url == "http://rp.test/main/$ID"


def test_job_stop_url_derived_from_take() -> None:
    cfg = build(runpod_worker())
    assert cfg.job_stop_url == "http://rp.test/v2/ep/job-stop/rp-pod?gpu=A100"


def test_job_stop_url_absent_without_job_take_path() -> None:
    cfg = build(runpod_worker(RUNPOD_WEBHOOK_GET_JOB="http://rp.test/custom/$ID"))
    assert cfg.job_stop_url is None


# -- ping interval -----------------------------------------------------------


def test_ping_interval_default() -> None:
    assert build(runpod_worker()).ping_interval == 10.0


@pytest.mark.parametrize(
    "var, raw, seconds",
    [
        ("RUNPOD_PING_INTERVAL", "2500", 2.5),  # ms kept, not truncated to whole s
        ("RUNPOD_PING_INTERVAL", "10000", 10.0),
        ("RUNPOD_PING_INTERVAL", "1", 0.001),
    ],
)
def test_ping_interval_ms_to_seconds(var: str, raw: str, seconds: float) -> None:
    assert build(runpod_worker(**{var: raw})).ping_interval == pytest.approx(seconds)


def test_waverless_ping_interval() -> None:
    cfg = build(waverless_worker(WAVERLESS_PING_INTERVAL="750"))
    assert cfg.ping_interval == pytest.approx(0.75)


@pytest.mark.parametrize("raw", ["abc", "0", "-100", "1e", "ten"])
def test_bad_ping_interval_names_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(runpod_worker(RUNPOD_PING_INTERVAL=raw))
    assert info.value.source == "RUNPOD_PING_INTERVAL"
    assert "RUNPOD_PING_INTERVAL" in str(info.value)


# -- log level ---------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, level",
    [
        ("NOTSET", logging.NOTSET),
        ("TRACE", TRACE),
        ("trace", TRACE),
        ("DEBUG", logging.DEBUG),
        ("INFO", logging.INFO),
        ("WARN", logging.WARNING),
        ("WARNING", logging.WARNING),
        ("warning", logging.WARNING),
        ("ERROR", logging.ERROR),
        (" info ", logging.INFO),
    ],
)
def test_log_level_names(raw: str, level: int) -> None:
    assert build({"RUNPOD_LOG_LEVEL": raw}).log_level == level


def test_log_level_default_info() -> None:
    assert build({}).log_level == logging.INFO


def test_debug_level_fallback() -> None:
    assert build({"RUNPOD_DEBUG_LEVEL": "DEBUG"}).log_level == logging.DEBUG


def test_log_level_wins_over_debug_level() -> None:
    env = {"RUNPOD_LOG_LEVEL": "ERROR", "RUNPOD_DEBUG_LEVEL": "DEBUG"}
    assert build(env).log_level == logging.ERROR


def test_waverless_log_level() -> None:
    assert build(waverless_worker(WAVERLESS_LOG_LEVEL="WARN")).log_level == logging.WARNING


@pytest.mark.parametrize("flag", ["--rp_log_level", "--waverless_log_level"])
def test_log_level_flag_wins_over_env(flag: str) -> None:
    assert build({"RUNPOD_LOG_LEVEL": "ERROR"}, [flag, "DEBUG"]).log_level == logging.DEBUG


@pytest.mark.parametrize(
    "environ, var",
    [
        ({"RUNPOD_LOG_LEVEL": "LOUD"}, "RUNPOD_LOG_LEVEL"),
        (waverless_worker(WAVERLESS_LOG_LEVEL="verbose"), "WAVERLESS_LOG_LEVEL"),
    ],
)
def test_bad_log_level_names_the_variable(environ: Dict[str, str], var: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(environ)
    assert info.value.source == var
    assert var in str(info.value) and "INFO" in str(info.value)


def test_bad_debug_level_names_debug_level() -> None:
    with pytest.raises(ConfigError) as info:
        build({"RUNPOD_DEBUG_LEVEL": "LOUD"})
    assert info.value.source == "RUNPOD_DEBUG_LEVEL"


def test_bad_log_level_flag_is_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        build({}, ["--rp_log_level", "LOUD"])
    assert "log_level" in str(info.value.source)


def test_bad_log_level_raises_at_start_not_later() -> None:
    with pytest.raises(ConfigError, match="RUNPOD_LOG_LEVEL"):
        serverless.start(handler, argv=[], environ={"RUNPOD_LOG_LEVEL": "LOUD"})


# -- mode selection ----------------------------------------------------------


@pytest.mark.parametrize(
    "environ, argv, mode",
    [
        ({}, [], "test"),
        (runpod_worker(), [], "worker"),
        (waverless_worker(), [], "worker"),
        (runpod_worker(), ["--test_input", '{"input": {}}'], "test"),
        (runpod_worker(), ["--rp_serve_api"], "api"),
        ({}, ["--waverless_serve_api"], "api"),
        (runpod_worker(RUNPOD_REALTIME_PORT="8080"), [], "realtime"),
        ({"RUNPOD_REALTIME_PORT": "0"}, [], "test"),
        ({"RUNPOD_REALTIME_PORT": "8080"}, ["--rp_serve_api"], "api"),
        ({"RUNPOD_REALTIME_PORT": "8080"}, ["--test_input", "{}"], "test"),
    ],
)
def test_mode_selection(environ: Dict[str, str], argv: List[str], mode: str) -> None:
    assert build(environ, argv).mode == mode


def test_realtime_port_and_concurrency() -> None:
    cfg = build({"RUNPOD_REALTIME_PORT": "8080", "RUNPOD_REALTIME_CONCURRENCY": "3"})
    assert (cfg.mode, cfg.realtime_port, cfg.realtime_concurrency) == ("realtime", 8080, 3)
    cfg = build(waverless_worker(WAVERLESS_REALTIME_PORT="9090"))
    assert (cfg.mode, cfg.realtime_port) == ("realtime", 9090)


def test_bad_realtime_port_names_variable() -> None:
    with pytest.raises(ConfigError, match="RUNPOD_REALTIME_PORT"):
        build({"RUNPOD_REALTIME_PORT": "http"})


def test_worker_mode_needs_done_url() -> None:
    with pytest.raises(ConfigError) as info:
        build({"RUNPOD_WEBHOOK_GET_JOB": RUNPOD_TAKE})
    assert info.value.source == "RUNPOD_WEBHOOK_POST_OUTPUT"


def test_test_output_needs_test_input() -> None:
    with pytest.raises(ConfigError, match="--test_output"):
        build({}, ["--test_output", "{}"])


def test_flags_land_in_config() -> None:
    cfg = build(
        {},
        [
            "--test_input",
            '{"input": 1}',
            "--test_output",
            "1",
            "--rp_api_host",
            "0.0.0.0",
            "--rp_api_port",
            "8123",
            "--rp_api_concurrency",
            "2",
            "--rp_debugger",
        ],
    )
    assert cfg.test_input == '{"input": 1}'
    assert cfg.test_output == "1"
    assert (cfg.api_host, cfg.api_port, cfg.api_concurrency) == ("0.0.0.0", 8123, 2)
    assert cfg.debugger is True


# -- the start() dict --------------------------------------------------------


def test_start_keys_land_in_config() -> None:
    def modifier(current: int) -> int:
        return current

    cfg = build(
        runpod_worker(),
        concurrency_modifier=modifier,
        return_aggregate_stream=True,
        refresh_worker=True,
    )
    assert cfg.handler is handler
    assert cfg.concurrency_modifier is modifier
    assert cfg.return_aggregate_stream is True and cfg.refresh_worker is True


def test_start_key_defaults() -> None:
    cfg = build(runpod_worker())
    assert cfg.concurrency_modifier is None
    assert cfg.return_aggregate_stream is False and cfg.refresh_worker is False


def test_unknown_start_keys_warn() -> None:
    with pytest.warns(UserWarning, match="unknown config keys.*'colour'"):
        build(runpod_worker(), colour="blue")


def test_known_keys_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build(runpod_worker(), return_aggregate_stream=True, drain_timeout=1)


def test_concurrency_controller_warns() -> None:
    with pytest.warns(UserWarning, match="concurrency_controller"):
        cfg = build(runpod_worker(), concurrency_controller=lambda: True)
    assert cfg.concurrency_modifier is None


@pytest.mark.parametrize("bad", [None, "handler", 42, {"a": 1}])
def test_non_callable_handler_is_config_error(bad: Any) -> None:
    with pytest.raises(ConfigError, match="handler"):
        Config.from_env({}, [], {"handler": bad})


def test_missing_handler_is_config_error() -> None:
    with pytest.raises(ConfigError, match="handler"):
        Config.from_env({}, [], {})


def test_non_mapping_start_config_is_config_error() -> None:
    with pytest.raises(ConfigError):
        Config.from_env({}, [], handler)  # type: ignore[arg-type]


def test_non_callable_concurrency_modifier_is_config_error() -> None:
    with pytest.raises(ConfigError, match="concurrency_modifier"):
        build({}, concurrency_modifier=4)


def test_start_accepts_a_bare_callable(
    capsys: pytest.CaptureFixture[str], restore_wavespeed_logging: None
) -> None:
    def shout(job: Dict[str, Any]) -> Dict[str, Any]:
        return {"text": job["input"]["prompt"].upper()}

    with pytest.raises(SystemExit) as info:
        serverless.start(shout, argv=["--test_input", '{"input": {"prompt": "hi"}}'], environ={})
    assert info.value.code == 0
    assert '"text": "HI"' in capsys.readouterr().out


def test_start_bare_callable_non_callable_rejected() -> None:
    with pytest.raises(ConfigError):
        serverless.start(42, argv=[], environ={})  # type: ignore[arg-type]


# -- health port -------------------------------------------------------------


@pytest.mark.parametrize(
    "environ, argv, port",
    [
        (waverless_worker(), [], 8000),
        (runpod_worker(), [], None),
        (runpod_worker(), ["--health_port", "9100"], 9100),
        (runpod_worker(), ["--waverless_health_port", "9101"], 9101),
        (runpod_worker(WAVESPEED_HEALTH_PORT="9200"), [], 9200),
        (runpod_worker(WAVESPEED_HEALTH_PORT="9200"), ["--health_port", "9300"], 9300),
        (waverless_worker(WAVESPEED_HEALTH_PORT="0"), [], None),
        (waverless_worker(), ["--health_port", "0"], None),
        (waverless_worker(WAVESPEED_HEALTH_PORT=""), [], 8000),
    ],
)
def test_health_port(environ: Dict[str, str], argv: List[str], port: Optional[int]) -> None:
    assert build(environ, argv).health_port == port


def test_bad_health_port_names_variable() -> None:
    with pytest.raises(ConfigError) as info:
        build(runpod_worker(WAVESPEED_HEALTH_PORT="eighty"))
    assert info.value.source == "WAVESPEED_HEALTH_PORT"


# -- drain / job timeout / result deadline / spool --------------------------


def test_timeout_defaults() -> None:
    cfg = build(runpod_worker())
    # 25 s leaves room to exit inside Kubernetes' 30 s grace period
    assert (cfg.drain_timeout, cfg.job_timeout, cfg.result_deadline) == (25.0, None, 60.0)
    assert cfg.sources["drain_timeout"] == "default"


def test_timeouts_from_env() -> None:
    env = runpod_worker(
        WAVESPEED_DRAIN_TIMEOUT="5",
        WAVESPEED_JOB_TIMEOUT="12.5",
        WAVESPEED_RESULT_DEADLINE="3",
    )
    cfg = build(env)
    assert (cfg.drain_timeout, cfg.job_timeout, cfg.result_deadline) == (5.0, 12.5, 3.0)


def test_timeouts_from_start_dict() -> None:
    cfg = build(runpod_worker(), drain_timeout=2, job_timeout=7, result_deadline=1.5)
    assert (cfg.drain_timeout, cfg.job_timeout, cfg.result_deadline) == (2.0, 7.0, 1.5)
    assert cfg.sources["job_timeout"] == "start() key 'job_timeout'"


def test_env_wins_over_start_dict_for_timeouts() -> None:
    # The operator's deployment setting beats the value baked into the code.
    env = runpod_worker(WAVESPEED_DRAIN_TIMEOUT="5", WAVESPEED_JOB_TIMEOUT="12")
    cfg = build(env, drain_timeout=2, job_timeout=7, result_deadline=1.5)
    assert (cfg.drain_timeout, cfg.job_timeout, cfg.result_deadline) == (5.0, 12.0, 1.5)
    assert cfg.sources["drain_timeout"] == "WAVESPEED_DRAIN_TIMEOUT"
    assert cfg.sources["result_deadline"] == "start() key 'result_deadline'"


def test_empty_env_and_none_start_value_count_as_unset() -> None:
    cfg = build(runpod_worker(WAVESPEED_DRAIN_TIMEOUT=""), drain_timeout=3)
    assert (cfg.drain_timeout, cfg.sources["drain_timeout"]) == (3.0, "start() key 'drain_timeout'")
    cfg = build(runpod_worker(), drain_timeout=None, async_mode=None)
    assert (cfg.drain_timeout, cfg.async_mode) == (25.0, "shared")


def test_job_timeout_zero_means_none() -> None:
    assert build(runpod_worker(WAVESPEED_JOB_TIMEOUT="0")).job_timeout is None
    assert build(runpod_worker(), job_timeout=0).job_timeout is None


@pytest.mark.parametrize(
    "environ, user, source",
    [
        ({"WAVESPEED_DRAIN_TIMEOUT": "-1"}, {}, "WAVESPEED_DRAIN_TIMEOUT"),
        ({"WAVESPEED_JOB_TIMEOUT": "soon"}, {}, "WAVESPEED_JOB_TIMEOUT"),
        ({}, {"drain_timeout": "later"}, "drain_timeout"),
        ({}, {"result_deadline": float("nan")}, "result_deadline"),
        ({}, {"job_timeout": True}, "job_timeout"),
        ({"WAVESPEED_RESULT_DEADLINE": "inf"}, {}, "WAVESPEED_RESULT_DEADLINE"),
    ],
)
def test_bad_timeouts_name_their_source(
    environ: Dict[str, str], user: Dict[str, Any], source: str
) -> None:
    with pytest.raises(ConfigError) as info:
        build(runpod_worker(**environ), **user)
    assert source in str(info.value)


def test_spool_dir_from_env_and_default(tmp_path: Any) -> None:
    assert build({"WAVESPEED_SPOOL_DIR": str(tmp_path)}).spool_dir == str(tmp_path)
    default = build({"XDG_CACHE_HOME": str(tmp_path)}).spool_dir
    assert default == str(tmp_path / "wavespeed" / "spool")


def test_config_is_frozen() -> None:
    cfg = build(runpod_worker())
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.worker_id = "other"  # type: ignore[misc]


def test_from_env_does_not_touch_the_callers_mappings() -> None:
    env = runpod_worker()
    argv = ["--rp_debugger", "--users-own-flag"]
    user = {"handler": handler, "return_aggregate_stream": True}
    snapshot = (dict(env), list(argv), dict(user))
    Config.from_env(env, argv, user)
    assert (env, argv, user) == snapshot


def test_spool_dir_is_made_absolute_when_built(tmp_path: Any, monkeypatch: Any) -> None:
    # A handler's os.chdir must not move the spool of a relative WAVESPEED_SPOOL_DIR.
    monkeypatch.chdir(tmp_path)
    cfg = build({"WAVESPEED_SPOOL_DIR": "spool"})
    monkeypatch.chdir(tmp_path.parent)
    assert cfg.spool_dir == str(tmp_path / "spool")
    assert Config(handler=handler, spool_dir="rel").spool_dir == str(tmp_path.parent / "rel")


# -- async mode and the local API's settings ---------------------------------


def test_async_mode() -> None:
    assert build({}).async_mode == "shared"
    assert build({}, async_mode="thread").async_mode == "thread"
    assert build({"WAVESPEED_ASYNC_MODE": " Thread "}).async_mode == "thread"
    assert build({"WAVESPEED_ASYNC_MODE": "shared"}, async_mode="thread").async_mode == "shared"


@pytest.mark.parametrize(
    "environ, user, source",
    [
        ({"WAVESPEED_ASYNC_MODE": "process"}, {}, "WAVESPEED_ASYNC_MODE"),
        ({}, {"async_mode": "per-job"}, "start() key 'async_mode'"),
        ({}, {"async_mode": 1}, "start() key 'async_mode'"),
    ],
)
def test_bad_async_mode_names_its_source(
    environ: Dict[str, str], user: Dict[str, Any], source: str
) -> None:
    with pytest.raises(ConfigError) as info:
        build(environ, **user)
    assert info.value.source == source
    assert "shared" in str(info.value) and "thread" in str(info.value)


@pytest.mark.parametrize(
    "raw, value",
    [("1", True), ("true", True), ("YES", True), ("on", True), ("0", False), ("False", False),
     ("no", False), ("off", False)],
)
def test_allow_private_webhooks(raw: str, value: bool) -> None:
    assert build({"WAVESPEED_ALLOW_PRIVATE_WEBHOOKS": raw}).allow_private_webhooks is value


def test_bad_yes_no_variable_names_it() -> None:
    assert build({}).allow_private_webhooks is False
    with pytest.raises(ConfigError) as info:
        build({"WAVESPEED_ALLOW_PRIVATE_WEBHOOKS": "maybe"})
    assert info.value.source == "WAVESPEED_ALLOW_PRIVATE_WEBHOOKS"


def test_api_settings_from_env() -> None:
    cfg = build(
        {"WAVESPEED_API_MAX_BODY": "2048", "WAVESPEED_API_ALLOWED_HOSTS": " a.test,,b.test , "}
    )
    assert (cfg.api_max_body, cfg.api_allowed_hosts) == (2048, ("a.test", "b.test"))
    assert build({}).api_max_body == 10 * 1024 * 1024


@pytest.mark.parametrize("raw", ["1.5", "0", "-1", "ten"])
def test_bad_api_max_body_names_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        build({"WAVESPEED_API_MAX_BODY": raw})
    assert info.value.source == "WAVESPEED_API_MAX_BODY"


# -- one table, one order: flag > environment > start() key > default --------

# Valid raw values for each setting read from more than one place, with what
# each becomes: one for each of its sources, in the order flag, environment,
# start() key. A setting given a second source must get a row here.
SAMPLES: Dict[str, List[Any]] = {
    "log_level": [("ERROR", logging.ERROR), ("DEBUG", logging.DEBUG)],
    "health_port": [("9001", 9001), ("9002", 9002)],
    "drain_timeout": [("5", 5.0), (2, 2.0)],
    "job_timeout": [("12", 12.0), (7, 7.0)],
    "result_deadline": [("3", 3.0), (1.5, 1.5)],
    "async_mode": [("thread", "thread"), ("shared", "shared")],
    "api_max_body": [("100", 100), ("200", 200)],
    "api_allowed_hosts": [("a.test", ("a.test",)), ("b.test", ("b.test",))],
}


def _inputs(setting: Any) -> List[Any]:
    """``(expected source, argv, environ, start dict)`` for each source the setting has."""
    inputs = []
    samples = iter(SAMPLES[setting.name])  # KeyError: add the new setting to SAMPLES
    if setting.flags:
        raw, value = next(samples)
        flag = setting.flags[-1]
        inputs.append((flag, value, {"argv": [flag, raw]}))
    if setting.env.all():
        raw, value = next(samples)
        name = setting.env.on("runpod")[0]
        inputs.append((name, value, {"environ": {name: raw}}))
    if setting.start_key:
        raw, value = next(samples)
        source = f"start() key {setting.start_key!r}"
        inputs.append((source, value, {"user": {setting.start_key: raw}}))
    return inputs


MULTI_SOURCE = [s for s in SETTINGS if (bool(s.flags) + bool(s.env.all()) + bool(s.start_key)) > 1]


@pytest.mark.parametrize("setting", MULTI_SOURCE, ids=lambda s: s.name)
def test_precedence_is_the_same_for_every_setting(setting: Any) -> None:
    inputs = _inputs(setting)
    # With every source set, the first wins; take it away and the next one wins.
    while inputs:
        given: Dict[str, Any] = {"argv": [], "environ": {}, "user": {}}
        for _source, _value, part in inputs:
            given.update(part)
        cfg = build(given["environ"], given["argv"], **given["user"])
        source, value, _part = inputs.pop(0)
        assert (getattr(cfg, setting.name), cfg.sources[setting.name]) == (value, source)
    assert build({}).sources[setting.name] == "default"


def test_a_shadowed_source_is_not_read() -> None:
    # First match wins: a bad variable under a flag is never parsed.
    cfg = build(runpod_worker(WAVESPEED_HEALTH_PORT="eighty"), ["--health_port", "9100"])
    assert cfg.health_port == 9100


def test_sources_name_the_variable_that_was_set() -> None:
    cfg = build(runpod_worker(RUNPOD_DEBUG_LEVEL="DEBUG", RUNPOD_WEBHOOK_JOB_STREAM="http://s/$ID"))
    assert cfg.sources["log_level"] == "RUNPOD_DEBUG_LEVEL"
    assert cfg.sources["job_stream_url"] == "RUNPOD_WEBHOOK_JOB_STREAM"
    assert cfg.sources["worker_id"] == "RUNPOD_POD_ID"
    assert cfg.sources["handler"] == "start() key 'handler'"
    assert cfg.sources["hostname"] == "default"


def test_every_start_key_of_the_table_is_accepted_without_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build(runpod_worker(), async_mode="thread", job_timeout=5, result_deadline=9,
              refresh_worker=False, return_aggregate_stream=False, concurrency_modifier=None)


def test_the_table_and_config_name_the_same_fields_and_defaults() -> None:
    table = {s.name: s for s in SETTINGS if s.name != "serve_api"}  # it only picks the mode
    derived = {"mode", "platform", "json_logs", "fetch_timeout", "sources", "handler_log_level", "started"}
    config_fields = {f.name: f for f in dataclasses.fields(Config)}
    assert set(table) == set(config_fields) - derived
    # A Config built directly (as tests do) gets the same defaults as start().
    for name, setting in table.items():
        plain = setting.default is not REQUIRED and not isinstance(setting.default, Computed)
        if plain:
            assert config_fields[name].default == setting.default, name


def test_readme_tables_match_the_settings_table() -> None:
    root = pathlib.Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("config_docs", root / "tools" / "config_docs.py")
    assert spec is not None and spec.loader is not None
    docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(docs)
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert docs.stale_tables(readme) == [], "run: python tools/config_docs.py --write"
    names = [m.group("name") for m in docs.MARKER.finditer(readme)]
    assert sorted(names) == sorted(docs.TABLES)  # every table is in the README once
