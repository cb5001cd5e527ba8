"""An ``async def`` generator handler: await inside, ``yield`` chunks out.

Typical for streaming tokens from an async model client.

    python handler.py
"""

import asyncio

import wavespeed.serverless as serverless


async def handler(job):
    count = int(job["input"].get("count", 3))
    for i in range(count):
        await asyncio.sleep(0.01)  # stands in for awaiting the next token
        yield {"index": i, "square": i * i}


if __name__ == "__main__":
    serverless.start({"handler": handler, "return_aggregate_stream": True})
