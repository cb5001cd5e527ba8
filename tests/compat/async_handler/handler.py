""" An async worker that serves several requests at once. """

import asyncio

import runpod


async def fake_llm(prompt: str) -> str:
    await asyncio.sleep(0.05)  # the model call
    return prompt[::-1]


async def async_handler(job):
    job_input = job["input"]
    text = await fake_llm(job_input["prompt"])
    return {"reversed": text, "job_id": job["id"]}


def adjust_concurrency(current_concurrency):
    return 4


runpod.serverless.start({
    "handler": async_handler,
    "concurrency_modifier": adjust_concurrency,
})
