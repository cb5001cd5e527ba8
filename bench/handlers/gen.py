"""Sync generator job: yield BENCH_CHUNKS (default 10) chunks {"n", "k"}."""
import os

from _sdk import start

CHUNKS = int(os.environ.get("BENCH_CHUNKS", "10"))


def handler(job):
    n = job["input"]["n"]
    for k in range(CHUNKS):
        yield {"n": n, "k": k}


if __name__ == "__main__":
    start(handler)
