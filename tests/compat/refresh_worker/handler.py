""" Asks for a fresh worker after each job (e.g. to free GPU memory). """

import runpod


def handler(job):
    return {"result": job["input"]["value"] * 2, "refresh_worker": True}


runpod.serverless.start({"handler": handler})
