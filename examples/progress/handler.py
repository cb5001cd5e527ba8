"""Report progress while a long job runs.

``progress_update(job, data)`` sends ``data`` to the platform, where a
client polling ``/status/<id>`` sees it as the output of the IN_PROGRESS
job. It is safe from any thread and never raises into the handler.
Locally the updates are printed as they happen.

    python handler.py
"""

import time

import wavespeed.serverless as serverless


def handler(job):
    steps = int(job["input"].get("steps", 3))
    for step in range(1, steps + 1):
        time.sleep(0.01)  # stands in for one step of real work
        serverless.progress_update(job, {"step": step, "of": steps})
    return {"done": steps}


if __name__ == "__main__":
    serverless.start({"handler": handler})
