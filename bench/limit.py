"""Reference loops for the bench, run with our interpreter (urllib3 from the
project's environment); each prints one JSON line.

    python limit.py loop PORT N          the stack limit: one thread, take + done
                                         through one urllib3 connection pool
    python limit.py own PORT N           the same loop with the requests written as the
                                         worker writes them (wavespeed's exchange() on
                                         the pool's connections): the limit of the
                                         approach, with no engine, threads or logs
    python limit.py post PORT BYTES REPS a bare urllib3 POST of a BYTES-long
                                         {"output": "<string>"} body
    python limit.py cpu PORT N ITERS     the stack limit for the CPU handler: the
                                         same loop calling handlers/cpu.py's
                                         burn(ITERS) between take and done, and
                                         the bare loop of burn() alone, in this
                                         one process

The loop does the least any worker must: GET job-take, parse the job, run the
trivial handler (n + 1), encode the result, POST job-done with the same
headers a worker sends. Nothing else: no threads, no retries, no bookkeeping.
"""
import json
import sys
import time
from pathlib import Path

import urllib3

API_KEY = "bench-key"
HEADERS = {"Authorization": API_KEY, "User-Agent": "bench-limit"}


def pool(port):
    return urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=1,
                                      timeout=urllib3.Timeout(connect=5.0, read=70.0))


def loop(port, n, work=None):
    p = pool(port)
    take = "/v2/ep/job-take/bench-pod?gpu=bench&job_in_progress=0"
    done = "/v2/ep/job-done/bench-pod/%s?gpu=bench&isStream=false"
    t, c = time.perf_counter(), time.process_time()
    jobs = 0
    while jobs < n:
        r = p.urlopen("GET", take, headers=HEADERS, retries=False, redirect=False)
        if r.status != 200:
            continue  # a held take that expired: ask again
        job = json.loads(r.data)
        if work is not None:
            work()
        body = json.dumps({"output": {"n": job["input"]["n"] + 1}}, ensure_ascii=False,
                          separators=(",", ":")).encode()
        headers = dict(HEADERS)
        headers["X-Request-ID"] = job["id"]
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        r = p.urlopen("POST", done % job["id"], body=body, headers=headers, retries=False,
                      redirect=False)
        if r.status != 200:
            raise SystemExit("job-done answered %d" % r.status)
        jobs += 1
    return {"jobs": jobs, "seconds": time.perf_counter() - t, "cpu_s": time.process_time() - c}


def own(port, n):
    """The loop of loop(), each request through the worker's own exchange()."""
    from wavespeed.serverless.exchange import exchange, header_block, host_line

    p = pool(port)
    host = host_line(p)
    get_head = header_block(HEADERS)
    take = b"/v2/ep/job-take/bench-pod?gpu=bench&job_in_progress=0"
    done = "/v2/ep/job-done/bench-pod/%s?gpu=bench&isStream=false"
    t, c = time.perf_counter(), time.process_time()
    jobs = 0
    while jobs < n:
        r = exchange(p, host, b"GET", take, get_head, None, 5.0, 70.0)
        if r.status != 200:
            continue  # a held take that expired: ask again
        job = json.loads(r.data)
        body = json.dumps({"output": {"n": job["input"]["n"] + 1}}, ensure_ascii=False,
                          separators=(",", ":")).encode()
        headers = dict(HEADERS)
        headers["X-Request-ID"] = job["id"]
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        r = exchange(p, host, b"POST", (done % job["id"]).encode(), header_block(headers), body,
                     5.0, 70.0)
        if r.status != 200:
            raise SystemExit("job-done answered %d" % r.status)
        jobs += 1
    return {"jobs": jobs, "seconds": time.perf_counter() - t, "cpu_s": time.process_time() - c}


def cpu(port, n, iters):
    """The take + burn + done loop against the bare burn() loop, in this process.

    On this kind of machine (a VM, the platform on the other vCPU) the two
    round trips after 20 ms of computing cost far more than in a tight loop:
    the platform's vCPU has gone idle and must be woken. This is the part of
    the worker's overhead that no SDK can remove.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent / "handlers"))
    from cpu import burn  # noqa: E402 - the handlers' function, not a copy

    burn(iters)  # warm up
    t = time.perf_counter()
    for _ in range(n):
        burn(iters)
    bare = time.perf_counter() - t
    in_loop = []

    def timed_burn():
        start = time.perf_counter()
        burn(iters)
        in_loop.append(time.perf_counter() - start)

    out = loop(port, n, work=timed_burn)
    # burn() itself, timed inside the loop: between round trips it runs slower
    # than alone, which no HTTP code can win back.
    return {"bare_seconds": bare, "seconds": out["seconds"], "cpu_s": out["cpu_s"],
            "burn_ms_alone": bare * 1000.0 / n, "burn_ms_in_loop": sum(in_loop) * 1000.0 / n}


def post(port, size, reps):
    p = pool(port)
    body = json.dumps({"output": "x" * size}, separators=(",", ":")).encode()
    times = []
    for _ in range(reps + 1):
        t = time.perf_counter()
        r = p.urlopen("POST", "/_ctl/sink", body=body, headers=HEADERS, retries=False)
        times.append(time.perf_counter() - t)
        if r.status != 200:
            raise SystemExit("sink answered %d" % r.status)
    times = sorted(times[1:])  # the first one opens the connection
    return {"bytes": len(body), "seconds": times[len(times) // 2], "all": times}


if __name__ == "__main__":
    what, port = sys.argv[1], int(sys.argv[2])
    if what == "loop":
        out = loop(port, int(sys.argv[3]))
    elif what == "own":
        out = own(port, int(sys.argv[3]))
    elif what == "cpu":
        out = cpu(port, int(sys.argv[3]), int(sys.argv[4]))
    else:
        out = post(port, int(sys.argv[3]), int(sys.argv[4]))
    print(json.dumps(out))
