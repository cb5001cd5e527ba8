"""The README's configuration tables, generated from the settings table.

    python tools/config_docs.py           # print the tables
    python tools/config_docs.py --write   # rewrite them in README.md
    python tools/config_docs.py --check   # exit 1 when README.md is out of date

Each table sits in README.md between ``<!-- config-table: NAME -->`` and
``<!-- /config-table -->``; the text around the markers is written by hand.
``tests/test_config.py`` runs the check, so a setting added to
``SETTINGS`` (``wavespeed/serverless/config.py``) without ``--write`` fails the suite.
"""

import argparse
import os
import re
import sys
from typing import Callable, Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")

sys.path.insert(0, ROOT)

from wavespeed.serverless.config import LEGACY_START_KEYS, SETTINGS  # noqa: E402
from wavespeed.serverless.settings import REQUIRED, Computed, Setting  # noqa: E402

MARKER = re.compile(
    r"(<!-- config-table: (?P<name>[a-z-]+) -->\n)(?P<body>.*?)(<!-- /config-table -->)",
    re.S,
)


def _code(names: Sequence[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)


def _also(setting: Setting, skip_env: bool = False, skip_flags: bool = False) -> str:
    """The other places a setting is read from, for a table's last column."""
    parts = []
    if setting.flags and not skip_flags:
        parts.append(_code(setting.flags))
    if setting.env.all() and not skip_env:
        parts.append(_code(setting.env.all()))
    if setting.start_key:
        parts.append(f"start() key `{setting.start_key}`")
    return "; ".join(parts)


def _table(header: Sequence[str], rows: List[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _default(setting: Setting) -> str:
    """A literal default in code style; a description (none, off, ...) as text."""
    text = setting.describe_default()
    literal = (
        setting.default_doc is None
        and setting.default not in (None, (), REQUIRED)
        and not isinstance(setting.default, (bool, Computed))
    )
    return f"`{text}`" if literal else text


def start_keys() -> str:
    rows: List[Sequence[str]] = []
    for s in SETTINGS:
        if s.start_key:
            env = _code(s.env.all()) if s.env.all() else ""
            rows.append((f"`{s.start_key}`", _default(s), env, s.help))
    for key, why in LEGACY_START_KEYS.items():
        rows.append((f"`{key}`", "", "", f"legacy runpod key, ignored with a warning: {why}"))
    return _table(("key", "default", "variable (beats the key)", "meaning"), rows)


def platform_variables() -> str:
    rows: List[Sequence[str]] = []
    for s in SETTINGS:
        if s.env.all() and not s.env.own:
            purpose = s.help
            if s.describe_default() != "none":
                purpose += f" (default {s.describe_default()})"
            if s.flags:
                purpose += f"; flag {_code(s.flags)} beats it"
            rows.append((purpose, _code(s.env.runpod), _code(s.env.waverless)))
    return _table(("purpose", "RunPod", "Waverless"), rows)


def own_variables() -> str:
    rows: List[Sequence[str]] = []
    for s in SETTINGS:
        if s.env.own:
            rows.append((_code(s.env.all()), _default(s), s.help, _also(s, skip_env=True)))
    return _table(("variable", "default", "meaning", "also set by"), rows)


def flags() -> str:
    rows: List[Sequence[str]] = []
    for s in SETTINGS:
        if s.flags:
            default = "" if s.kind.switch else _default(s)
            rows.append((_code(s.flags), default, s.help, _also(s, skip_flags=True)))
    return _table(("flag (every spelling)", "default", "meaning", "also set by"), rows)


TABLES: Dict[str, Callable[[], str]] = {
    "start-keys": start_keys,
    "platform-variables": platform_variables,
    "own-variables": own_variables,
    "flags": flags,
}


def render(text: str) -> str:
    """``text`` with every marked table regenerated; unknown names are an error."""

    def replace(match: "re.Match[str]") -> str:
        name = match.group("name")
        if name not in TABLES:
            raise SystemExit(f"README.md: unknown config table {name!r}")
        return match.group(1) + TABLES[name]() + match.group(4)

    return MARKER.sub(replace, text)


def stale_tables(text: str) -> List[str]:
    """The names of the marked tables in ``text`` that differ from the settings table."""
    return [
        m.group("name")
        for m in MARKER.finditer(text)
        if m.group("name") not in TABLES or m.group("body") != TABLES[m.group("name")]()
    ]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="rewrite the tables in README.md")
    group.add_argument("--check", action="store_true", help="exit 1 when README.md is stale")
    args = parser.parse_args(argv)
    if not (args.write or args.check):
        for name, table in TABLES.items():
            print(f"<!-- config-table: {name} -->\n{table()}<!-- /config-table -->\n")
        return 0
    with open(README, encoding="utf-8") as f:
        text = f.read()
    if args.check:
        stale = stale_tables(text)
        if stale:
            print(f"README.md is out of date ({', '.join(stale)}): "
                  "run python tools/config_docs.py --write", file=sys.stderr)
        return 1 if stale else 0
    with open(README, "w", encoding="utf-8") as f:
        f.write(render(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
