""" Registers fitness checks that must pass before the worker takes jobs. """

import asyncio
import os

import runpod

STATE = {"sync": False, "async": False}


@runpod.serverless.register_fitness_check
def check_model_files():
    if os.environ.get("FAIL_FITNESS") == "1":
        raise RuntimeError("model file missing")
    STATE["sync"] = True


@runpod.serverless.register_fitness_check
async def check_backend():
    await asyncio.sleep(0)
    STATE["async"] = True


def handler(job):
    return {"checks": dict(STATE), "echo": job["input"]}


runpod.serverless.start({"handler": handler})
