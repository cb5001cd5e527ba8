"""Shared start-up for the bench handler scripts.

BENCH_SDK picks the import: `runpod` runs `import runpod;
runpod.serverless.start(cfg)`; `ours` and `wavespeed` (1.0.14) both run
`import wavespeed.serverless as serverless; serverless.start(cfg)` -- the
same import name, each from its own interpreter.  BENCH_CONCURRENCY sets
the concurrency through the start config, as a user would.
"""

import os


def start(handler):
    n = int(os.environ.get("BENCH_CONCURRENCY", "1"))
    cfg = {"handler": handler, "concurrency_modifier": lambda current: n}
    if os.environ.get("BENCH_SDK") == "runpod":
        import runpod

        runpod.serverless.start(cfg)
    else:
        import wavespeed.serverless as serverless

        serverless.start(cfg)
