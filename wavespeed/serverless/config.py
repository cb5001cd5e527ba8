"""One frozen configuration object, built once inside ``start()``.

Every setting is one row of ``SETTINGS`` below (a ``Setting`` from
``settings.py``); ``settings.resolve()`` reads each from four places, and the
first that has a value wins:

1. a command-line flag (``--waverless_*`` or ``--rp_*``, see ``cli.py``);
2. an environment variable (RunPod or Waverless names, picked by
   ``detect_platform``, or our own ``WAVESPEED_*`` names);
3. a key of the dict given to ``start()``;
4. the default.

Why the environment beats the start() dict: the dict is the developer's
code, baked into the image, so it says what the handler needs in general.
The environment belongs to whoever deploys that image (a platform's
endpoint settings, a Kubernetes manifest): it is set per deployment and
changes without a rebuild, so an operator who sets
``WAVESPEED_JOB_TIMEOUT`` for one endpoint must get it, whatever the code
says (the twelve-factor convention: code gives defaults, the environment
configures the deployment). The platforms never set ``WAVESPEED_*``
variables themselves, so one that is set was set on purpose. A flag is
typed for one run (a container's command, a developer's shell) and beats
both. The same order holds for every setting; before this table existed a
start() key beat the environment for the three timeouts.

Each value's source (the flag spelling, the variable, the start() key or
"default") is kept in ``Config.sources`` and named by every ``ConfigError``.
Nothing here runs at import time.
"""

import logging
import os
import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Optional

from .errors import ConfigError
from .settings import (
    CALLABLE,
    DEFAULT_SOURCE,
    HOST_LIST,
    JSON,
    LOG_LEVEL,
    LOG_LEVELS,
    MILLISECONDS,
    PORT,
    PORT_OR_OFF,
    REQUIRED,
    SWITCH,
    TEXT,
    TRACE,
    URL,
    Computed,
    EnvNames,
    Setting,
    choice,
    first_set,
    integer,
    own_env,
    parse_log_level,
    platform_env,
    resolve,
    seconds,
    text,
)

__all__ = [
    "Config",
    "LEGACY_START_KEYS",
    "LOG_LEVELS",
    "MODES",
    "SETTINGS",
    "START_KEYS",
    "TRACE",
    "detect_platform",
    "fill_pod",
    "parse_log_level",
    "resolve_worker_id",
]

# Tried in this order on both platforms. Waverless drains and kills pods by
# name, so its pod id comes first and a random id is only the last resort.
WORKER_ID_ENV = ("WAVERLESS_POD_ID", "RUNPOD_POD_ID", "DEVICE_ID", "HOSTNAME")

POD_PLACEHOLDERS = ("$RUNPOD_POD_ID", "$WAVERLESS_POD_ID", "$DEVICE_ID")

MODES = ("worker", "test", "api", "realtime")


def default_spool_dir(environ: Mapping[str, str]) -> str:
    cache = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "wavespeed", "spool")


def random_worker_id(endpoint_id: Optional[str]) -> str:
    return f"{endpoint_id or 'worker'}-{uuid.uuid4().hex}"


# -- the table ----------------------------------------------------------------
#
# Every setting start() reads, in resolution order: a computed default may
# read the settings above it. cli.py builds the flags from it, and
# tools/config_docs.py the README's tables.


def _wl(name: str) -> str:
    return "--waverless_" + name


def _rp(name: str) -> str:
    return "--rp_" + name


def _both(name: str) -> tuple[str, str]:
    """The two spellings of a flag (PROTOCOL §13): ours first, then runpod's."""
    return (_wl(name), _rp(name))


def _platform(suffix: str, *runpod_aliases: str) -> EnvNames:
    return platform_env(("RUNPOD_" + suffix,) + runpod_aliases, ("WAVERLESS_" + suffix,))


