"""Sync generator job: yield BENCH_CHUNKS (default 10) chunks {"n", "k"},
sleeping BENCH_CHUNK_SLEEP seconds (default 0) before each chunk after the first."""
import os
import time

from _sdk import start

CHUNKS = int(os.environ.get("BENCH_CHUNKS", "10"))
PAUSE = float(os.environ.get("BENCH_CHUNK_SLEEP", "0"))


def handler(job):
    n = job["input"]["n"]
    for k in range(CHUNKS):
        if PAUSE and k:
            time.sleep(PAUSE)
        yield {"n": n, "k": k}


if __name__ == "__main__":
    start(handler)
