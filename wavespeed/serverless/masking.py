"""Masking secrets out of everything that leaves the process.

Two kinds of secret are masked: the platform API key (set by ``start()``
through ``setup_logging``) and every value a worker registered with
``RunPodLogger().secret(name, value)`` / ``serverless.log.secret(...)``.
They are replaced by ``***`` in log lines, in the error payload of a failed
job (message and traceback), in a returned or yielded ``error``, and so in
anything spooled.

Masking happens on text before it is encoded (JSON escapes a ``"`` or ``\\``
inside a secret, and an encoded secret would no longer match).

The registry is process-wide on purpose: runpod's ``secret()`` is a call on
a process-wide logger, made at import time or inside a handler, with no
config object to hang the value on.
"""

import threading
from collections.abc import Iterable
from typing import Any, Optional

__all__ = ["MASK", "MIN_SECRET_LENGTH", "SecretRegistry", "REGISTRY", "mask", "mask_value"]

MASK = "***"

#: Shorter values are not masked: masking "ab" would mangle every line that
#: happens to contain those two letters, and protect nothing.
MIN_SECRET_LENGTH = 4


class SecretRegistry:
    """The secrets to mask: the current API key plus every registered value."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._api_key: Optional[str] = None
        self._registered: tuple[str, ...] = ()
        # Longest first, so a secret containing another is masked whole.
        # Replaced as a whole tuple: readers never lock.
        self._ordered: tuple[str, ...] = ()

    def set_api_key(self, key: Optional[str]) -> None:
        """The API key of the configuration ``start()`` built (replaces the previous one)."""
        with self._lock:
            self._api_key = key or None
            self._rebuild()

    def add(self, value: Any) -> bool:
        """Register a value to mask; False when it is too short to mask."""
        text = str(value)
        if len(text) < MIN_SECRET_LENGTH:
            return False
        with self._lock:
            if text not in self._registered:
                self._registered = self._registered + (text,)
                self._rebuild()
        return True

    def _rebuild(self) -> None:
        values = set(self._registered)
        if self._api_key and len(self._api_key) >= MIN_SECRET_LENGTH:
            values.add(self._api_key)
        self._ordered = tuple(sorted(values, key=len, reverse=True))

    def values(self) -> tuple[str, ...]:
        return self._ordered

    def mask(self, text: str, extra: Iterable[Optional[str]] = ()) -> str:
        """``text`` with every secret (and each of ``extra``) replaced by ``***``."""
        secrets = self._ordered
        more = [s for s in extra if s and len(s) >= MIN_SECRET_LENGTH and s not in secrets]
        if more:
            secrets = tuple(sorted(set(secrets) | set(more), key=len, reverse=True))
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


#: The one registry of the process (see the module docstring for why).
REGISTRY = SecretRegistry()


def mask(text: str, extra: Iterable[Optional[str]] = ()) -> str:
    """Mask the registered secrets, the API key and ``extra`` in ``text``."""
    return REGISTRY.mask(text, extra)


def mask_value(value: Any, extra: Iterable[Optional[str]] = (), _depth: int = 0) -> Any:
    """A copy of ``value`` with every string inside it masked (dict keys included)."""
    extra = tuple(extra)
    if isinstance(value, str):
        return REGISTRY.mask(value, extra)
    if _depth > 100:  # a structure this deep is refused later by the encoder anyway
        return value
    if isinstance(value, dict):
        return {
            (REGISTRY.mask(k, extra) if isinstance(k, str) else k): mask_value(v, extra, _depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [mask_value(v, extra, _depth + 1) for v in value]
    return value
