"""A worker whose script installs its own SIGTERM handler before ``start()``.

The handler writes ``USER_SIGNAL_FILE`` so the test can see it was called.
"""

import os
import signal
from types import FrameType
from typing import Any, Dict, Optional

import wavespeed.serverless as serverless


def handler(job: Dict[str, Any]) -> Dict[str, Any]:
    return {"echo": job["input"]}


def on_term(signum: int, frame: Optional[FrameType]) -> None:
    """The user's own cleanup hook: record that it ran, and with which signal."""
    with open(os.environ["USER_SIGNAL_FILE"], "w", encoding="utf-8") as out:
        out.write(f"called {signum}\n")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_term)
    serverless.start({"handler": handler})
    print("worker main: start() returned", flush=True)
