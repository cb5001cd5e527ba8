"""Ask for a fresh worker after a job (e.g. after loading a one-off model).

Returning ``"refresh_worker": True`` in the output dict makes the platform
replace this worker after the job: the result carries ``"stopPod": true``
and the worker stops taking jobs, finishes and exits. The key itself is
removed from the output. ``start({"handler": ..., "refresh_worker": True})``
does it after every job.

    python handler.py
"""

import wavespeed.serverless as serverless


def handler(job):
    model = job["input"].get("model", "default")
    # ... load `model`, which pollutes the process for later jobs ...
    return {"model": model, "result": "ok", "refresh_worker": True}


if __name__ == "__main__":
    serverless.start({"handler": handler})
