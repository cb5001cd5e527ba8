""" Times its phases with runpod's debugger helpers (see --rp_debugger). """

import time

import runpod
from runpod.serverless.utils.rp_debugger import FunctionTimer, LineTimer


@FunctionTimer
def load_inputs(job_input):
    time.sleep(0.01)
    return job_input["text"]


def handler(job):
    text = load_inputs(job["input"])
    with LineTimer("inference"):
        time.sleep(0.01)
        result = text.upper()
    return {"result": result}


runpod.serverless.start({"handler": handler})
