"""Trivial sync job: return n + 1."""
from _sdk import start


def handler(job):
    return {"n": job["input"]["n"] + 1}


if __name__ == "__main__":
    start(handler)
