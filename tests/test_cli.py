"""Unit tests of the command-line flags read by start() (PROTOCOL §13).

The flags are generated from the settings table; these tests hold the
public spellings fixed and check that ``--help`` lists what is really read.
"""

import os
import subprocess
import sys
from typing import Any, Dict, List

import pytest

from wavespeed.serverless.cli import build_parser, parse_args
from wavespeed.serverless.config import Config
from wavespeed.serverless.errors import ConfigError
from wavespeed.serverless.config import SETTINGS

pytestmark = pytest.mark.timeout(60)

MIB = 1024 * 1024


def handler(job: Dict[str, Any]) -> Any:
    return job["input"]


def build(argv: List[str], environ: Any = None) -> Config:
    return Config.from_env(dict(environ or {}), argv, {"handler": handler})


@pytest.mark.parametrize(
    "argv, field, value",
    [
        (["--rp_api_host", "0.0.0.0"], "api_host", "0.0.0.0"),
        (["--waverless_api_host", "0.0.0.0"], "api_host", "0.0.0.0"),
        (["--rp_api_port", "8123"], "api_port", 8123),
        (["--waverless_api_port", "8123"], "api_port", 8123),
        (["--rp_api_concurrency", "4"], "api_concurrency", 4),
        (["--waverless_api_concurrency", "4"], "api_concurrency", 4),
        (["--rp_log_level", "DEBUG"], "log_level", 10),
        (["--waverless_log_level", "DEBUG"], "log_level", 10),
        (["--rp_debugger"], "debugger", True),
        (["--waverless_debugger"], "debugger", True),
        (["--health_port", "9000"], "health_port", 9000),
        (["--waverless_health_port", "9000"], "health_port", 9000),
        (["--test_input", '{"input": 1}'], "test_input", '{"input": 1}'),
        (["--rp_api_max_body", "1024"], "api_max_body", 1024),
        (["--waverless_api_max_body", "1024"], "api_max_body", 1024),
        (["--rp_api_allowed_hosts", "a.test, b.test"], "api_allowed_hosts", ("a.test", "b.test")),
        (["--waverless_api_allowed_hosts", "a.test"], "api_allowed_hosts", ("a.test",)),
        (["--rp_api_reload"], "api_reload", True),
        (["--waverless_api_reload"], "api_reload", True),
    ],
)
def test_both_spellings(argv: List[str], field: str, value: Any) -> None:
    cfg = build(argv)
    assert getattr(cfg, field) == value
    assert cfg.sources[field] == argv[0]  # the spelling as typed


def test_equals_form() -> None:
    cfg = build(["--rp_api_port=8124"])
    assert (cfg.api_port, cfg.sources["api_port"]) == (8124, "--rp_api_port")


@pytest.mark.parametrize("flag", ["--rp_serve_api", "--waverless_serve_api"])
def test_serve_api_selects_api_mode(flag: str) -> None:
    assert build([flag]).mode == "api"


def test_test_output_with_test_input() -> None:
    cfg = build(["--test_input", "{}", "--test_output", "[1]"])
    assert (cfg.test_input, cfg.test_output) == ("{}", "[1]")


def test_defaults() -> None:
    cfg = build([])
    assert cfg.test_input is None and cfg.test_output is None
    assert cfg.mode == "test" and cfg.debugger is False and cfg.api_reload is False
    assert (cfg.api_host, cfg.api_port, cfg.api_concurrency) == ("localhost", 8000, 1)
    assert (cfg.api_max_body, cfg.api_allowed_hosts) == (10 * MIB, ())
    assert cfg.log_level == 20 and cfg.health_port is None
    assert cfg.sources["api_port"] == "default"


def test_last_flag_wins_across_spellings() -> None:
    cfg = build(["--rp_api_port", "1", "--waverless_api_port", "2"])
    assert (cfg.api_port, cfg.sources["api_port"]) == (2, "--waverless_api_port")


def test_parse_args_records_the_spelling_and_raw_text() -> None:
    assert parse_args(["--rp_api_port", "80", "--waverless_debugger"]) == {
        "api_port": ("--rp_api_port", "80"),
        "debugger": ("--waverless_debugger", True),
    }


