"""Fitness checks: registration, sync/async runs, failure reporting, the GPU switch."""

import os
import stat
from typing import Any, Dict, Iterator, List

import pytest

from wavespeed.serverless.config import Config
from wavespeed.serverless.fitness import (
    GPU_CHECK_ENV,
    clear_fitness_checks,
    register_fitness_check,
    registered_fitness_checks,
    run_fitness_checks,
)

try:
    from tests.fakeplatform import FakePlatform
except ImportError:  # tests/ run as a plain directory on sys.path
    from fakeplatform import FakePlatform  # type: ignore[no-redef]

pytestmark = pytest.mark.timeout(30)

HAS_DRIVER = os.path.exists("/proc/driver/nvidia/gpus")


@pytest.fixture(autouse=True)
def empty_registry() -> Iterator[None]:
    clear_fitness_checks()
    yield
    clear_fitness_checks()


def config_for(fp: FakePlatform, tmp_path: Any) -> Config:
    env = fp.env(WAVESPEED_SPOOL_DIR=str(tmp_path))
    return Config.from_env(env, [], {"handler": lambda job: None})


def local_config() -> Config:
    return Config.from_env({}, [], {"handler": lambda job: None})


def test_register_returns_the_function_and_keeps_order() -> None:
    def first() -> None:
        pass

    async def second() -> None:
        pass

    assert register_fitness_check(first) is first
    assert register_fitness_check(second) is second
    assert registered_fitness_checks() == [first, second]
    with pytest.raises(TypeError):
        register_fitness_check("nope")  # type: ignore[arg-type]


def test_sync_and_async_checks_run_in_order(fp: FakePlatform, tmp_path: Any) -> None:
    ran: List[str] = []

    @register_fitness_check
    def disk() -> None:
        ran.append("disk")

    @register_fitness_check
    async def model() -> None:
        import asyncio

        await asyncio.sleep(0)
        ran.append("model")

    assert run_fitness_checks(config_for(fp, tmp_path), environ={}) is True
    assert ran == ["disk", "model"]
    assert fp.pings() == []  # nothing reported when healthy


def test_no_checks_is_healthy() -> None:
    assert run_fitness_checks(local_config(), environ={}) is True


def test_first_failure_stops_and_is_reported_unhealthy(fp: FakePlatform, tmp_path: Any) -> None:
    ran: List[str] = []

    @register_fitness_check
    def gpu_memory() -> None:
        ran.append("gpu_memory")
        raise RuntimeError("only 2 GB free")

    @register_fitness_check
    def never() -> None:
        ran.append("never")

    assert run_fitness_checks(config_for(fp, tmp_path), environ={}) is False
    assert ran == ["gpu_memory"]
    (ping,) = fp.pings()
    assert ping.query["status"] == "unhealthy"
    assert ping.query["check"].endswith("gpu_memory")
    assert ping.query["reason"] == "RuntimeError: only 2 GB free"
    assert ping.query["gpu"] == "test"  # the template's own query is kept
    assert ping.headers["authorization"] == "test-key"


def test_async_failure(fp: FakePlatform, tmp_path: Any) -> None:
    @register_fitness_check
    async def backend() -> None:
        raise ConnectionError("backend down")

    assert run_fitness_checks(config_for(fp, tmp_path), environ={}) is False
    assert fp.pings()[0].query["reason"] == "ConnectionError: backend down"


@pytest.mark.parametrize("outcome", [False, SystemExit(3)])
def test_false_or_sys_exit_is_a_failure(outcome: Any) -> None:
    @register_fitness_check
    def check() -> Any:
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    assert run_fitness_checks(local_config(), environ={}) is False  # no ping URL: nothing to report


def test_returning_none_or_a_value_passes() -> None:
    register_fitness_check(lambda: None)
    register_fitness_check(lambda: {"ok": True})
    assert run_fitness_checks(local_config(), environ={}) is True


def test_report_failure_does_not_raise(tmp_path: Any) -> None:
    with FakePlatform() as fp:
        cfg = config_for(fp, tmp_path)
    # The platform is gone: the report fails, the result is still False.
    register_fitness_check(lambda: False)
    assert run_fitness_checks(cfg, environ={}) is False


# -- the built-in GPU check ------------------------------------------------------------


def fake_nvidia_smi(folder: Any, gpus: int) -> str:
    path = os.path.join(str(folder), "nvidia-smi")
    lines = "".join(f'echo "GPU {i}: NVIDIA Fake (UUID: GPU-{i})"\n' for i in range(gpus))
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("#!/bin/sh\n" + lines)
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
    return str(folder)


def test_gpu_check_is_off_unless_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU visible
    for value in ("", "0", "false", "off"):
        assert run_fitness_checks(local_config(), environ={GPU_CHECK_ENV: value}) is True


def test_gpu_check_fails_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert run_fitness_checks(local_config(), environ={GPU_CHECK_ENV: "1"}) is False
    assert run_fitness_checks(local_config(), environ={GPU_CHECK_ENV: "true"}) is False


@pytest.mark.skipif(HAS_DRIVER, reason="a real NVIDIA driver answers before nvidia-smi")
def test_gpu_check_counts_gpus(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path, 2) + os.pathsep + os.environ.get("PATH", ""))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    environ: Dict[str, str] = {GPU_CHECK_ENV: "1"}
    assert run_fitness_checks(local_config(), environ=environ) is True
    assert run_fitness_checks(local_config(), environ={GPU_CHECK_ENV: "2"}) is True
    assert run_fitness_checks(local_config(), environ={GPU_CHECK_ENV: "3"}) is False
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert run_fitness_checks(local_config(), environ={GPU_CHECK_ENV: "2"}) is False
