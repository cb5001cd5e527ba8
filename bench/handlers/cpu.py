"""Pure-Python CPU job: burn(BENCH_CPU_ITERS) holds the GIL for about 20 ms.

    python cpu.py --calibrate SECONDS   print the iterations that take SECONDS
    python cpu.py --bare N              call burn() N times in a bare loop and
                                        print {"seconds", "cpu_s"} as JSON

The bare loop is the reference the worker is measured against: the same
function, the same interpreter, no SDK.
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


def _timed(iters):
    t = time.perf_counter()
    burn(iters)
    return time.perf_counter() - t


if __name__ == "__main__":
    if sys.argv[1:2] == ["--calibrate"]:
        print(calibrate(float(sys.argv[2])))
    elif sys.argv[1:2] == ["--bare"]:
        n = int(sys.argv[2])
        burn(ITERS)  # warm up, as the worker's first job is not timed apart
        t, c = time.perf_counter(), time.process_time()
        for _ in range(n):
            burn(ITERS)
        print(json.dumps({"seconds": time.perf_counter() - t, "cpu_s": time.process_time() - c}))
    else:
        from _sdk import start

        start(handler)
