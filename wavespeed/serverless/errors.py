"""The exception tree of the worker. Every exception carries its data."""

from typing import Optional


class WavespeedError(Exception):
    """Root of every exception this package raises on purpose."""


class ConfigError(WavespeedError, ValueError):
    """The configuration (env, argv or the start dict) is invalid.

    ``source`` names where the bad value came from (an env var, a flag, a
    start-config key) so the message can point the user at it.
    """

    def __init__(self, message: str, source: Optional[str] = None) -> None:
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


class OutputNotSerializable(WavespeedError, TypeError):
    """A handler returned or yielded a value that cannot be sent as JSON."""

    def __init__(self, message: str, value_type: str) -> None:
        self.value_type = value_type
        super().__init__(message)


class JobCancelled(WavespeedError):
    """The platform asked to stop the job (RunPod's job-stop channel)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id} was stopped by the platform")
