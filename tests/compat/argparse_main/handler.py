""" A worker with its own flags, a main() and a SIGTERM handler of its own. """

import argparse
import os
import signal
import sys

import runpod

parser = argparse.ArgumentParser()
parser.add_argument("--model_name", default="tiny")
args, _unknown = parser.parse_known_args()


def on_sigterm(signum, frame):
    marker = os.environ.get("SIGTERM_MARKER")
    if marker:
        with open(marker, "w") as handle:
            handle.write("called")


def handler(job):
    return {"model": args.model_name, "prompt": job["input"]["prompt"], "argv0": os.path.basename(sys.argv[0])}


def main():
    signal.signal(signal.SIGTERM, on_sigterm)
    runpod.serverless.start({"handler": handler})


if __name__ == "__main__":
    main()
