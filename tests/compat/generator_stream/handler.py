""" Streams tokens as they are generated (sync generator). """

import runpod


def generator_handler(job):
    prompt = job["input"]["prompt"]
    for index, word in enumerate(prompt.split()):
        yield {"token": word, "index": index}


runpod.serverless.start({
    "handler": generator_handler,
    "return_aggregate_stream": True,
})
