"""Unit tests of the command-line flags read by start() (PROTOCOL §13)."""

import subprocess
import sys
from typing import Any, List

import pytest

from wavespeed.serverless.cli import build_parser, parse_args
from wavespeed.serverless.config import Config
from wavespeed.serverless.errors import ConfigError

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    "argv, dest, value",
    [
        (["--rp_serve_api"], "serve_api", True),
        (["--waverless_serve_api"], "serve_api", True),
        (["--rp_api_host", "0.0.0.0"], "api_host", "0.0.0.0"),
        (["--waverless_api_host", "0.0.0.0"], "api_host", "0.0.0.0"),
        (["--rp_api_port", "8123"], "api_port", 8123),
        (["--waverless_api_port", "8123"], "api_port", 8123),
        (["--rp_api_concurrency", "4"], "api_concurrency", 4),
        (["--waverless_api_concurrency", "4"], "api_concurrency", 4),
        (["--rp_log_level", "DEBUG"], "log_level", "DEBUG"),
        (["--waverless_log_level", "DEBUG"], "log_level", "DEBUG"),
        (["--rp_debugger"], "debugger", True),
        (["--waverless_debugger"], "debugger", True),
        (["--health_port", "9000"], "health_port", 9000),
        (["--waverless_health_port", "9000"], "health_port", 9000),
        (["--test_input", '{"input": 1}'], "test_input", '{"input": 1}'),
        (["--test_output", "[1]"], "test_output", "[1]"),
        (["--rp_api_port=8124"], "api_port", 8124),
    ],
)
def test_both_spellings(argv: List[str], dest: str, value: Any) -> None:
    assert getattr(parse_args(argv), dest) == value


def test_defaults() -> None:
    flags = parse_args([])
    assert flags.test_input is None and flags.test_output is None
    assert flags.serve_api is False and flags.debugger is False
    assert (flags.api_host, flags.api_port, flags.api_concurrency) == ("localhost", 8000, 1)
    assert flags.log_level is None and flags.health_port is None


def test_unknown_args_are_left_alone() -> None:
    argv = ["--model", "big", "input.txt", "--rp_debugger", "-v", "--my-flag=3"]
    flags, rest = build_parser().parse_known_args(argv)
    assert flags.debugger is True
    assert rest == ["--model", "big", "input.txt", "-v", "--my-flag=3"]
    # and start()'s parsing does not choke on them either
    assert parse_args(argv).debugger is True


def test_unknown_args_do_not_break_config() -> None:
    cfg = Config.from_env({}, ["--users-flag", "x", "--rp_api_port", "9001"], {"handler": print})
    assert cfg.api_port == 9001


@pytest.mark.parametrize(
    "argv, dest, default",
    [
        (["--rp_debug"], "debugger", False),
        (["--rp_serve"], "serve_api", False),
        (["--test_in", '{"input": 1}'], "test_input", None),
        (["--rp_api_p", "9"], "api_port", 8000),
        (["--waverless_log", "DEBUG"], "log_level", None),
    ],
)
def test_no_abbreviation_matching(argv: List[str], dest: str, default: Any) -> None:
    flags, rest = build_parser().parse_known_args(argv)
    assert getattr(flags, dest) == default
    assert rest == argv


def test_help_is_left_for_the_users_parser() -> None:
    # parse_args() must not print our help and exit on the user's --help / -h.
    flags = parse_args(["--help", "-h"])
    assert flags.serve_api is False


@pytest.mark.parametrize(
    "argv",
    [["--rp_api_port", "eighty"], ["--rp_api_concurrency", "x"], ["--health_port", "p"]],
)
def test_bad_flag_value_is_config_error(argv: List[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_args(argv)
    assert info.value.source == "argv"
    assert argv[0] in capsys.readouterr().err  # argparse's own message names the flag


def test_module_help_prints_the_flags() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "wavespeed.serverless", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    for flag in (
        "--test_input",
        "--test_output",
        "--rp_serve_api",
        "--waverless_serve_api",
        "--rp_api_host",
        "--rp_api_port",
        "--rp_api_concurrency",
        "--rp_log_level",
        "--waverless_log_level",
        "--rp_debugger",
        "--health_port",
        "WAVESPEED_HEALTH_PORT",
    ):
        assert flag in proc.stdout, flag
