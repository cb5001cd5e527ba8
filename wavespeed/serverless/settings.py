"""What a setting is, how its raw values are parsed, and the one resolver.

A ``Setting`` names a field of ``Config`` and every place its value may come
from: command-line flags, environment variables (RunPod's or Waverless's
names, or our own read on both platforms), a key of the dict given to
``start()``, and a default. The table of them is ``config.SETTINGS``.
``resolve()`` takes the first source that has a value, in the order flag,
environment, start() key, default (``config.py`` says why), parses it with
the setting's ``Kind`` and records where it came from, so a ``ConfigError``
names the exact flag spelling, variable or key.

Nothing here runs at import.
"""

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional

from .errors import ConfigError

TRACE = 5  # below DEBUG; runpod's extra level

LOG_LEVELS: dict[str, int] = {
    "NOTSET": logging.NOTSET,
    "TRACE": TRACE,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
}

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


# -- kinds: how a raw value becomes a setting's value -------------------------
#
# A raw value is text when it comes from argv or the environment, and any
# Python value when it comes from the start() dict; every parser takes both.
# ``source`` is the flag spelling, variable or key, for the error message.


@dataclass(frozen=True)
class Kind:
    """How a raw value (text from argv or env, any value from start()) is parsed."""

    parse: Callable[[Any, str], Any]
    metavar: str = "VALUE"
    switch: bool = False  # on the command line: a flag that takes no value


def _text(value: Any, source: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"expected text, got {type(value).__name__}", source)
    return value


def _boolean(value: Any, source: str) -> bool:
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise ConfigError(
            f"expected one of {', '.join(TRUE_WORDS + FALSE_WORDS)}, got {value!r}", source
        )
    return bool(value)  # start() values keep Python truthiness, as runpod reads them


def _callable(value: Any, source: str) -> Callable[..., Any]:
    if not callable(value):
        raise ConfigError(f"must be a callable, got {type(value).__name__}", source)
    return value  # type: ignore[no-any-return]


def _finite(value: Any, source: str, kind: type) -> Any:
    if isinstance(value, bool):  # True is an int to Python, not a number to a user
        raise ConfigError(f"expected a number, got {value!r}", source)
    try:
        number = float(value) if kind is float else int(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"expected a number, got {value!r}", source) from None
    if kind is float and not math.isfinite(number):
        raise ConfigError(f"expected a finite number, got {value!r}", source)
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ConfigError(f"expected a whole number, got {value!r}", source)
    return number


def integer(minimum: int, maximum: Optional[int] = None, metavar: str = "N") -> Kind:
    """A whole number in ``[minimum, maximum]``."""

    def parse(value: Any, source: str) -> int:
        number: int = _finite(value, source, int)
        if number < minimum:
            raise ConfigError(f"must be at least {minimum}, got {value!r}", source)
        if maximum is not None and number > maximum:
            raise ConfigError(f"must be at most {maximum}, got {value!r}", source)
        return number

    return Kind(parse, metavar)


def seconds(minimum: float = 0, zero_means_off: bool = False) -> Kind:
    """A duration in seconds; with ``zero_means_off``, 0 becomes None."""

    def parse(value: Any, source: str) -> Optional[float]:
        number: float = _finite(value, source, float)
        if number < minimum:
            raise ConfigError(f"must be at least {minimum:g}, got {value!r}", source)
        return None if zero_means_off and number == 0 else number

    return Kind(parse, "SECONDS")


def _milliseconds(value: Any, source: str) -> float:
    """Platforms give the ping interval in ms; we keep seconds (not truncated)."""
    number: float = _finite(value, source, float)
    if number < 1:
        raise ConfigError(f"must be at least 1 (milliseconds), got {value!r}", source)
    return number / 1000.0


def _port_or_off(value: Any, source: str) -> Optional[int]:
    port: int = PORT.parse(value, source)
    return port or None


def parse_log_level(value: Any, source: str) -> int:
    """A level name (any case) to its number; ConfigError names the choices."""
    level = LOG_LEVELS.get(str(value).strip().upper())
    if level is None:
        choices = ", ".join(LOG_LEVELS)
        raise ConfigError(f"unknown log level {value!r}; use one of {choices}", source)
    return level


def choice(*values: str) -> Kind:
    """One of ``values`` (any case, surrounding blanks ignored)."""

    def parse(value: Any, source: str) -> str:
        word = value.strip().lower() if isinstance(value, str) else value
        if word not in values:
            raise ConfigError(f"expected one of {', '.join(values)}, got {value!r}", source)
        return str(word)

    return Kind(parse, "|".join(values))


def _host_list(value: Any, source: str) -> tuple[str, ...]:
    """``"a.example, b.example"`` (or a list, from Python) to a tuple of names."""
    items = value.split(",") if isinstance(value, str) else value
    try:
        hosts = tuple(str(item).strip().lower() for item in items)  # host names are case-blind
    except TypeError:
        raise ConfigError(f"expected comma-separated host names, got {value!r}", source) from None
    return tuple(host for host in hosts if host)


