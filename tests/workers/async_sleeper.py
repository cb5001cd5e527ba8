"""An async worker: each job awaits ``asyncio.sleep(input["sleep"])``.

Run by tests/test_async_engine.py with a FakePlatform's env; the
``concurrency_modifier`` answers ``$WORKER_CONCURRENCY``. Each result
carries the most threads the process had when the job started or ended.
A job with ``input["block"]`` first blocks the event loop that many seconds
(``time.sleep`` inside ``async def``), as a sync client call would.
"""

import asyncio
import os
import threading
import time
from typing import Any, Dict

import wavespeed.serverless as serverless


async def handler(job: Dict[str, Any]) -> Dict[str, Any]:
    at_start = threading.active_count()
    time.sleep(float(job["input"].get("block", 0)))
    await asyncio.sleep(float(job["input"]["sleep"]))
    return {"i": job["input"]["i"], "threads": max(at_start, threading.active_count())}


if __name__ == "__main__":
    concurrency = int(os.environ.get("WORKER_CONCURRENCY", "1"))
    serverless.start({"handler": handler, "concurrency_modifier": lambda current: concurrency})