def test_unknown_args_are_left_alone() -> None:
    argv = ["--model", "big", "input.txt", "--rp_debugger", "-v", "--my-flag=3"]
    _flags, rest = build_parser().parse_known_args(argv)
    assert rest == ["--model", "big", "input.txt", "-v", "--my-flag=3"]
    # and start()'s parsing does not choke on them either
    assert build(argv).debugger is True


def test_unknown_args_do_not_break_config() -> None:
    cfg = Config.from_env({}, ["--users-flag", "x", "--rp_api_port", "9001"], {"handler": print})
    assert cfg.api_port == 9001


@pytest.mark.parametrize(
    "argv",
    [
        ["--rp_debug"],
        ["--rp_serve"],
        ["--test_in", '{"input": 1}'],
        ["--rp_api_p", "9"],
        ["--waverless_log", "DEBUG"],
        ["--rp_api_max", "9"],
    ],
)
def test_no_abbreviation_matching(argv: List[str]) -> None:
    _flags, rest = build_parser().parse_known_args(argv)
    assert rest == argv
    assert parse_args(argv) == {}


def test_help_is_left_for_the_users_parser() -> None:
    # parse_args() must not print our help and exit on the user's --help / -h.
    assert parse_args(["--help", "-h"]) == {}


@pytest.mark.parametrize(
    "argv",
    [
        ["--rp_api_port", "eighty"],
        ["--waverless_api_port", "70000"],
        ["--rp_api_concurrency", "x"],
        ["--waverless_api_concurrency", "0"],
        ["--health_port", "p"],
        ["--waverless_api_max_body", "big"],
        ["--rp_api_max_body", "0"],
        ["--rp_log_level", "LOUD"],
    ],
)
def test_bad_flag_value_names_the_flag_as_typed(argv: List[str]) -> None:
    with pytest.raises(ConfigError) as info:
        build(argv)
    assert info.value.source == argv[0]
    assert str(info.value).startswith(argv[0]) and repr(argv[1]) in str(info.value)


def test_flag_without_its_value_is_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError) as info:
        build(["--rp_api_port"])
    assert info.value.source == "argv"
    assert "--rp_api_port" in capsys.readouterr().err  # argparse's own message names it


def test_every_flag_has_a_waverless_spelling() -> None:
    local_only = {"test_input", "test_output"}  # runpod's names, with no prefix
    for setting in SETTINGS:
        if setting.flags and setting.name not in local_only:
            assert any(f.startswith("--waverless_") for f in setting.flags), setting.name


def test_every_flag_spelling_is_read() -> None:
    # Every spelling in the table reaches its setting (one argv per spelling).
    for setting in SETTINGS:
        for spelling in setting.flags:
            if setting.kind.switch:
                assert parse_args([spelling])[setting.name] == (spelling, True)
            else:
                assert parse_args([spelling, "7"])[setting.name] == (spelling, "7")


def test_module_help_lists_every_flag_and_variable() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "wavespeed.serverless", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(os.environ, COLUMNS="1000"),  # one line per flag: no wrapped defaults
    )
    assert proc.returncode == 0, proc.stderr
    # the public spellings, written out so a rename in the table fails here
    for flag in (
        "--test_input",
        "--test_output",
        "--rp_serve_api",
        "--waverless_serve_api",
        "--rp_api_host",
        "--rp_api_port",
        "--rp_api_concurrency",
        "--rp_api_max_body",
        "--rp_api_allowed_hosts",
        "--rp_api_reload",
        "--rp_log_level",
        "--waverless_log_level",
        "--rp_debugger",
        "--health_port",
        "WAVESPEED_HEALTH_PORT",
        "WAVESPEED_ASYNC_MODE",
        "WAVESPEED_ALLOW_PRIVATE_WEBHOOKS",
    ):
        assert flag in proc.stdout, flag
    # and everything the table reads, so --help cannot fall behind it
    for setting in SETTINGS:
        for name in setting.flags + setting.env.all():
            assert name in proc.stdout, name
        if setting.flags or setting.env.all():
            assert setting.describe_default().replace("`", "") in proc.stdout, setting.name