def text(metavar: str = "TEXT") -> Kind:
    """Any text, taken as given; ``metavar`` names it in ``--help``."""
    return Kind(_text, metavar)


TEXT = text()
URL = text("URL")
JSON = text("JSON")
SWITCH = Kind(_boolean, switch=True)  # env and start() take true/false words
CALLABLE = Kind(_callable)
PORT = integer(0, 65535, "PORT")
PORT_OR_OFF = Kind(_port_or_off, "PORT")
MILLISECONDS = Kind(_milliseconds, "MS")
LOG_LEVEL = Kind(parse_log_level, "LEVEL")
HOST_LIST = Kind(_host_list, "HOSTS")


# -- defaults that depend on the environment or on other settings ------------


class Context(NamedTuple):
    """What a computed default may look at: the settings resolved before it."""

    environ: Mapping[str, str]
    platform: str
    values: Mapping[str, Any]


@dataclass(frozen=True)
class Computed:
    """A default worked out at start(); ``doc`` is how help and README show it."""

    compute: Callable[[Context], Any]
    doc: str


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


# -- settings --------------------------------------------------------------


@dataclass(frozen=True)
class EnvNames:
    """A setting's variables: per platform, or the same (ours) on both."""

    runpod: tuple[str, ...] = ()
    waverless: tuple[str, ...] = ()
    own: bool = False  # read on both platforms (WAVESPEED_* and the pod ids)

    def on(self, platform: str) -> tuple[str, ...]:
        return self.waverless if platform == "waverless" else self.runpod

    def all(self) -> tuple[str, ...]:
        return self.runpod + tuple(n for n in self.waverless if n not in self.runpod)


def platform_env(runpod: Sequence[str], waverless: Sequence[str]) -> EnvNames:
    return EnvNames(tuple(runpod), tuple(waverless))


def own_env(*names: str) -> EnvNames:
    return EnvNames(tuple(names), tuple(names), own=True)


NO_ENV = EnvNames()


@dataclass(frozen=True)
class Setting:
    """One configurable value and every place it may come from."""

    name: str  # the Config field (serve_api only selects the mode)
    kind: Kind
    help: str
    default: Any = None  # a value, a Computed, or REQUIRED
    env: EnvNames = NO_ENV  # on a platform: the first of its names that is set wins
    start_key: Optional[str] = None
    flags: tuple[str, ...] = ()
    default_doc: Optional[str] = None  # how help and README show the default

    def describe_default(self) -> str:
        if self.default_doc is not None:
            return self.default_doc
        if isinstance(self.default, Computed):
            return self.default.doc
        if self.default is REQUIRED:
            return "required"
        if self.default is None or self.default == ():
            return "none"
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return str(self.default)


# -- resolution -------------------------------------------------------------


class Resolved(NamedTuple):
    value: Any
    source: str  # a flag spelling, a variable, "start() key 'x'", or "default"


DEFAULT_SOURCE = "default"


def start_key_source(key: str) -> str:
    return f"start() key {key!r}"


def first_set(environ: Mapping[str, str], names: Sequence[str]) -> tuple[str, Optional[str]]:
    """``(name, value)`` of the first of ``names`` that is set and not empty.

    ``(names[0], None)`` when none is.
    """
    for name in names:
        value = environ.get(name)
        if value not in (None, ""):
            return name, value
    return (names[0] if names else ""), None


def raw_value(
    setting: Setting,
    environ: Mapping[str, str],
    platform: str,
    flags: Mapping[str, tuple[str, Any]],
    start: Mapping[str, Any],
) -> Optional[tuple[Any, str]]:
    """The winning ``(raw value, source)`` of one setting, or None for its default.

    Flag, then environment, then start() key. An empty variable and a None
    start() value count as unset.
    """
    if setting.name in flags:
        spelling, value = flags[setting.name]
        return value, spelling
    name, text = first_set(environ, setting.env.on(platform))
    if text is not None:
        return text, name
    if setting.start_key and start.get(setting.start_key) is not None:
        return start[setting.start_key], start_key_source(setting.start_key)
    return None


def resolve(
    environ: Mapping[str, str],
    platform: str,
    flags: Mapping[str, tuple[str, Any]],
    start: Mapping[str, Any],
    settings: Sequence[Setting],
) -> dict[str, Resolved]:
    """Every setting's value and source; ConfigError names the bad value's source.

    ``flags`` maps a setting name to ``(flag spelling, raw value)`` as
    ``cli.parse_args`` returns it.
    """
    resolved: dict[str, Resolved] = {}
    values: dict[str, Any] = {}
    for setting in settings:
        found = raw_value(setting, environ, platform, flags, start)
        if found is not None:
            raw, source = found
            value = setting.kind.parse(raw, source)
        elif setting.default is REQUIRED:
            source = start_key_source(setting.start_key or setting.name)
            raise ConfigError(f"missing: {setting.help}", source)
        elif isinstance(setting.default, Computed):
            value = setting.default.compute(Context(environ, platform, values))
            source = DEFAULT_SOURCE
        else:
            value, source = setting.default, DEFAULT_SOURCE
        resolved[setting.name] = Resolved(value, source)
        values[setting.name] = value
    return resolved
