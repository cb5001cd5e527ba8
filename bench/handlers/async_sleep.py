"""Async job: await asyncio.sleep(BENCH_SLEEP, default 0.05 s)."""
import asyncio
import os

from _sdk import start

SLEEP = float(os.environ.get("BENCH_SLEEP", "0.05"))


async def handler(job):
    await asyncio.sleep(SLEEP)
    return {"n": job["input"]["n"] + 1}


if __name__ == "__main__":
    start(handler)
