"""Pure-Python CPU job: burn(BENCH_CPU_ITERS) holds the GIL for about 20 ms.

    python cpu.py --calibrate SECONDS   print the iterations that take SECONDS
    python cpu.py --bare N              call burn() N times in a bare loop and
                                        print {"seconds", "cpu_s"} as JSON
    BENCH_BARE_OUT=FILE python cpu.py   as a worker, first run that bare loop
                                        (BENCH_BARE_N times) in this same process
                                        and write its JSON to FILE, then start

The bare loop is the reference the worker is measured against: the same
function, the same interpreter, no SDK. The bench runs it inside the worker's
own process, just before start(): on this shared machine two processes
running the same loop differ by up to a third in speed (memory layout, the
host's load from one second to the next), which would drown a 3 % bar.
"""
import json
import os
import sys
import time

ITERS = int(os.environ.get("BENCH_CPU_ITERS", "200000"))


def burn(iters):
    x = 0
    for i in range(iters):
        x += i * i
    return x


def handler(job):
    burn(ITERS)
    return {"n": job["input"]["n"] + 1}


def calibrate(seconds):
    burn(50000)  # warm up
    probe = 200000
    best = min(_timed(probe) for _ in range(5))
    return max(1000, int(probe * seconds / best))


def bare(n):
    burn(ITERS)  # warm up, as the worker's first job is not timed apart
    t, c = time.perf_counter(), time.process_time()
    for _ in range(n):
        burn(ITERS)
    return {"seconds": time.perf_counter() - t, "cpu_s": time.process_time() - c}


def _timed(iters):
    t = time.perf_counter()
    burn(iters)
    return time.perf_counter() - t


if __name__ == "__main__":
    if sys.argv[1:2] == ["--calibrate"]:
        print(calibrate(float(sys.argv[2])))
    elif sys.argv[1:2] == ["--bare"]:
        print(json.dumps(bare(int(sys.argv[2]))))
    else:
        from _sdk import start

        if os.environ.get("BENCH_BARE_OUT"):
            result = bare(int(os.environ["BENCH_BARE_N"]))
            with open(os.environ["BENCH_BARE_OUT"], "w") as f:
                json.dump(result, f)

        start(handler)
