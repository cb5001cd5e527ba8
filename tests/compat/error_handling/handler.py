""" Fails in the several ways real workers do. """

import json

import runpod


def handler(job):
    mode = job["input"].get("mode", "ok")
    if mode == "raise":
        raise ValueError("model exploded")
    if mode == "dict_error":
        return {"error": {"code": 42, "message": "bad prompt"}}
    if mode == "json_error":
        return {"error": json.dumps({"detail": "out of memory"})}
    if mode == "empty_error":
        return {"error": "", "value": 1}
    return {"status": "ok"}


runpod.serverless.start({"handler": handler})