SETTINGS: tuple[Setting, ...] = (
    # The start() dict only: code, not deployment, decides these.
    Setting("handler", CALLABLE, "the job handler, any of the four kinds",
            default=REQUIRED, start_key="handler"),
    Setting("concurrency_modifier", CALLABLE, "`fn(current) -> int`, called before each fetch",
            start_key="concurrency_modifier", default_doc="none (concurrency 1)"),
    Setting("return_aggregate_stream", SWITCH,
            "a generator's final result lists every chunk",
            default=False, start_key="return_aggregate_stream"),
    Setting("refresh_worker", SWITCH, "stop the worker after each job (`stopPod`)",
            default=False, start_key="refresh_worker"),
    # What the platform tells the worker.
    Setting("endpoint_id", TEXT, "endpoint id (when set, logs are JSON lines)",
            env=_platform("ENDPOINT_ID")),
    Setting("worker_id", TEXT, "worker (pod) id: the first of these that is set",
            env=own_env(*WORKER_ID_ENV),
            default=Computed(lambda c: random_worker_id(c.values["endpoint_id"]),
                             '`<endpoint or "worker">-<random hex>`')),
    Setting("hostname", TEXT, "hostname in error payloads",
            env=_platform("POD_HOSTNAME"),
            default=Computed(lambda c: c.values["worker_id"], "the worker id")),
    Setting("job_take_url", URL, "job-take URL (selects worker mode)",
            env=_platform("WEBHOOK_GET_JOB")),
    Setting("job_done_url", URL, "job-done URL", env=_platform("WEBHOOK_POST_OUTPUT")),
    Setting("job_stream_url", URL, "stream URL",
            env=_platform("WEBHOOK_POST_STREAM", "RUNPOD_WEBHOOK_JOB_STREAM")),
    Setting("ping_url", URL, "ping URL", env=_platform("WEBHOOK_PING")),
    Setting("api_key", TEXT, "API key (never logged)",
            env=platform_env(("RUNPOD_AI_API_KEY",), ("WAVERLESS_API_KEY",))),
    Setting("ping_interval", MILLISECONDS, "ping interval, milliseconds",
            default=10.0, env=_platform("PING_INTERVAL"), default_doc="10000"),
    Setting("log_level", LOG_LEVEL,
            "log level: NOTSET, TRACE, DEBUG, INFO, WARN/WARNING or ERROR",
            default=logging.INFO, default_doc="INFO; the handler's own lines DEBUG",
            env=_platform("LOG_LEVEL", "RUNPOD_DEBUG_LEVEL"), flags=_both("log_level")),
    Setting("realtime_port", PORT,
            "realtime port: non-zero serves the HTTP API on 0.0.0.0:PORT instead of polling",
            default=0, env=_platform("REALTIME_PORT"), default_doc="off"),
    Setting("realtime_concurrency", integer(1), "jobs the realtime API runs at once",
            default=1, env=_platform("REALTIME_CONCURRENCY")),
    # Our own settings, the same names on both platforms.
    Setting("health_port", PORT_OR_OFF,
            "worker mode: serve GET /health on this port; 0 turns it off",
            env=own_env("WAVESPEED_HEALTH_PORT"), flags=(_wl("health_port"), "--health_port"),
            # Waverless probes pods on 8000; on RunPod 8000 often belongs to a model server.
            default=Computed(lambda c: 8000 if c.platform == "waverless" else None,
                             "8000 on Waverless, off on RunPod")),
    Setting("drain_timeout", seconds(), "seconds running jobs get to finish after SIGTERM",
            # Kubernetes' default grace period is 30 s; leave room to exit.
            default=25.0, env=own_env("WAVESPEED_DRAIN_TIMEOUT"), start_key="drain_timeout"),
    Setting("job_timeout", seconds(zero_means_off=True), "per-job timeout, seconds (0: off)",
            env=own_env("WAVESPEED_JOB_TIMEOUT"), start_key="job_timeout", default_doc="off"),
    Setting("result_deadline", seconds(),
            "seconds a final result is retried before it is spooled",
            default=60.0, env=own_env("WAVESPEED_RESULT_DEADLINE"),
            start_key="result_deadline"),
    Setting("spool_dir", text("DIR"), "where undeliverable results wait",
            env=own_env("WAVESPEED_SPOOL_DIR"),
            default=Computed(lambda c: default_spool_dir(c.environ),
                             "`$XDG_CACHE_HOME/wavespeed/spool` (`~/.cache/...`)")),
    Setting("async_mode", choice("shared", "thread"),
            "async handlers share one event loop (`shared`) or get one per pool "
            "thread (`thread`)",
            default="shared", env=own_env("WAVESPEED_ASYNC_MODE"), start_key="async_mode"),
    Setting("allow_private_webhooks", SWITCH,
            "let the local API call webhooks on private or loopback addresses",
            default=False, env=own_env("WAVESPEED_ALLOW_PRIVATE_WEBHOOKS")),
    # The command line: local runs and the local HTTP API.
    Setting("test_input", JSON, "run one job locally and exit, e.g. "
            '\'{"input": {"prompt": "hi"}}\'', flags=("--test_input",)),
    Setting("test_output", JSON, "with --test_input: exit 1 unless the result equals this",
            flags=("--test_output",)),
    Setting("serve_api", SWITCH, "serve the local HTTP API (Flask on waitress)",
            default=False, flags=_both("serve_api")),
    Setting("api_host", text("HOST"), "local API host",
            default="localhost", flags=_both("api_host")),
    Setting("api_port", PORT, "local API port", default=8000, flags=_both("api_port")),
    Setting("api_concurrency", integer(1), "jobs the local API runs at once",
            default=1, flags=_both("api_concurrency")),
    Setting("api_max_body", integer(1, metavar="BYTES"),
            "largest request body the local API accepts, bytes (larger: 413)",
            default=10 * 1024 * 1024, default_doc="10485760 (10 MiB)",
            env=own_env("WAVESPEED_API_MAX_BODY"), flags=_both("api_max_body")),
    Setting("api_allowed_hosts", HOST_LIST,
            "extra host names the local API accepts in requests (comma-separated)",
            default=(), env=own_env("WAVESPEED_API_ALLOWED_HOSTS"),
            flags=_both("api_allowed_hosts")),
    Setting("api_reload", SWITCH,
            "with --rp_serve_api: restart the local API when a .py file under the "
            "handler's folder changes (needs wavespeed[dev])",
            default=False, flags=_both("api_reload")),
    Setting("debugger", SWITCH, "add handler timings to each result",
            default=False, flags=_both("debugger")),
)  # fmt: skip

