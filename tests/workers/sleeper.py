"""A worker whose handler sleeps ``input["sleep"]`` seconds, then echoes the input.

Run by tests/test_worker_subprocess.py with a FakePlatform's env. With
``WORKER_REFRESH=1`` the start config has ``refresh_worker: True``.
"""

import os
import time
from typing import Any, Dict

import wavespeed.serverless as serverless


def handler(job: Dict[str, Any]) -> Dict[str, Any]:
    """Block in time.sleep (releasing the GIL) like a GPU call would."""
    seconds = float(job["input"].get("sleep", 0))
    time.sleep(seconds)
    return {"slept": seconds, "echo": job["input"].get("echo")}


if __name__ == "__main__":
    config: Dict[str, Any] = {"handler": handler}
    if os.environ.get("WORKER_REFRESH") == "1":
        config["refresh_worker"] = True
    serverless.start(config)
    # Reached only when start() returns normally (exit code 0 from here).
    print("worker main: start() returned", flush=True)
