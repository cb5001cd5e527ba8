"""The smallest useful worker: upper-cases a prompt.

Run it locally:   python examples/handler.py --test_input '{"input": {"prompt": "hi"}}'
or:               make test-local INPUT='{"input": {"prompt": "hi"}}'
On a platform (RUNPOD_WEBHOOK_GET_JOB or WAVERLESS_WEBHOOK_GET_JOB set) the
same file runs as a worker.
"""

import wavespeed.serverless as serverless


def handler(job):
    prompt = job["input"].get("prompt")
    if not isinstance(prompt, str):
        # A returned "error" marks the job FAILED on the platform.
        return {"error": "input.prompt must be a string"}
    return {"text": prompt.upper(), "length": len(prompt)}


if __name__ == "__main__":
    serverless.start({"handler": handler})
