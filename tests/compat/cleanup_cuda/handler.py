""" Picks a device without torch and cleans its scratch folders. """

import os

import runpod
from runpod.serverless.utils import rp_cleanup, rp_cuda

DEVICE = "cuda" if rp_cuda.is_available() else "cpu"


def handler(job):
    os.makedirs("job_files", exist_ok=True)
    os.makedirs("scratch/tmp", exist_ok=True)
    with open("scratch/tmp/latents.bin", "wb") as handle:
        handle.write(b"\0" * 16)
    rp_cleanup.clean(["scratch"])
    return {
        "device": DEVICE,
        "cleaned": not os.path.exists("scratch") and not os.path.exists("job_files"),
        "input": job["input"],
    }


runpod.serverless.start({"handler": handler})
