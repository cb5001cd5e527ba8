""" A test worker that points results at its own URL, as some test harnesses do. """

import os

import runpod
from runpod.serverless.modules import rp_http

if os.environ.get("CUSTOM_DONE_URL"):
    rp_http.JOB_DONE_URL = os.environ["CUSTOM_DONE_URL"]


def handler(job):
    return {"sum": sum(job["input"]["numbers"])}


runpod.serverless.start({"handler": handler})
