"""An ``async def`` handler: await I/O (HTTP calls, queues, model servers).

Each job runs on its pool thread's own event loop, so one slow job never
blocks another, and sync and async handlers are configured the same way.

    python handler.py
"""

import asyncio

import wavespeed.serverless as serverless


async def fetch(index, delay):
    # Stands in for a real awaitable, e.g. an HTTP request to a model server.
    await asyncio.sleep(delay)
    return {"part": index, "waited": delay}


async def handler(job):
    delays = job["input"].get("delays", [0.05, 0.05, 0.05])
    # The awaits overlap: this takes about max(delays), not their sum.
    parts = await asyncio.gather(*(fetch(i, d) for i, d in enumerate(delays)))
    return {"parts": parts}


if __name__ == "__main__":
    serverless.start({"handler": handler})
