""" Reports progress while it works, also from a helper thread. """

import threading

import runpod


def handler(job):
    steps = job["input"].get("steps", 3)
    for step in range(1, steps + 1):
        runpod.serverless.progress_update(job, f"step {step}/{steps}")

    def background():
        runpod.serverless.progress_update(job, {"phase": "upscaling"})

    worker = threading.Thread(target=background)
    worker.start()
    worker.join()

    return {"steps_done": steps}


runpod.serverless.start({"handler": handler})
