"""One frozen configuration object, built once inside ``start()``.

Three sources, read in one place and in this order of precedence:
command-line flags (see ``cli.py``), then the environment (RunPod or
Waverless names, chosen by a prefix table), then the dict given to
``start()``. Nothing here runs at import time.
"""

import logging
import os
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from .errors import ConfigError

TRACE = 5  # below DEBUG; runpod's extra level

LOG_LEVELS: Dict[str, int] = {
    "NOTSET": logging.NOTSET,
    "TRACE": TRACE,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
}

# Each setting, with its name on RunPod and on Waverless. A name list is
# tried in order; the first variable that is set wins.
ENV_NAMES: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...]]] = {
    "endpoint_id": (("RUNPOD_ENDPOINT_ID",), ("WAVERLESS_ENDPOINT_ID",)),
    "hostname": (("RUNPOD_POD_HOSTNAME",), ("WAVERLESS_POD_HOSTNAME",)),
    "job_take": (("RUNPOD_WEBHOOK_GET_JOB",), ("WAVERLESS_WEBHOOK_GET_JOB",)),
    "job_done": (("RUNPOD_WEBHOOK_POST_OUTPUT",), ("WAVERLESS_WEBHOOK_POST_OUTPUT",)),
    "job_stream": (
        ("RUNPOD_WEBHOOK_POST_STREAM", "RUNPOD_WEBHOOK_JOB_STREAM"),
        ("WAVERLESS_WEBHOOK_POST_STREAM",),
    ),
    "ping": (("RUNPOD_WEBHOOK_PING",), ("WAVERLESS_WEBHOOK_PING",)),
    "api_key": (("RUNPOD_AI_API_KEY",), ("WAVERLESS_API_KEY",)),
    "ping_interval": (("RUNPOD_PING_INTERVAL",), ("WAVERLESS_PING_INTERVAL",)),
    "log_level": (
        ("RUNPOD_LOG_LEVEL", "RUNPOD_DEBUG_LEVEL"),
        ("WAVERLESS_LOG_LEVEL",),
    ),
    "realtime_port": (("RUNPOD_REALTIME_PORT",), ("WAVERLESS_REALTIME_PORT",)),
    "realtime_concurrency": (
        ("RUNPOD_REALTIME_CONCURRENCY",),
        ("WAVERLESS_REALTIME_CONCURRENCY",),
    ),
}

# Settings of our own, the same on both platforms.
OWN_ENV = {
    "health_port": "WAVESPEED_HEALTH_PORT",
    "drain_timeout": "WAVESPEED_DRAIN_TIMEOUT",
    "job_timeout": "WAVESPEED_JOB_TIMEOUT",
    "result_deadline": "WAVESPEED_RESULT_DEADLINE",
    "spool_dir": "WAVESPEED_SPOOL_DIR",
}

POD_PLACEHOLDERS = ("$RUNPOD_POD_ID", "$WAVERLESS_POD_ID", "$DEVICE_ID")

# Keys the dict given to start() may carry.
START_KEYS = frozenset(
    {
        "handler",
        "concurrency_modifier",
        "return_aggregate_stream",
        "refresh_worker",
        "concurrency_controller",
        "drain_timeout",
        "job_timeout",
        "result_deadline",
    }
)

MODES = ("worker", "test", "api", "realtime")


def _first(environ: Mapping[str, str], names: Sequence[str]) -> Tuple[str, Optional[str]]:
    """The first of ``names`` that is set: ``(name, value)``, else ``(names[0], None)``."""
    for name in names:
        value = environ.get(name)
        if value not in (None, ""):
            return name, value
    return names[0], None


def detect_platform(environ: Mapping[str, str]) -> str:
    """Return ``"waverless"`` when any Waverless variable says so, else ``"runpod"``."""
    if environ.get("WAVERLESS_ENDPOINT_ID") or any(
        key.startswith("WAVERLESS_WEBHOOK_") and value for key, value in environ.items()
    ):
        return "waverless"
    return "runpod"


