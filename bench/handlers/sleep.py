"""Sync job that blocks: time.sleep(BENCH_SLEEP, default 0.05 s)."""
import os
import time

from _sdk import start

SLEEP = float(os.environ.get("BENCH_SLEEP", "0.05"))


def handler(job):
    time.sleep(SLEEP)
    return {"n": job["input"]["n"] + 1}


if __name__ == "__main__":
    start(handler)
