"""Fitness checks: prove the machine can serve before the first job is taken.

    from wavespeed.serverless.fitness import register_fitness_check

    @register_fitness_check
    def model_present():
        if not os.path.exists("/models/model.safetensors"):
            raise RuntimeError("model file missing")

    @register_fitness_check
    async def backend_up():
        ...

In worker mode the worker calls ``run_fitness_checks(config)`` once, before
it asks for a job. The checks run one after another in registration order
(a coroutine function on a private event loop). The first one that raises
(or returns ``False``) stops the run: it is logged, reported to the ping URL
as ``status=unhealthy`` with the check's name and reason, and the worker
exits 1 without taking a job. Local test mode and the local API skip them.

Built-in GPU check, off unless ``WAVESPEED_FITNESS_GPU`` is set:
``WAVESPEED_FITNESS_GPU=1`` requires at least one visible NVIDIA GPU
(``nvidia-smi``/driver, no torch); a larger number requires that many.

The registry is the one piece of process-wide state in this package: a
decorator applied at import time has nowhere else to put what it collects.
It is lock-protected; ``clear_fitness_checks()`` empties it (for tests).
"""

import inspect
import os
import threading
import time
from collections.abc import Mapping
from typing import Any, Callable, Optional, TypeVar

from .logs import logger

__all__ = [
    "register_fitness_check",
    "run_fitness_checks",
    "registered_fitness_checks",
    "clear_fitness_checks",
    "GPU_CHECK_ENV",
]

log = logger("fitness")

GPU_CHECK_ENV = "WAVESPEED_FITNESS_GPU"
REPORT_TIMEOUT = 5.0

F = TypeVar("F", bound=Callable[..., Any])


class _Registry:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.checks: list[Callable[[], Any]] = []


_REGISTRY = _Registry()


def register_fitness_check(func: F) -> F:
    """Decorator: run ``func()`` (sync or async, no arguments) before the first job.

    It fails by raising (or by returning ``False``). Returns ``func`` unchanged.
    """
    if not callable(func):
        raise TypeError("register_fitness_check() decorates a function")
    with _REGISTRY.lock:
        _REGISTRY.checks.append(func)
    return func


def registered_fitness_checks() -> list[Callable[[], Any]]:
    """The registered checks, in the order they will run."""
    with _REGISTRY.lock:
        return list(_REGISTRY.checks)


def clear_fitness_checks() -> None:
    """Forget every registered check."""
    with _REGISTRY.lock:
        _REGISTRY.checks.clear()


def _gpu_check(required: int) -> Callable[[], None]:
    def gpu_available() -> None:
        from .utils.cuda import device_count

        found = device_count()
        if found < required:
            raise RuntimeError(f"{required} NVIDIA GPU(s) required, {found} visible")

    return gpu_available


def _builtin_checks(environ: Mapping[str, str]) -> list[Callable[[], Any]]:
    raw = (environ.get(GPU_CHECK_ENV) or "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return []
    if raw in ("true", "yes", "on"):
        return [_gpu_check(1)]
    try:
        required = int(raw)
    except ValueError:
        log.warning("%s=%r is not a number or true/false; checking for one GPU", GPU_CHECK_ENV, raw)
        required = 1
    return [_gpu_check(max(1, required))]


def _name(check: Callable[..., Any]) -> str:
    return str(
        getattr(check, "__qualname__", None) or getattr(check, "__name__", None) or repr(check)
    )


def _run_one(check: Callable[[], Any]) -> Any:
    outcome = check()
    if inspect.isawaitable(outcome):
        import asyncio

        loop = asyncio.new_event_loop()
        try:
            outcome = loop.run_until_complete(outcome)
        finally:
            loop.close()
    return outcome


def run_fitness_checks(config: Any, environ: Optional[Mapping[str, str]] = None) -> bool:
    """Run the built-in and registered checks; True when all pass.

    On the first failure: log it, report it on ``config.ping_url`` (best
    effort, bounded by a few seconds) and return False; the caller exits 1.
    ``environ`` defaults to ``os.environ`` (only ``WAVESPEED_FITNESS_GPU`` is read).
    """
    checks = _builtin_checks(os.environ if environ is None else environ)
    checks += registered_fitness_checks()
    if not checks:
        return True
    log.info("running %d fitness check(s)", len(checks))
    started = time.perf_counter()
    for check in checks:
        name = _name(check)
        began = time.perf_counter()
        try:
            outcome = _run_one(check)
            failure: Optional[str] = "returned False" if outcome is False else None
        except BaseException as exc:  # noqa: BLE001 - SystemExit in a check is a failure too
            failure = f"{type(exc).__name__}: {exc}"
            log.debug("fitness check %s raised", name, exc_info=True)
        if failure is not None:
            log.error(
                "fitness check %s failed: %s; the worker is unhealthy and exits", name, failure
            )
            _report_unhealthy(config, name, failure)
            return False
        log.debug("fitness check %s passed in %.1f ms", name, (time.perf_counter() - began) * 1000)
    log.info("all fitness checks passed in %.1f ms", (time.perf_counter() - started) * 1000)
    return True


def _report_unhealthy(config: Any, check: str, reason: str) -> tuple[bool, str]:
    """One GET on the ping URL with ``status=unhealthy``; never raises."""
    url = getattr(config, "ping_url", None)
    if not url:
        return False, "no ping URL"
    try:
        import requests

        from .. import RUNPOD_VERSION, __version__

        headers = {}
        api_key = getattr(config, "api_key", None)
        if api_key:
            headers["Authorization"] = api_key
        params = {
            "status": "unhealthy",
            "check": check,
            "reason": reason[:256],
            "runpod_version": RUNPOD_VERSION,
            "wavespeed_version": __version__,
        }
        response = requests.get(url, params=params, headers=headers, timeout=REPORT_TIMEOUT)
        return response.ok, str(response.status_code)
    except Exception as exc:  # noqa: BLE001 - the exit matters, not this report
        log.debug("could not report the fitness failure: %s", exc)
        return False, str(exc)
