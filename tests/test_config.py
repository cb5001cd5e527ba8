"""Unit tests of the configuration: env (both platforms), argv and the start() dict.

Every test passes its own environ dict, so nothing here depends on the
variables of the machine running the tests.
"""

import dataclasses
import logging
import re
import warnings
from typing import Any, Dict, Iterator, List, Mapping, Optional

import pytest

import wavespeed.serverless as serverless
from wavespeed.serverless.config import TRACE, Config
from wavespeed.serverless.errors import ConfigError

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
    assert (cfg.drain_timeout, cfg.job_timeout) == (30.0, None)
    assert cfg.result_deadline > 0


def test_timeouts_from_env() -> None:
    env = runpod_worker(
        WAVESPEED_DRAIN_TIMEOUT="5",
        WAVESPEED_JOB_TIMEOUT="12.5",
        WAVESPEED_RESULT_DEADLINE="3",
    )
    cfg = build(env)
    assert (cfg.drain_timeout, cfg.job_timeout, cfg.result_deadline) == (5.0, 12.5, 3.0)


def test_timeouts_from_start_dict_win_over_env() -> None:
    env = runpod_worker(WAVESPEED_DRAIN_TIMEOUT="5", WAVESPEED_JOB_TIMEOUT="12")
    cfg = build(env, drain_timeout=2, job_timeout=7, result_deadline=1.5)
    assert (cfg.drain_timeout, cfg.job_timeout, cfg.result_deadline) == (2.0, 7.0, 1.5)


def test_job_timeout_zero_means_none() -> None:
    assert build(runpod_worker(WAVESPEED_JOB_TIMEOUT="0")).job_timeout is None
    assert build(runpod_worker(), job_timeout=0).job_timeout is None


@pytest.mark.parametrize(
    "environ, user, source",
    [
        ({"WAVESPEED_DRAIN_TIMEOUT": "-1"}, {}, "WAVESPEED_DRAIN_TIMEOUT"),
        ({"WAVESPEED_JOB_TIMEOUT": "soon"}, {}, "WAVESPEED_JOB_TIMEOUT"),
        ({}, {"drain_timeout": "later"}, "drain_timeout"),
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