def resolve_worker_id(environ: Mapping[str, str], endpoint_id: Optional[str]) -> str:
    """The pod id, by the precedence Waverless needs (it drains pods by name)."""
    for name in ("WAVERLESS_POD_ID", "RUNPOD_POD_ID", "DEVICE_ID", "HOSTNAME"):
        value = environ.get(name)
        if value:
            return value
    return f"{endpoint_id or 'worker'}-{uuid.uuid4().hex}"


def fill_pod(template: str, worker_id: str) -> str:
    """Replace the pod placeholders of a URL template with the worker id."""
    for placeholder in POD_PLACEHOLDERS:
        template = template.replace(placeholder, worker_id)
    return template


def parse_log_level(value: str, source: str) -> int:
    level = LOG_LEVELS.get(value.strip().upper())
    if level is None:
        choices = ", ".join(LOG_LEVELS)
        raise ConfigError(f"unknown log level {value!r}; use one of {choices}", source)
    return level


def _number(value: Any, source: str, kind: type = float, minimum: float = 0) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"expected a number, got {value!r}", source) from None
    if number < minimum:
        raise ConfigError(f"must be at least {minimum}, got {value!r}", source)
    return number


def default_spool_dir(environ: Mapping[str, str]) -> str:
    cache = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "wavespeed", "spool")


