""" Uses runpod's logger the ways workers do. """

import runpod
from runpod.serverless.modules.rp_logger import RunPodLogger

logger = RunPodLogger()
logger.info("Loading model (stand-in)...")

module_logger = runpod.RunPodLogger()


def handler(job):
    job_id = job["id"]
    logger.info("positional job id", job_id)
    logger.warn("keyword job id", job_id=job_id)
    module_logger.error("keyword request id", request_id=job_id)
    logger.debug("debug line hidden at INFO", job_id)
    return {"logged": 3}


runpod.serverless.start({"handler": handler})
