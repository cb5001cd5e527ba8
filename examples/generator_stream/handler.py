"""A generator handler: every ``yield`` is a stream chunk.

On the platform each chunk is posted as soon as it is yielded, and a client
reads them from ``/stream/<id>`` while the job runs. With
``return_aggregate_stream`` the final output is the list of all chunks too
(otherwise it is empty and the chunks are only on /stream).

    python handler.py              # prints each chunk as it comes, then the result
"""

import time

import wavespeed.serverless as serverless


def handler(job):
    prompt = job["input"].get("prompt", "")
    for word in prompt.split():
        time.sleep(0.01)  # stands in for generating one token
        yield {"token": word}


if __name__ == "__main__":
    serverless.start({"handler": handler, "return_aggregate_stream": True})
