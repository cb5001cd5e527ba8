""" A sync handler that must run several jobs at once. """

import threading
import time

import runpod

# All jobs of a batch meet here: it only opens when `parties` run at once.
BARRIERS = {}
LOCK = threading.Lock()


def handler(job):
    parties = job["input"].get("parties", 1)
    if parties > 1:
        with LOCK:
            barrier = BARRIERS.setdefault(parties, threading.Barrier(parties, timeout=20))
        barrier.wait()
    time.sleep(0.01)
    return {"parties": parties, "thread": threading.current_thread().name != "MainThread"}


runpod.serverless.start({
    "handler": handler,
    "concurrency_modifier": lambda current: 3,
    "concurrency_controller": lambda: False,  # legacy key: ignored with a warning
})
