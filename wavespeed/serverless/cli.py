"""Command-line flags read by ``start()``, generated from the settings table.

Both spellings are accepted (``--waverless_*`` and runpod's ``--rp_*``,
PROTOCOL §13). Unknown arguments are left alone for the user's own parser, so
this uses ``parse_known_args`` and never claims ``-h``/``--help``: a user's
script keeps its own help. ``python -m wavespeed.serverless --help`` prints
every flag and variable with its default, from the same table ``start()``
reads.

Parsing only shapes strings: it records which spelling gave which raw value,
and ``settings.resolve`` parses the value, so a bad one raises a
``ConfigError`` naming the flag exactly as typed.
"""

import argparse
from collections.abc import Sequence
from typing import Any, Optional

from .config import SETTINGS
from .settings import Setting

# setting name -> (the flag spelling used, its raw value: text, or True for a switch)
Flags = dict[str, tuple[str, Any]]


class _Record(argparse.Action):
    """Store ``(spelling, raw value)`` under the setting's name; the last one given wins."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: Optional[str] = None,
    ) -> None:
        raw = True if self.nargs == 0 else values
        setattr(namespace, self.dest, (option_string or self.option_strings[0], raw))


def flag_help(setting: Setting) -> str:
    """A flag's help line: what it does, its default and the variable that also sets it."""
    notes = []
    if not setting.kind.switch and (setting.default is not None or setting.default_doc):
        notes.append(f"default: {setting.describe_default()}")
    names = setting.env.all()
    if names:
        notes.append("env " + " / ".join(names))
    # argparse treats % as a format character in help
    text = setting.help.replace("%", "%%").replace("`", "")
    return f"{text} ({'; '.join(notes)})" if notes else text


def environment_help() -> str:
    """The variables ``start()`` reads, one per line, for the ``--help`` epilog."""
    lines = ["environment variables (RunPod names, or Waverless names when any is set):"]
    for setting in SETTINGS:
        if setting.env.all() and not setting.flags:
            names = " / ".join(setting.env.all())
            notes = "default: " + setting.describe_default().replace("`", "")
            if setting.start_key:
                notes += f"; start() key {setting.start_key}"
            lines.append(f"  {names}\n      {setting.help.replace('`', '')} ({notes})")
    return "\n".join(lines)


def build_parser(add_help: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python your_handler.py",
        description=(
            "Flags read by wavespeed.serverless.start(). Without a platform environment\n"
            "(RUNPOD_WEBHOOK_GET_JOB or WAVERLESS_WEBHOOK_GET_JOB) the handler runs once\n"
            "on --test_input or ./test_input.json. A flag beats an environment variable,\n"
            "which beats a start() key, which beats the default."
        ),
        add_help=add_help,
        allow_abbrev=False,  # never swallow a prefix of the user's own flags
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for setting in SETTINGS:
        if not setting.flags:
            continue
        parser.add_argument(
            *setting.flags,
            dest=setting.name,
            action=_Record,
            nargs=0 if setting.kind.switch else None,
            metavar=None if setting.kind.switch else setting.kind.metavar,
            default=argparse.SUPPRESS,  # absent flags stay absent: env and defaults decide
            help=flag_help(setting),
        )
    return parser


def parse_args(argv: Sequence[str]) -> Flags:
    """Our flags out of argv, leaving the rest: ``{setting: (spelling, raw value)}``."""
    parser = build_parser()
    try:
        namespace, _rest = parser.parse_known_args(list(argv))
    except SystemExit as exc:  # argparse exits on a flag without its value; say so
        from .errors import ConfigError

        raise ConfigError("invalid command-line flag (see the message above)", "argv") from exc
    return dict(vars(namespace))


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m wavespeed.serverless --help``: print the flags."""
    parser = build_parser(add_help=True)
    parser.epilog = environment_help()
    parser.parse_args(argv)
    parser.print_help()
    return 0
