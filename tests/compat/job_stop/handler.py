""" A long-running async worker; the platform may stop a job midway. """

import asyncio

import runpod


async def handler(job):
    seconds = job["input"].get("seconds", 0)
    await asyncio.sleep(seconds)  # e.g. a long video render
    return {"slept": seconds}


runpod.serverless.start({"handler": handler, "concurrency_modifier": lambda current: 2})
