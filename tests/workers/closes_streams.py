"""A worker whose handler closes ``sys.stdout`` and ``sys.stderr`` (input ``{"close": true}``).

Run by tests/test_logs_subprocess.py. After the streams are closed the
handler logs a line, and with ``{"close": true, "raise": true}`` it then
raises, so the SDK logs the error (through the closed streams) and posts a
FAILED result. Logging must never raise into the SDK: every later job is
still taken and answered.
"""

import sys
from typing import Any, Dict

import wavespeed.serverless as serverless


def handler(job: Dict[str, Any]) -> Dict[str, Any]:
    job_input = job["input"] or {}
    if job_input.get("close"):
        sys.stdout.close()
        sys.stderr.close()
        serverless.log.info("logged after the streams were closed")
        if job_input.get("raise"):
            raise RuntimeError("failing after closing the streams")
    return {"echo": job_input.get("echo")}


if __name__ == "__main__":
    serverless.start({"handler": handler})
