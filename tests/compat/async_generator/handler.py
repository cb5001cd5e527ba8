""" vLLM-style async generator worker. """

import asyncio

import runpod


async def handler(job):
    count = job["input"].get("count", 3)
    for i in range(count):
        await asyncio.sleep(0.01)
        yield f"chunk-{i}"


runpod.serverless.start({"handler": handler})
