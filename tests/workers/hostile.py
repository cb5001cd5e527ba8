"""A worker for the supervision tests (issue 9, section 1); its jobs harm the worker on purpose.

Job inputs (all optional):
- ``{"sleep": s}``: block in ``time.sleep`` for ``s`` seconds, then echo.
- ``{"arm": true}``: break the log pipeline so the fetcher thread dies: a
  logging handler installed before ``start()`` raises on the concurrency
  change the modifier then asks for, and again on the fetcher guard's own
  error line. ``SABOTAGE_DEATHS`` (default 1) says how many times the
  fetcher dies before the sabotage stops.
- ``{"close_std": true}``: close ``sys.stdout`` and ``sys.stderr`` (the
  SDK's log handler writes to the closed stream from then on).

``HOSTILE_MODIFIER=exit`` makes the ``concurrency_modifier`` raise SystemExit.
``HOSTILE_FSIZE=<bytes>`` caps the size of any file the process writes
(``RLIMIT_FSIZE``): a spool write larger than that fails like a full disk.
"""

import logging
import os
import resource
import sys
import threading
import time
from typing import Any, Dict

import wavespeed.serverless as serverless

ARMED = threading.Event()


class BrokenSink(logging.Handler):
    """A log handler that fails like a broken log pipeline while armed."""

    def __init__(self, deaths: int) -> None:
        super().__init__()
        self.deaths_left = deaths

    def emit(self, record: logging.LogRecord) -> None:
        if not ARMED.is_set():
            return
        message = record.getMessage()
        if record.name == "wavespeed.concurrency":
            raise RuntimeError("the log sink is broken (concurrency line)")
        if message.startswith("fetcher:"):
            self.deaths_left -= 1
            if self.deaths_left <= 0:
                ARMED.clear()
            raise RuntimeError("the log sink is broken (guard line)")


def modifier(current: int) -> int:
    if os.environ.get("HOSTILE_MODIFIER") == "exit":
        sys.exit(3)
    return 2 if ARMED.is_set() else 1


def handler(job: Dict[str, Any]) -> Dict[str, Any]:
    data = job["input"] or {}
    if data.get("arm"):
        ARMED.set()
    if data.get("close_std"):
        sys.stdout.close()
        sys.stderr.close()
    time.sleep(float(data.get("sleep", 0)))
    return {"echo": data}


if __name__ == "__main__":
    if os.environ.get("HOSTILE_FSIZE"):
        limit = int(os.environ["HOSTILE_FSIZE"])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # Python ignores SIGXFSZ: writes fail EFBIG
    logging.getLogger("wavespeed").addHandler(BrokenSink(int(os.environ.get("SABOTAGE_DEATHS", "1"))))
    serverless.start({"handler": handler, "concurrency_modifier": modifier})
    try:
        print("worker main: start() returned", flush=True)
    except ValueError:  # a job closed stdout
        pass