@dataclass(frozen=True)
class Config:
    """Everything the worker needs, resolved once; passed down explicitly."""

    handler: Callable[..., Any]
    mode: str = "test"
    platform: str = "runpod"
    endpoint_id: Optional[str] = None
    worker_id: str = "local"
    hostname: str = "local"
    api_key: Optional[str] = field(default=None, repr=False)
    job_take_url: Optional[str] = None
    job_done_url: Optional[str] = None  # "$ID" left in, for the job id
    job_stream_url: Optional[str] = None  # "$ID" left in, for the job id
    ping_url: Optional[str] = None
    ping_interval: float = 10.0
    log_level: int = logging.INFO
    json_logs: bool = False
    concurrency_modifier: Optional[Callable[[int], int]] = None
    return_aggregate_stream: bool = False
    refresh_worker: bool = False
    test_input: Optional[str] = None
    test_output: Optional[str] = None
    api_host: str = "localhost"
    api_port: int = 8000
    api_concurrency: int = 1
    api_reload: bool = False  # restart the local API on code changes (wavespeed[dev])
    debugger: bool = False
    realtime_port: int = 0
    realtime_concurrency: int = 1
    health_port: Optional[int] = None
    drain_timeout: float = 30.0
    job_timeout: Optional[float] = None
    result_deadline: float = 60.0
    spool_dir: str = field(default_factory=lambda: default_spool_dir(os.environ))
    fetch_timeout: float = 100.0  # RunPod long-polls job-take for up to ~90 s

    @property
    def job_stop_url(self) -> Optional[str]:
        """RunPod's per-job stop channel, derived from the job-take URL."""
        if self.job_take_url and "/job-take/" in self.job_take_url:
            return self.job_take_url.replace("/job-take/", "/job-stop/", 1)
        return None

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str],
        argv: Sequence[str],
        user_config: Mapping[str, Any],
    ) -> "Config":
        """Build the config from the environment, argv and the start() dict.

        Raises ConfigError with the offending source named.
        """
        from .cli import parse_args  # argparse is only needed here

        if not isinstance(user_config, Mapping):
            raise ConfigError("start() takes a dict such as {'handler': handler}", "start()")
        handler = user_config.get("handler")
        if not callable(handler):
            raise ConfigError("'handler' must be a callable taking the job dict", "start()")
        unknown = sorted(set(user_config) - START_KEYS)
        if unknown:
            warnings.warn(f"start(): ignoring unknown config keys {unknown}", stacklevel=3)
        if "concurrency_controller" in user_config:
            warnings.warn(
                "start(): 'concurrency_controller' is a legacy key and is ignored; "
                "use 'concurrency_modifier'",
                stacklevel=3,
            )
        modifier = user_config.get("concurrency_modifier")
        if modifier is not None and not callable(modifier):
            raise ConfigError("'concurrency_modifier' must be callable", "start()")

        flags = parse_args(argv)
        platform = detect_platform(environ)
        side = 1 if platform == "waverless" else 0

        def env(key: str) -> Optional[str]:
            return _first(environ, ENV_NAMES[key][side])[1]

        def env_name(key: str) -> str:
            """The variable a value came from (for error messages)."""
            return _first(environ, ENV_NAMES[key][side])[0]

        endpoint_id = env("endpoint_id")
        worker_id = resolve_worker_id(environ, endpoint_id)
        values: Dict[str, Any] = {
            "handler": handler,
            "platform": platform,
            "endpoint_id": endpoint_id,
            "worker_id": worker_id,
            "hostname": env("hostname") or worker_id,
            "api_key": env("api_key"),
            "json_logs": bool(endpoint_id),
            "concurrency_modifier": modifier,
            "return_aggregate_stream": bool(user_config.get("return_aggregate_stream", False)),
            "refresh_worker": bool(user_config.get("refresh_worker", False)),
        }
        if environ.get(OWN_ENV["spool_dir"]):
            values["spool_dir"] = environ[OWN_ENV["spool_dir"]]
        else:
            values["spool_dir"] = default_spool_dir(environ)

        take = env("job_take")
        if take:
            # Every placeholder of the take URL, $ID included, is the worker.
            values["job_take_url"] = fill_pod(take, worker_id).replace("$ID", worker_id)
        for key, name in (("job_done", "job_done_url"), ("job_stream", "job_stream_url")):
            template = env(key)
            if template:
                values[name] = fill_pod(template, worker_id)
        ping = env("ping")
        if ping:
            values["ping_url"] = fill_pod(ping, worker_id)

        interval = env("ping_interval")
        if interval is not None:
            values["ping_interval"] = (
                _number(interval, env_name("ping_interval"), float, 1) / 1000.0
            )

        level_source, level_value = "", None
        if flags.log_level:
            level_source, level_value = "--waverless_log_level/--rp_log_level", flags.log_level
        elif env("log_level"):
            level_source, level_value = env_name("log_level"), env("log_level")
        if level_value is not None:
            values["log_level"] = parse_log_level(level_value, level_source)

        realtime = env("realtime_port")
        if realtime:
            values["realtime_port"] = _number(realtime, env_name("realtime_port"), int)
        realtime_conc = env("realtime_concurrency")
        if realtime_conc:
            values["realtime_concurrency"] = _number(
                realtime_conc, env_name("realtime_concurrency"), int, 1
            )

        # Health endpoint: on by default on Waverless, where pods are probed
        # on 8000; off on RunPod, where 8000 often belongs to a model server.
        health: Any = flags.health_port
        health_source = "--health_port"
        if health is None and environ.get(OWN_ENV["health_port"]) not in (None, ""):
            health = environ[OWN_ENV["health_port"]]
            health_source = OWN_ENV["health_port"]
        if health is None:
            values["health_port"] = 8000 if platform == "waverless" else None
        else:
            port = _number(health, health_source, int)
            values["health_port"] = port or None

        for key, kind, minimum in (
            ("drain_timeout", float, 0),
            ("job_timeout", float, 0),
            ("result_deadline", float, 0),
        ):
            raw: Any = None
            source = ""
            if key in user_config and user_config[key] is not None:
                raw, source = user_config[key], f"start() key {key!r}"
            elif environ.get(OWN_ENV[key]) not in (None, ""):
                raw, source = environ[OWN_ENV[key]], OWN_ENV[key]
            if raw is not None:
                number = _number(raw, source, kind, minimum)
                values[key] = (number or None) if key == "job_timeout" else number

        values.update(
            test_input=flags.test_input,
            test_output=flags.test_output,
            api_host=flags.api_host,
            api_port=flags.api_port,
            api_concurrency=flags.api_concurrency,
            api_reload=flags.api_reload,
            debugger=flags.debugger,
        )
        if flags.test_output is not None and flags.test_input is None:
            raise ConfigError("--test_output needs --test_input", "--test_output")

        if flags.test_input is not None:
            mode = "test"
        elif flags.serve_api:
            mode = "api"
        elif values.get("realtime_port"):
            mode = "realtime"
        elif values.get("job_take_url"):
            mode = "worker"
            if not values.get("job_done_url"):
                raise ConfigError(
                    "the job-take URL is set but the job-done URL is not",
                    env_name("job_done"),
                )
        else:
            mode = "test"
        values["mode"] = mode
        return cls(**values)
