"""A worker whose handler does what ``input["kind"]`` says (reliability tests).

Kinds: ``echo`` (returns ``{"n": input["n"]}``), ``sleep`` (blocks in
time.sleep for ``input["seconds"]``), ``raise`` (raises RuntimeError),
``progress`` (one progress update, then echo), ``gen`` (yields three chunks).
``WORKER_CONCURRENCY`` sets a constant concurrency (default 1).
"""

import os
import time
from typing import Any, Dict, Iterator

import wavespeed.serverless as serverless


def _chunks(n: Any) -> Iterator[Dict[str, Any]]:
    for i in range(3):
        yield {"n": n, "i": i}


def handler(job: Dict[str, Any]) -> Any:
    """Dispatch on the job's kind; see the module docstring."""
    data = job["input"]
    kind = data.get("kind", "echo")
    if kind == "sleep":
        time.sleep(float(data.get("seconds", 1)))
        return {"slept": True}
    if kind == "raise":
        raise RuntimeError("the handler failed on purpose")
    if kind == "progress":
        serverless.progress_update(job, {"step": 1})
        return {"n": data.get("n")}
    if kind == "gen":
        return _chunks(data.get("n"))
    return {"n": data.get("n")}


if __name__ == "__main__":
    concurrency = int(os.environ.get("WORKER_CONCURRENCY", "1"))
    serverless.start({"handler": handler, "concurrency_modifier": lambda _c: concurrency})
    print("worker main: start() returned", flush=True)