# Keys runpod accepted that we read no more: warned about, then ignored.
LEGACY_START_KEYS: dict[str, str] = {
    "concurrency_controller": "use 'concurrency_modifier'",
}

START_KEYS = frozenset(s.start_key for s in SETTINGS if s.start_key) | frozenset(
    LEGACY_START_KEYS
)


def detect_platform(environ: Mapping[str, str]) -> str:
    """Return ``"waverless"`` when any Waverless variable says so, else ``"runpod"``."""
    if environ.get("WAVERLESS_ENDPOINT_ID") or any(
        key.startswith("WAVERLESS_WEBHOOK_") and value for key, value in environ.items()
    ):
        return "waverless"
    return "runpod"


def resolve_worker_id(environ: Mapping[str, str], endpoint_id: Optional[str]) -> str:
    """The pod id, by the precedence Waverless needs (it drains pods by name)."""
    value = first_set(environ, WORKER_ID_ENV)[1]
    return value if value is not None else random_worker_id(endpoint_id)


def fill_pod(template: str, worker_id: str) -> str:
    """Replace the pod placeholders of a URL template with the worker id."""
    for placeholder in POD_PLACEHOLDERS:
        template = template.replace(placeholder, worker_id)
    return template


@dataclass(frozen=True)
class Config:
    """Everything the worker needs, resolved once; passed down explicitly.

    ``Config.from_env`` builds it in ``start()``; tests may construct one
    directly. ``sources`` says where each value came from (empty when
    constructed directly).
    """

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
    handler_log_level: Optional[int] = None  # the handler's own lines; None: DEBUG, as runpod
    json_logs: bool = False
    concurrency_modifier: Optional[Callable[[int], int]] = None
    return_aggregate_stream: bool = False
    refresh_worker: bool = False
    test_input: Optional[str] = None
    test_output: Optional[str] = None
    api_host: str = "localhost"
    api_port: int = 8000
    api_concurrency: int = 1
    api_max_body: int = 10 * 1024 * 1024  # bytes; larger request bodies get 413
    api_allowed_hosts: tuple[str, ...] = ()
    api_reload: bool = False
    allow_private_webhooks: bool = False
    debugger: bool = False
    realtime_port: int = 0
    realtime_concurrency: int = 1
    health_port: Optional[int] = None
    drain_timeout: float = 25.0  # fits Kubernetes' 30 s grace period
    job_timeout: Optional[float] = None
    result_deadline: float = 60.0
    spool_dir: str = field(default_factory=lambda: default_spool_dir(os.environ))
    async_mode: str = "shared"  # "shared": one event loop; "thread": one per pool thread
    fetch_timeout: float = 100.0  # RunPod long-polls job-take for up to ~90 s
    started: float = field(default_factory=time.perf_counter, compare=False)  # when start() ran
    sources: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # Fixed now, so a handler that calls os.chdir cannot move the spool.
        object.__setattr__(self, "spool_dir", os.path.abspath(self.spool_dir))

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
        _warn_about_keys(user_config)

        platform = detect_platform(environ)
        resolved = resolve(environ, platform, parse_args(argv), user_config, SETTINGS)
        values: dict[str, Any] = {name: r.value for name, r in resolved.items()}
        sources = {name: r.source for name, r in resolved.items()}
        serve_api = values.pop("serve_api")  # chooses the mode; not a field
        worker_id = values["worker_id"]

        if values["job_take_url"]:
            # Every placeholder of the take URL, $ID included, is the worker.
            values["job_take_url"] = fill_pod(values["job_take_url"], worker_id).replace(
                "$ID", worker_id
            )
        for name in ("job_done_url", "job_stream_url", "ping_url"):
            if values[name]:
                values[name] = fill_pod(values[name], worker_id)
        values["json_logs"] = bool(values["endpoint_id"])
        if sources["log_level"] != DEFAULT_SOURCE:  # a level setting sets the handler's lines too
            values["handler_log_level"] = values["log_level"]

        if values["test_output"] is not None and values["test_input"] is None:
            raise ConfigError("needs --test_input", sources["test_output"])
        if values["test_input"] is not None:
            mode = "test"
        elif serve_api:
            mode = "api"
        elif values["realtime_port"]:
            mode = "realtime"
        elif values["job_take_url"]:
            mode = "worker"
            if not values["job_done_url"]:
                done = _setting("job_done_url").env.on(platform)[0]
                raise ConfigError("the job-take URL is set but the job-done URL is not", done)
        else:
            mode = "test"
        values.update(mode=mode, platform=platform, sources=MappingProxyType(sources))
        return cls(**values)


def _setting(name: str) -> Any:
    return next(s for s in SETTINGS if s.name == name)


def _warn_about_keys(user_config: Mapping[str, Any]) -> None:
    # Unknown keys warn rather than fail: runpod ignores them silently, and a
    # worker moved over from runpod should start, not crash on a stray key.
    unknown = sorted(set(user_config) - START_KEYS, key=str)
    if unknown:
        warnings.warn(f"start(): ignoring unknown config keys {unknown}", stacklevel=4)
    for key, why in LEGACY_START_KEYS.items():
        if key in user_config:
            warnings.warn(f"start(): {key!r} is a legacy runpod key, ignored; {why}", stacklevel=4)

