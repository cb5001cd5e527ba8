"""A plain function handler: the job dict in, a JSON-able value out.

    python handler.py                                  # uses ./test_input.json
    python handler.py --test_input '{"input": {"text": "a b c"}}'
    python handler.py --rp_serve_api                   # local HTTP API on :8000
"""

import wavespeed.serverless as serverless


def handler(job):
    # job == {"id": "...", "input": {...}}; "input" is whatever the caller sent.
    text = job["input"].get("text", "")
    words = text.split()
    # The returned dict becomes the job's output. Returning {"error": "..."}
    # instead would mark the job FAILED.
    return {"words": len(words), "reversed": text[::-1]}


if __name__ == "__main__":
    serverless.start({"handler": handler})
