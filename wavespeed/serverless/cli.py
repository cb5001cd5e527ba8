"""Command-line flags read by ``start()``.

Both spellings are accepted (``--waverless_*`` and runpod's ``--rp_*``).
Unknown arguments are left alone for the user's own parser, so this uses
``parse_known_args`` and never claims ``-h``/``--help``: a user's script keeps
its own help. ``python -m wavespeed.serverless --help`` prints this list.
"""

import argparse
from typing import List, Optional, Sequence


def build_parser(add_help: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python your_handler.py",
        description=(
            "Flags read by wavespeed.serverless.start(). Without a platform "
            "environment (RUNPOD_WEBHOOK_GET_JOB or WAVERLESS_WEBHOOK_GET_JOB) "
            "the handler runs once on --test_input or ./test_input.json."
        ),
        add_help=add_help,
        allow_abbrev=False,  # never swallow a prefix of the user's own flags
    )
    parser.add_argument(
        "--test_input",
        metavar="JSON",
        help='run one job locally and exit, e.g. \'{"input": {"prompt": "hi"}}\'',
    )
    parser.add_argument(
        "--test_output",
        metavar="JSON",
        help="with --test_input: exit 1 unless the result equals this JSON",
    )
    parser.add_argument(
        "--waverless_serve_api",
        "--rp_serve_api",
        dest="serve_api",
        action="store_true",
        help="serve the local HTTP API (Flask on waitress)",
    )
    parser.add_argument(
        "--waverless_api_host",
        "--rp_api_host",
        dest="api_host",
        default="localhost",
        help="local API host (default: localhost)",
    )
    parser.add_argument(
        "--waverless_api_port",
        "--rp_api_port",
        dest="api_port",
        type=int,
        default=8000,
        help="local API port (default: 8000)",
    )
    parser.add_argument(
        "--waverless_api_concurrency",
        "--rp_api_concurrency",
        dest="api_concurrency",
        type=int,
        default=1,
        help="jobs the local API runs at once (default: 1)",
    )
    parser.add_argument(
        "--waverless_api_reload",
        "--rp_api_reload",
        dest="api_reload",
        action="store_true",
        help=(
            "with --rp_serve_api: restart the local API when a .py file under the "
            "handler's folder changes (needs: pip install 'wavespeed[dev]')"
        ),
    )
    parser.add_argument(
        "--waverless_log_level",
        "--rp_log_level",
        dest="log_level",
        help="NOTSET, TRACE, DEBUG, INFO, WARN, WARNING or ERROR (default: INFO)",
    )
    parser.add_argument(
        "--waverless_debugger",
        "--rp_debugger",
        dest="debugger",
        action="store_true",
        help="add handler timing to each output",
    )
    parser.add_argument(
        "--waverless_health_port",
        "--health_port",
        dest="health_port",
        type=int,
        default=None,
        help=(
            "worker mode: serve GET /health on this port; 0 turns it off "
            "(default: 8000 on Waverless, off on RunPod; env WAVESPEED_HEALTH_PORT)"
        ),
    )
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse our flags out of argv, leaving the rest untouched."""
    parser = build_parser()
    try:
        flags, _rest = parser.parse_known_args(list(argv))
    except SystemExit as exc:  # argparse exits on a bad value; say which
        from .errors import ConfigError

        raise ConfigError("invalid command-line flag (see the message above)", "argv") from exc
    return flags


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m wavespeed.serverless --help``: print the flags."""
    parser = build_parser(add_help=True)
    parser.epilog = (
        "Environment: see the README's table (RUNPOD_* or WAVERLESS_* names, "
        "WAVESPEED_HEALTH_PORT, WAVESPEED_DRAIN_TIMEOUT, WAVESPEED_JOB_TIMEOUT, "
        "WAVESPEED_RESULT_DEADLINE, WAVESPEED_SPOOL_DIR)."
    )
    parser.parse_args(argv)
    parser.print_help()
    return 0
