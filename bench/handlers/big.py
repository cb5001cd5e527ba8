"""Job with a large input (1 MB string): return n + 1 and the input's length."""
from _sdk import start


def handler(job):
    inp = job["input"]
    return {"n": inp["n"] + 1, "len": len(inp["blob"])}


if __name__ == "__main__":
    start(handler)
