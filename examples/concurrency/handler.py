"""Run several jobs at once with ``concurrency_modifier``.

The worker calls ``concurrency_modifier(current)`` before it asks for jobs
and runs up to the returned number at once, each on its own thread (sync
handlers too). Useful when a handler mostly waits: on a remote model, on
I/O, or on a GPU that batches. The local API honours it as well:

    python handler.py --rp_serve_api     # then POST several /run requests
"""

import time

import wavespeed.serverless as serverless

MAX_CONCURRENCY = 4


def concurrency_modifier(current):
    # Called often; keep it cheap. A real one might look at GPU memory or a
    # queue length. A bad return value keeps the previous concurrency.
    return MAX_CONCURRENCY


def handler(job):
    seconds = float(job["input"].get("seconds", 0.05))
    time.sleep(seconds)  # stands in for waiting on I/O
    return {"slept": seconds}


if __name__ == "__main__":
    serverless.start({"handler": handler, "concurrency_modifier": concurrency_modifier})
