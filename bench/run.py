#!/usr/bin/env python3
"""Benchmark: our worker SDK against runpod 1.12.0 and wavespeed 1.0.14.

    python bench/run.py [--quick] [--sdk ours,runpod,wavespeed]
                        [--scenario cold,trivial1,...] [--reps N] [--check]

Each SDK runs as a subprocess worker (its own virtualenv, see peers.py)
against bench/fake_platform.py, a fast fake platform on 127.0.0.1 that serves
pre-made jobs and checks every result.  Every scenario is bounded in time:
a worker too slow to finish is stopped and its figures extrapolated from
the part it did (marked "~" in the table).  Prints one table and writes
bench/results/<timestamp>.json.  Worker logs go to the cache folder.
See bench/README.md for what each figure means.
"""

import argparse
import ctypes
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import client as clientmod  # noqa: E402
import peers  # noqa: E402

mono = time.monotonic
HANDLERS = HERE / "handlers"
RESULTS = HERE / "results"
CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1024.0 * 1024.0
API_KEY = "bench-key"


def log(msg):
    sys.stderr.write("[bench] %s\n" % msg)
    sys.stderr.flush()


# --------------------------------------------------------------------------
# process accounting (/proc)

def _read_stat(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2:].split()
    # rest[0] is field 3 (state); field N is rest[N - 3]
    return {
        "pgrp": int(rest[2]),
        "cpu": (int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])) / CLK,
        "rss": int(rest[21]) * PAGE,
        "state": rest[0],
    }


def _all_pids():
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def group_pids(pgid):
    out = []
    for pid in _all_pids():
        st = _read_stat(pid)
        if st and st["pgrp"] == pgid and st["state"] != b"Z":
            out.append(pid)
    return out


def usage(pgid, main_pid):
    """CPU seconds (group, incl. reaped children) and RSS bytes (group, main)."""
    cpu = 0.0
    rss = 0
    rss_main = 0
    n = 0
    for pid in _all_pids():
        st = _read_stat(pid)
        if not st or st["pgrp"] != pgid:
            continue
        cpu += st["cpu"]
        rss += st["rss"]
        n += 1
        if pid == main_pid:
            rss_main = st["rss"]
    return {"t": mono(), "cpu": cpu, "rss": rss, "rss_main": rss_main, "procs": n}


def pids_with_token(token):
    needle = ("BENCH_TOKEN=%s" % token).encode()
    found = []
    for pid in _all_pids():
        try:
            with open("/proc/%d/environ" % pid, "rb") as f:
                if needle in f.read():
                    found.append(pid)
        except OSError:
            pass
    return found


def sweep_orphans():
    """Kill workers left by an earlier bench that was itself killed (SIGKILL
    leaves e.g. runpod's heartbeat process behind): processes carrying a
    BENCH_TOKEN whose BENCH_OWNER bench process is gone."""
    killed = []
    for pid in _all_pids():
        try:
            with open("/proc/%d/environ" % pid, "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        except OSError:
            continue
        if b"BENCH_TOKEN" not in env or b"BENCH_OWNER" not in env:
            continue
        owner = int(env[b"BENCH_OWNER"])
        st = _read_stat(owner)
        if owner == os.getpid() or (st is not None and st["state"] != b"Z"):
            continue  # its bench is still running
        me = _read_stat(pid)
        if me is None or me["state"] == b"Z":
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass
    return killed


_libc = ctypes.CDLL(None, use_errno=True)


def _child_setup():
    # PR_SET_PDEATHSIG: the child dies with the bench, even on SIGKILL
    _libc.prctl(1, signal.SIGKILL, 0, 0, 0)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --------------------------------------------------------------------------
# platform and workers

class PlatformProc:
    def __init__(self, logdir):
        self.err = open(logdir / "platform.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "fake_platform.py")],
            stdout=subprocess.PIPE, stderr=self.err, start_new_session=True,
            preexec_fn=_child_setup, env={**os.environ, "BENCH_API_KEY": API_KEY})
        line = self.proc.stdout.readline().decode()
        if not line.startswith("LISTENING "):
            raise RuntimeError("platform did not start: %r" % line)
        self.port = int(line.split()[1])
        self.ctl = clientmod.Client(self.port)

    def cpu(self):
        st = _read_stat(self.proc.pid)
        return st["cpu"] if st else 0.0

    def reset(self, mode="longpoll", hold=60.0, limit=1, stream_delay=0.0):
        self.ctl.json("POST", "/_ctl/reset", {"mode": mode, "hold": hold, "limit": limit,
                                              "stream_delay": stream_delay})

    def load(self, **spec):
        self.ctl.json("POST", "/_ctl/load", spec)

    def progress(self):
        return self.ctl.json("GET", "/_ctl/progress")

    def stats(self):
        return self.ctl.json("GET", "/_ctl/stats")

    def stop(self):
        try:
            self.ctl.request("POST", "/_ctl/quit")
        except Exception:
            pass
        self.ctl.close()
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.err.close()


class Worker:
    """One SDK worker subprocess, in its own process group."""

    def __init__(self, ctx, sdk, script, concurrency=1, extra_env=None, tag=""):
        self.ctx = ctx
        self.sdk = sdk
        self.token = uuid.uuid4().hex
        port = ctx.platform.port
        base = "http://127.0.0.1:%d/v2/ep" % port
        env = peers.base_env(sdk)
        env.update({
            "RUNPOD_WEBHOOK_GET_JOB": base + "/job-take/$ID?gpu=bench",
            "RUNPOD_WEBHOOK_POST_OUTPUT": base + "/job-done/$RUNPOD_POD_ID/$ID?gpu=bench",
            "RUNPOD_WEBHOOK_POST_STREAM": base + "/job-stream/$RUNPOD_POD_ID/$ID?gpu=bench",
            "RUNPOD_WEBHOOK_PING": base + "/ping/$RUNPOD_POD_ID?gpu=bench",
            "RUNPOD_POD_ID": "bench-pod",
            "RUNPOD_ENDPOINT_ID": "ep",  # wavespeed 1.0.14 runs its worker only when set
            "RUNPOD_AI_API_KEY": API_KEY,
            "RUNPOD_PING_INTERVAL": "10000",
            # runpod's start-up checks try to reach the internet
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
            "RUNPOD_SKIP_GPU_CHECK": "true",
            "BENCH_SDK": sdk.name,
            "BENCH_CONCURRENCY": str(concurrency),
            "BENCH_TOKEN": self.token,
            "BENCH_OWNER": str(os.getpid()),
        })
        env.update(extra_env or {})
        args = [a.replace("{free_port}", str(free_port())) for a in sdk.extra_args]
        self.cmd = [sdk.python, str(HANDLERS / script)] + args
        self.env = env
        self.log_path = ctx.logdir / ("%s-%s%s.log" % (sdk.name, script.replace(".py", ""), tag))
        self.proc = None
        self.t_spawn = None

    def start(self):
        self.logf = open(self.log_path, "ab")
        self.t_spawn = mono()
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, cwd=str(self.ctx.cwd), stdin=subprocess.DEVNULL,
            stdout=self.logf, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_child_setup)
        self.pgid = self.proc.pid
        self.ctx.live.add(self)
        return self

    def usage(self):
        return usage(self.pgid, self.proc.pid)

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        """Kill the whole process group, then anything still carrying our token."""
        leftovers = 0
        if self.proc is not None:
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            for pid in pids_with_token(self.token):
                leftovers += 1
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.ctx.live.discard(self)
        if not self.logf.closed:
            self.logf.close()
        return leftovers


class Ctx:
    def __init__(self, args, logdir):
        self.args = args
        self.logdir = logdir
        self.cwd = peers.CACHE / "cwd"
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.live = set()
        self.platform = None


def wait_first_take(ctx, w, timeout=30.0):
    deadline = mono() + timeout
    while True:
        p = ctx.platform.progress()
        if p["first_req_t"] is not None:
            return p
        if not w.alive():
            raise RuntimeError("%s worker exited (rc %s) before taking a job; log: %s"
                               % (w.sdk.name, w.proc.returncode, w.log_path))
        if mono() > deadline:
            raise RuntimeError("%s worker made no job-take in %.0f s; log: %s"
                               % (w.sdk.name, timeout, w.log_path))
        time.sleep(0.01)


# --------------------------------------------------------------------------
# scenarios

def scenario_specs(quick):
    """name -> spec.  n: jobs; conc; work: seconds of work per job (ideal)."""
    q = quick
    specs = [
        dict(key="trivial1", title="1. trivial sync jobs, c=1", script="noop.py", kind="echo",
             n=500 if q else 2000, conc=1, work=0.0, cap=10 if q else 20),
        dict(key="trivial8", title="1. trivial sync jobs, c=8", script="noop.py", kind="echo",
             n=500 if q else 2000, conc=8, work=0.0, cap=8 if q else 15),
        dict(key="sleep1", title="2. sync time.sleep(0.05), c=1", script="sleep.py", kind="echo",
             n=60 if q else 400, conc=1, work=0.05, cap=8 if q else 30),
        dict(key="sleep16", title="2. sync time.sleep(0.05), c=16", script="sleep.py", kind="echo",
             n=400, conc=16, work=0.05, cap=6 if q else 10),
        dict(key="async16", title="3. async asyncio.sleep(0.05), c=16", script="async_sleep.py",
             kind="echo", n=200, conc=16, work=0.05, cap=6 if q else 10),
        dict(key="gen4", title="4. sync generator, 10 chunks, c=4", script="gen.py", kind="gen",
             n=100 if q else 200, conc=4, work=0.0, cap=6 if q else 10, chunks=10),
        dict(key="agen4", title="4. async generator, 10 chunks, c=4", script="agen.py", kind="gen",
             n=100 if q else 200, conc=4, work=0.0, cap=6 if q else 10, chunks=10),
        dict(key="big", title="5. 1 MB input, c=1", script="big.py", kind="big",
             n=50 if q else 200, conc=1, work=0.0, cap=8 if q else 15, blob=1 << 20),
        dict(key="soak", title="8. 20,000 trivial jobs, c=8", script="noop.py", kind="echo",
             n=3000 if q else 20000, conc=8, work=0.0, cap=20 if q else 60),
        dict(key="cpu20", title="9. pure-Python 20 ms CPU handler, c=1", script="cpu.py",
             kind="echo", n=200, conc=1, work=0.02, cap=10 if q else 15),
        dict(key="bigout", title="10. one 20 MB string output, c=1", script="big_out.py",
             kind="bigout", n=3 if q else 5, conc=1, work=0.0, cap=10 if q else 15,
             blob=20 << 20, peak=True),
        dict(key="stream20", title="11. 50 chunks every 20 ms, 20 ms per stream POST, c=1",
             script="gen.py", kind="gen", n=3 if q else 5, conc=1, work=0.98,
             cap=15 if q else 25, chunks=50, chunk_sleep=0.02, stream_delay=0.02),
    ]
    return {s["key"]: s for s in specs}


ALL_SCENARIOS = ["cold", "trivial1", "trivial8", "sleep1", "sleep16", "async16",
                 "gen4", "agen4", "big", "cpu20", "bigout", "stream20", "idle", "soak"]

# Scenarios measured `reps` times for ours (medians); each run is under 10 s.
REPEATED = ("trivial1", "trivial8", "sleep16", "async16", "gen4", "agen4", "cpu20", "bigout")


def proc_status(pid, field):
    """A kB field of /proc/<pid>/status (VmRSS, VmHWM) in bytes, or None."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss(pid):
    """Restart the process's peak-RSS count (VmHWM) from its current RSS."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def run_ours_python(ctx, args, timeout=120):
    """Run a bench helper with our interpreter; return its JSON line."""
    sdk = peers.SDKS["ours"]
    r = subprocess.run([sdk.python] + [str(a) for a in args], env=peers.base_env(sdk),
                       cwd=str(ctx.cwd), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout, preexec_fn=_child_setup)
    if r.returncode != 0:
        raise RuntimeError("%s: %s" % (args[:2], r.stderr.decode()[-1000:]))
    return json.loads(r.stdout.decode().strip().splitlines()[-1])


def run_limit(ctx, n, how="loop"):
    """The stack limit: a bare single-thread take + done loop through a urllib3
    pool, against the same platform, in the same run (bench/limit.py); with
    how="own", the same loop writing its requests as the worker does."""
    plat = ctx.platform
    plat.reset(mode=ctx.args.take_mode, hold=60.0, limit=1)
    plat.load(kind="echo", n=n, prefix="limit-" + how)
    out = run_ours_python(ctx, [HERE / "limit.py", how, plat.port, n])
    st = plat.stats()
    if st["done"] != n or st["wrong"] or st["dup"]:
        raise RuntimeError("the stack-limit loop got %r" % {k: st[k] for k in ("done", "wrong", "dup")})
    wall = st["last_done_t"] - st["first_job_t"]
    return {"jobs_per_s": n / wall, "wall_s": wall, "cpu_ms_per_job": out["cpu_s"] * 1000 / n}


def run_cpu_limit(ctx, n):
    """The stack limit for cpu20: take + the same burn() + done in one thread
    (bench/limit.py cpu), with its own bare loop, same platform, same run."""
    plat = ctx.platform
    plat.reset(mode=ctx.args.take_mode, hold=60.0, limit=1)
    plat.load(kind="echo", n=n, prefix="cpulimit")
    return run_ours_python(ctx, [HERE / "limit.py", "cpu", plat.port, n, cpu_iters(ctx)])


def cpu_iters(ctx):
    """Iterations of bench/handlers/cpu.py's burn() that take 20 ms here."""
    if getattr(ctx, "cpu_iters", None) is None:
        sdk = peers.SDKS["ours"]
        r = subprocess.run([sdk.python, str(HANDLERS / "cpu.py"), "--calibrate", "0.02"],
                           env=peers.base_env(sdk), stdout=subprocess.PIPE, timeout=60, check=True)
        ctx.cpu_iters = int(r.stdout.decode().strip())
    return ctx.cpu_iters


def run_scenario(ctx, sdk, sc):
    """A job scenario, with its same-run references; ours runs `reps` times
    (REPEATED scenarios) and the median run by jobs/s is kept."""
    reps = ctx.args.reps if (sdk.name == "ours" and sc["key"] in REPEATED) else 1
    runs = []
    for _ in range(reps):
        ref = {}
        if sc["key"] == "trivial1":
            ref["limit"] = run_limit(ctx, sc["n"])
            ref["own_limit"] = run_limit(ctx, sc["n"], "own")
        elif sc["key"] == "cpu20" and sdk.name == "ours":
            ref["cpu_limit"] = run_cpu_limit(ctx, sc["n"])
        elif sc["key"] == "bigout":
            ref["bare_post"] = run_ours_python(ctx, [HERE / "limit.py", "post", ctx.platform.port,
                                                     sc["blob"], 3])
        res = run_jobs(ctx, sdk, sc)
        if "limit" in ref:
            res["limit_jobs_per_s"] = ref["limit"]["jobs_per_s"]
            res["limit_cpu_ms_per_job"] = ref["limit"]["cpu_ms_per_job"]
            res["pct_of_limit"] = 100.0 * res["jobs_per_s"] / ref["limit"]["jobs_per_s"]
        if "own_limit" in ref:
            res["own_limit_jobs_per_s"] = ref["own_limit"]["jobs_per_s"]
            res["own_limit_cpu_ms_per_job"] = ref["own_limit"]["cpu_ms_per_job"]
            res["pct_of_own_limit"] = 100.0 * res["jobs_per_s"] / ref["own_limit"]["jobs_per_s"]
        if "cpu_limit" in ref and res.get("wall_s"):
            lim = ref["cpu_limit"]
            res["cpu_limit_s"] = lim["seconds"]
            res["cpu_limit_pct_of_bare"] = 100.0 * lim["bare_seconds"] / lim["seconds"]
            res["pct_of_cpu_limit"] = 100.0 * lim["seconds"] / res["wall_s"]
            if "burn_ms_in_loop" in lim:
                res["cpu_limit_burn_ms"] = "%.1f alone, %.1f in the loop" % (
                    lim["burn_ms_alone"], lim["burn_ms_in_loop"])
        if res.get("bare_s"):  # cpu20: the bare loop ran in the worker's own process
            res["pct_of_bare"] = (100.0 * res["bare_s"] / res["wall_s"]) if res.get("wall_s") else None
        if "bare_post" in ref:
            res["bare_post_ms"] = ref["bare_post"]["seconds"] * 1000
            post = res.get("post_ms")
            res["post_vs_bare"] = (post / res["bare_post_ms"]) if post else None
        runs.append(res)
        if res.get("status") != "complete":
            break
    if len(runs) == 1:
        return runs[0]
    runs.sort(key=lambda r: r.get("jobs_per_s") or 0.0)
    chosen = dict(runs[len(runs) // 2])
    chosen["reps"] = len(runs)
    chosen["reps_jobs_per_s"] = [r.get("jobs_per_s") for r in runs]
    for key in ("pct_of_limit", "pct_of_own_limit", "pct_of_bare", "pct_of_cpu_limit", "cpu_limit_pct_of_bare",
                "cpu_ms_per_job", "post_vs_bare", "peak_rss_growth_mb"):
        vals = sorted(r[key] for r in runs if r.get(key) is not None)
        if vals:
            chosen[key] = vals[len(vals) // 2]
    return chosen


def run_jobs(ctx, sdk, sc):
    """Throughput scenario: start worker, wait for its first take, load N jobs,
    wait for all results (bounded), collect figures."""
    q = ctx.args.quick
    observe = 3.0 if q else 6.0  # seconds before a too-slow worker is stopped
    stall = 4.0  # seconds without a result -> stalled
    n = sc["n"]
    plat = ctx.platform
    plat.reset(mode=ctx.args.take_mode, hold=60.0, limit=sc["conc"],
               stream_delay=sc.get("stream_delay", 0.0))
    env = {}
    if sc["kind"] == "gen":
        env["BENCH_CHUNKS"] = str(sc["chunks"])
        if sc.get("chunk_sleep"):
            env["BENCH_CHUNK_SLEEP"] = str(sc["chunk_sleep"])
    bare_out = None
    if sc["key"] == "cpu20":
        env["BENCH_CPU_ITERS"] = str(cpu_iters(ctx))
        # The reference bare loop runs in the worker's own process, just before
        # start() (see handlers/cpu.py for why not in a process of its own).
        bare_out = ctx.logdir / ("bare-%s-%s.json" % (sdk.name, uuid.uuid4().hex[:8]))
        env["BENCH_BARE_OUT"] = str(bare_out)
        env["BENCH_BARE_N"] = str(n)
    w = Worker(ctx, sdk, sc["script"], sc["conc"], env, tag="-" + sc["key"]).start()
    res = {"n": n, "conc": sc["conc"]}
    try:
        p = wait_first_take(ctx, w)
        res["start_to_first_take_s"] = p["first_req_t"] - w.t_spawn
        time.sleep(0.05)  # let a batch-capable worker settle its first take
        base = w.usage()
        plat_cpu0 = plat.cpu()
        load = dict(kind=sc["kind"], n=n, prefix=sc["key"])
        if "chunks" in sc:
            load["chunks"] = sc["chunks"]
        if "blob" in sc:
            load["blob"] = sc["blob"]
        peak_reset = False
        if sc.get("peak"):
            # The peak RSS of the main process (where every SDK runs its
            # handlers) from here on, against its RSS now.
            peak_reset = reset_peak_rss(w.proc.pid)
            rss_before_jobs = proc_status(w.proc.pid, "VmRSS")
        plat.load(**load)
        t_load = mono()
        last_done, last_change = 0, t_load
        next_sample = t_load + 0.5
        peak_rss = base["rss"]
        rss_warm = None
        status = "complete"
        while True:
            time.sleep(0.05)
            p = plat.progress()
            t = mono()
            if t >= next_sample:
                next_sample = t + 0.5
                u = w.usage()
                peak_rss = max(peak_rss, u["rss"])
                if rss_warm is None and p["done"] >= min(1000, n // 10) and p["done"] > 0:
                    rss_warm = u
            if p["done"] >= n:
                break
            if p["done"] != last_done:
                last_done, last_change = p["done"], t
            if not w.alive():
                status = "worker exited (rc %s)" % w.proc.returncode
                break
            el = t - t_load
            if t - last_change > stall:
                status = "stalled"
                break
            if el >= sc["cap"]:
                status = "time cap"
                break
            if el >= observe and (p["done"] == 0 or el * n / p["done"] > sc["cap"]):
                status = "too slow"
                break
        end = w.usage()
        if sc.get("peak"):
            hwm = proc_status(w.proc.pid, "VmHWM")
            if peak_reset and hwm is not None and rss_before_jobs is not None:
                res["peak_rss_growth_mb"] = (hwm - rss_before_jobs) / MB
        plat_cpu = plat.cpu() - plat_cpu0
        peak_rss = max(peak_rss, end["rss"])
        if status == "complete":
            time.sleep(0.2)  # a late duplicate would land now
        st = plat.stats()
    finally:
        res["leftover_procs"] = w.kill()
    if sc["kind"] == "bigout":
        res["post_ms"] = _post_ms(w.log_path, st.get("done_t_by_n") or {})
    if bare_out is not None and bare_out.exists():
        res["bare_s"] = json.loads(bare_out.read_text())["seconds"]
    done = st["done"]
    first = st["first_job_t"] or t_load
    res.update({
        "status": status, "done": done, "taken": st["taken"],
        "dup": st["dup"], "wrong": st["wrong"], "unknown": st["unknown"],
        "wrong_samples": st["wrong_samples"],
        "requests": st["requests"], "take_empty": st["take_empty"],
        "max_in_flight": st["max_in_flight"], "over_limit_takes": st["over_limit_takes"],
        "max_batch": st["max_batch"], "batch_over_limit": st["batch_over_limit"],
        "auth_missing": st["auth_missing"], "xrid_mismatch": st["xrid_mismatch"],
        "pings": st["pings"], "pings_with_jobs": st["pings_with_jobs"],
        "lat_ms": {k: (v * 1000 if isinstance(v, float) else v) for k, v in st["lat"].items()},
        "cpu_s": end["cpu"] - base["cpu"],
        "cpu_ms_per_job": (end["cpu"] - base["cpu"]) * 1000 / done if done else None,
        "rss_start_mb": base["rss"] / MB, "rss_end_mb": end["rss"] / MB,
        "rss_main_start_mb": base["rss_main"] / MB, "rss_main_end_mb": end["rss_main"] / MB,
        "rss_peak_mb": peak_rss / MB, "procs": end["procs"],
        # the fake platform's own CPU over the run: near 100 % would mean it,
        # not the worker, set the pace
        "platform_cpu_pct": plat_cpu / max(1e-9, end["t"] - base["t"]) * 100.0,
    })
    if rss_warm is not None:
        res["rss_warm_mb"] = rss_warm["rss"] / MB
        res["rss_main_warm_mb"] = rss_warm["rss_main"] / MB
    if sc["kind"] == "gen":
        res.update({"chunks_expected": n * sc["chunks"], "chunks_total": st["chunks_total"],
                    "late_chunks": st["late_chunks"], "bad_chunks": st["bad_chunks"],
                    "stream_posts": st["stream_posts"],
                    "final_not_isStream": st["gen_final_not_stream"]})
    complete = status == "complete"
    res["extrapolated"] = not complete
    if complete:
        wall = (st["last_done_t"] or mono()) - first
        res["lost"] = st["taken_not_done"]
    else:
        wall_part = p["now"] - first
        res["elapsed_s"] = wall_part
        res["in_flight_at_stop"] = st["taken_not_done"]
        # a stalled or dead worker loses what it holds; a slow one still has it
        res["lost"] = st["taken_not_done"] if status != "too slow" and status != "time cap" else None
        wall = (wall_part * n / done) if done else None
    res["wall_s"] = wall
    res["jobs_per_s"] = (n / wall) if wall else 0.0
    ideal = n * sc["work"] / sc["conc"]
    res["ideal_s"] = ideal or None
    res["wall_vs_ideal"] = (wall / ideal) if (wall and ideal) else None
    return res


def _post_ms(log_path, done_t_by_n):
    """Median ms from a handler's return (its BENCH_RETURN line) to the
    platform having the whole result, over the jobs of the run."""
    returned = {}
    try:
        with open(log_path, "rb") as f:
            for line in f:
                if line.startswith(b"BENCH_RETURN "):
                    _tag, n, t = line.split()
                    returned[n.decode()] = float(t)
    except OSError:
        return None
    posts = sorted((done_t_by_n[n] - t) * 1000 for n, t in returned.items() if n in done_t_by_n)
    return posts[len(posts) // 2] if posts else None


def run_cold(ctx, sdk):
    q = ctx.args.quick
    reps_import = 3 if q else 5
    reps_start = 1 if q else 3
    env = peers.base_env(sdk)
    py = sdk.python
    mod = sdk.import_module
    res = {"import_module": mod}

    def timed(code):
        t = mono()
        r = subprocess.run([py, "-c", code], env=env, cwd=str(ctx.cwd), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        dt = mono() - t
        if r.returncode != 0:
            raise RuntimeError("%s: %s" % (code, r.stderr.decode()[-1000:]))
        return dt, r.stdout.decode()

    timed("import %s" % mod)  # warm the bytecode caches
    bare = [timed("pass")[0] for _ in range(reps_import)]
    walls = [timed("import %s" % mod)[0] for _ in range(reps_import)]
    rss_code = "[l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS:')][0]"
    code = ("import time; t = time.perf_counter(); import %s; dt = time.perf_counter() - t; "
            "print(dt, %s)" % (mod, rss_code))
    inproc, rss = [], []
    for _ in range(reps_import):
        out = timed(code)[1].split()
        inproc.append(float(out[0]))
        rss.append(int(out[1]) / 1024.0)
    rss_bare = int(timed("print(%s)" % rss_code)[1]) / 1024.0
    res.update({
        "python_bare_s": statistics.median(bare),
        "import_wall_s": statistics.median(walls),
        "import_inproc_s": statistics.median(inproc),
        "rss_after_import_mb": statistics.median(rss),
        "rss_bare_python_mb": rss_bare,
    })
    # process start -> first job-take request -> first job taken -> its result
    starts = []
    plat = ctx.platform
    for i in range(reps_start):
        plat.reset(mode="longpoll", hold=60.0, limit=1)
        plat.load(kind="echo", n=1, prefix="cold%d" % i)
        w = Worker(ctx, sdk, "noop.py", 1, tag="-cold").start()
        try:
            deadline = w.t_spawn + 30
            while True:
                p = plat.progress()
                if p["done"] >= 1:
                    break
                if not w.alive() or mono() > deadline:
                    raise RuntimeError("%s cold start failed; log %s" % (sdk.name, w.log_path))
                time.sleep(0.005)
            u = w.usage()
            starts.append({
                "to_first_take_req_s": p["first_req_t"] - w.t_spawn,
                "to_first_job_s": p["first_job_t"] - w.t_spawn,
                "to_first_done_s": p["last_done_t"] - w.t_spawn,
                "rss_mb": u["rss"] / MB, "rss_main_mb": u["rss_main"] / MB, "procs": u["procs"],
            })
        finally:
            w.kill()
    res["starts"] = starts
    for k in ("to_first_take_req_s", "to_first_job_s", "to_first_done_s", "rss_mb", "rss_main_mb"):
        res[k] = statistics.median(s[k] for s in starts)
    res["procs"] = max(s["procs"] for s in starts)
    return res


def run_idle(ctx, sdk):
    q = ctx.args.quick
    windows = {"204": 2.0 if q else 5.0, "longpoll": 3.0 if q else 10.0}
    term_cap = 3.0 if q else 5.0
    res = {}
    plat = ctx.platform
    for mode in ("204", "longpoll"):
        plat.reset(mode=mode, hold=60.0, limit=1)
        w = Worker(ctx, sdk, "noop.py", 1, tag="-idle-" + mode).start()
        r = {"window_s": windows[mode]}
        try:
            wait_first_take(ctx, w)
            time.sleep(1.0)  # past start-up
            p0, u0 = plat.progress(), w.usage()
            time.sleep(windows[mode])
            p1, u1 = plat.progress(), w.usage()
            dt = u1["t"] - u0["t"]
            routes = {}
            for k, v in p1["requests"].items():
                d = v - p0["requests"].get(k, 0)
                if d:
                    routes[k] = d / dt
            r.update({
                "req_per_s": sum(routes.values()), "req_per_s_by_route": routes,
                "cpu_pct": (u1["cpu"] - u0["cpu"]) / dt * 100.0,
                "rss_mb": u1["rss"] / MB, "procs": u1["procs"],
                "held_take_at_term": p1["held_takes"],
            })
            # SIGTERM while idle: time until the main process exits
            t = mono()
            os.kill(w.proc.pid, signal.SIGTERM)
            try:
                rc = w.proc.wait(timeout=term_cap)
                r["term_exit_s"] = mono() - t
                r["term_rc"] = rc
                time.sleep(0.2)
                r["left_in_group_after_exit"] = len(group_pids(w.pgid))
            except subprocess.TimeoutExpired:
                r["term_exit_s"] = None
                r["term_timeout_s"] = term_cap
        finally:
            r["leftover_procs"] = w.kill()
        res[mode] = r
    return res


# --------------------------------------------------------------------------
# table

def _fmt(v, fmt):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if fmt == "int":
        return "%d" % round(v)
    if fmt == "ms":
        return "%.2f" % v if v < 10 else "%.0f" % v
    if fmt == "s":
        return "%.3f" % v if v < 1 else ("%.2f" % v if v < 100 else "%.0f" % v)
    if fmt == "mb":
        return "%.1f" % v
    if fmt == "pct":
        return "%.2f" % v if v < 10 else "%.0f" % v
    if fmt == "rate":
        return "%.1f" % v if v < 100 else "%.0f" % v
    return str(v)


def _fig_rows(spec):
    """(scenario key, label, getter(result) -> (value, mark), fmt, bar) rows."""
    rows = []

    def jobs(key, label, bar_rate=None, bar_p50=None, bar_wall=None, wall=False, gen=False,
             bar_cpu=None):
        def g(name):
            def get(r):
                v = r.get(name)
                mark = "~" if r.get("extrapolated") and name in ("jobs_per_s", "wall_s", "wall_vs_ideal") else ""
                return v, mark
            return get

        def lat(p):
            return lambda r: ((r.get("lat_ms") or {}).get(p), "")

        def lost(r):
            lo = r.get("lost")
            s = "%s/%d/%d" % ("-" if lo is None else lo, r.get("dup", 0), r.get("wrong", 0) + r.get("unknown", 0))
            if r.get("status") not in ("complete", None):
                s += " (%s %d/%d)" % (r["status"], r["done"], r["n"])
            return s, ""

        rows.append((key, "%s: jobs/s" % label, g("jobs_per_s"), "rate", (">=", bar_rate) if bar_rate else None))
        if wall or bar_wall:
            rows.append((key, "%s: wall s" % label, g("wall_s"), "s", ("<=", bar_wall) if bar_wall else None))
            if spec[key]["work"]:
                rows.append((key, "%s: wall / ideal (%gs)" % (label, spec[key]["n"] * spec[key]["work"] / spec[key]["conc"]),
                             g("wall_vs_ideal"), "rate", None))
        rows.append((key, "%s: take->done p50 ms" % label, lat("p50"), "ms", ("<=", bar_p50) if bar_p50 else None))
        rows.append((key, "%s: take->done p99 ms" % label, lat("p99"), "ms", None))
        if gen:
            rows.append((key, "%s: chunks in order" % label,
                         lambda r: ("%d/%d" % (r.get("chunks_total", 0), r.get("chunks_expected", 0)), ""), "str", None))
        rows.append((key, "%s: lost/dup/wrong" % label, lost, "str", None))
        rows.append((key, "%s: CPU ms/job" % label, lambda r: (r.get("cpu_ms_per_job"), ""), "ms",
                     ("<=", bar_cpu) if bar_cpu else None))
        rows.append((key, "%s: RSS end MB" % label, lambda r: (r.get("rss_end_mb"), ""), "mb", None))
        rows.append((key, "%s: platform CPU %%" % label, lambda r: (r.get("platform_cpu_pct"), ""), "pct", None))

    def val(name, mark_key=None):
        # mark_key: the flag that says the figure comes from an extrapolated run
        return lambda r: (r.get(name), "~" if mark_key and r.get(mark_key) else "")

    jobs("trivial1", "trivial c=1", bar_rate=300, bar_p50=0.8, bar_cpu=0.6)
    rows += [
        ("trivial1", "trivial c=1: stack-limit loop jobs/s (ref)", val("limit_jobs_per_s"), "rate", None),
        ("trivial1", "trivial c=1: stack-limit loop CPU ms/job (ref)", val("limit_cpu_ms_per_job"), "ms", None),
        ("trivial1", "trivial c=1: % of the stack limit", val("pct_of_limit", "extrapolated"), "pct", (">=", 85)),
        ("trivial1", "trivial c=1: own-requests loop jobs/s (ref)", val("own_limit_jobs_per_s"), "rate", None),
        ("trivial1", "trivial c=1: own-requests loop CPU ms/job (ref)", val("own_limit_cpu_ms_per_job"), "ms", None),
        ("trivial1", "trivial c=1: % of the own-requests loop", val("pct_of_own_limit", "extrapolated"), "pct", None),
    ]
    jobs("trivial8", "trivial c=8", bar_rate=600)
    rows.append(("trivial8", "trivial c=8: jobs/s vs c=1", val("vs_c1", "extrapolated_vs_c1"), "rate", (">=", 1.5)))
    jobs("sleep1", "sleep50ms c=1", wall=True)
    jobs("sleep16", "sleep50ms c=16", bar_wall=1.35, wall=True)
    jobs("async16", "async50ms c=16", bar_wall=0.70, wall=True)
    jobs("gen4", "sync gen c=4", bar_wall=2.0, wall=True, gen=True, bar_cpu=3.0)
    jobs("agen4", "async gen c=4", wall=True, gen=True)
    jobs("big", "1MB input c=1", wall=True)
    jobs("cpu20", "cpu20ms c=1", wall=True)
    rows += [
        ("cpu20", "cpu20ms c=1: bare loop s (ref)", val("bare_s"), "s", None),
        ("cpu20", "cpu20ms c=1: % of the bare loop", val("pct_of_bare", "extrapolated"), "pct", (">=", 97)),
        ("cpu20", "cpu20ms c=1: stack limit (take+burn+done loop) % of its bare loop (ref)", val("cpu_limit_pct_of_bare"), "pct", None),
        ("cpu20", "cpu20ms c=1: % of that stack limit", val("pct_of_cpu_limit", "extrapolated"), "pct", None),
        ("cpu20", "cpu20ms c=1: stack limit: burn() ms (ref)", val("cpu_limit_burn_ms"), "ms", None),
    ]
    jobs("bigout", "20MB output c=1")
    rows += [
        ("bigout", "20MB output: peak RSS growth MB", val("peak_rss_growth_mb"), "mb", ("<=", 60)),
        ("bigout", "20MB output: handler return -> posted ms", val("post_ms"), "ms", None),
        ("bigout", "20MB output: bare urllib3 POST ms (ref)", val("bare_post_ms"), "ms", None),
        ("bigout", "20MB output: post / bare POST", val("post_vs_bare"), "rate", ("<=", 2)),
    ]
    jobs("stream20", "stream 50x20ms, 20ms POST", wall=True, gen=True)
    rows += [
        ("cold", "cold: python -c 'import X' s", lambda r: (r.get("import_wall_s"), ""), "s", ("<=", 0.25)),
        ("cold", "cold: bare python -c pass s", lambda r: (r.get("python_bare_s"), ""), "s", None),
        ("cold", "cold: import (in process) s", lambda r: (r.get("import_inproc_s"), ""), "s", None),
        ("cold", "cold: RSS after import MB", lambda r: (r.get("rss_after_import_mb"), ""), "mb", ("<=", 32)),
        ("cold", "cold: start -> first take s", lambda r: (r.get("to_first_job_s"), ""), "s", ("<=", 0.15)),
        ("cold", "cold: start -> first done s", lambda r: (r.get("to_first_done_s"), ""), "s", None),
        ("cold", "cold: worker RSS MB (procs)",
         lambda r: ("%.1f (%d)" % (r["rss_mb"], r["procs"]) if "rss_mb" in r else None, ""), "str", None),
        ("idle", "idle vs 204: requests/s", lambda r: (r.get("204", {}).get("req_per_s"), ""), "rate", ("<=", 5)),
        ("idle", "idle vs 204: CPU %", lambda r: (r.get("204", {}).get("cpu_pct"), ""), "pct", None),
        ("idle", "idle long-poll: requests/s", lambda r: (r.get("longpoll", {}).get("req_per_s"), ""), "rate", None),
        ("idle", "idle long-poll: CPU %", lambda r: (r.get("longpoll", {}).get("cpu_pct"), ""), "pct", ("<=", 1)),
        ("idle", "SIGTERM->exit, long-poll s", lambda r: _term(r.get("longpoll", {})), "s", ("<=", 0.5)),
        ("idle", "SIGTERM->exit, 204 s", lambda r: _term(r.get("204", {})), "s", None),
    ]
    jobs("soak", "%s trivial c=8" % ("20k" if spec["soak"]["n"] >= 20000 else "%d" % spec["soak"]["n"]))
    rows += [
        ("soak", "soak: RSS start MB (main)", lambda r: (r.get("rss_main_start_mb"), ""), "mb", None),
        ("soak", "soak: RSS end MB (main)", lambda r: (r.get("rss_main_end_mb"), ""), "mb", None),
        ("soak", "soak: RSS growth MB (main)",
         lambda r: (r["rss_main_end_mb"] - r["rss_main_start_mb"] if "rss_main_end_mb" in r else None,
                    "~" if r.get("extrapolated") else ""), "mb", ("<=", 10)),
    ]
    return rows


def _term(r):
    if not r:
        return None, ""
    if r.get("term_exit_s") is None and "term_timeout_s" in r:
        return ">%g (killed)" % r["term_timeout_s"], ""
    return r.get("term_exit_s"), ""


def render_table(results, sdks, spec):
    names = [s.name for s in sdks]
    peers_ = [n for n in names if n != "ours"]
    head = ["figure"] + names + ["ours/%s" % p for p in peers_ if "ours" in names] + ["bar", "ours ok"]
    lines = []
    for key, label, get, fmt, bar in _fig_rows(spec):
        if not any(key in results.get(n, {}) for n in names):
            continue
        row = [label]
        vals = {}
        for n in names:
            r = results.get(n, {}).get(key)
            if r is None:
                row.append("n/a")
                continue
            if "error" in r:
                row.append("ERROR")
                continue
            v, mark = get(r)
            vals[n] = v
            row.append(mark + _fmt(v, fmt))
        if "ours" in names:
            for p in peers_:
                a, b = vals.get("ours"), vals.get(p)
                if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
                    row.append("%.3g" % (a / b))
                else:
                    row.append("")
        row.append("%s %g" % bar if bar else "")
        ok = ""
        if bar and "ours" in names:
            v = vals.get("ours")
            if isinstance(v, (int, float)):
                ok = "PASS" if (v >= bar[1] if bar[0] == ">=" else v <= bar[1]) else "FAIL"
            elif isinstance(v, str) and v.startswith(">"):
                ok = "FAIL"
        row.append(ok)
        lines.append(row)
    widths = [max(len(str(r[i])) for r in [head] + lines) for i in range(len(head))]
    out = []
    fmt_row = lambda r: "| " + " | ".join(str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i])
                                          for i, c in enumerate(r)) + " |"
    out.append(fmt_row(head))
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    out += [fmt_row(r) for r in lines]
    return "\n".join(out), lines


# --------------------------------------------------------------------------

class Interrupted(Exception):
    pass


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer jobs, ours and runpod only (< 2 min)")
    ap.add_argument("--sdk", help="comma list of ours,runpod,wavespeed")
    ap.add_argument("--scenario", help="comma list of " + ",".join(ALL_SCENARIOS))
    ap.add_argument("--take-mode", choices=["longpoll", "204"], default="longpoll",
                    help="empty-queue answer in the job scenarios: hold job-take open "
                         "(RunPod) or 204 at once (Waverless); default longpoll")
    ap.add_argument("--no-capacity", action="store_true", help="skip the platform capacity check")
    ap.add_argument("--check", action="store_true", help="exit 1 when ours misses a bar")
    ap.add_argument("--reps", type=int, help="runs of each short scenario for ours, median kept "
                    "(default 3; 1 with --quick)")
    ap.add_argument("--out", help="JSON output path (default bench/results/<timestamp>.json)")
    args = ap.parse_args(argv)
    if args.reps is None:
        args.reps = 1 if args.quick else 3

    names = (args.sdk or ("ours,runpod" if args.quick else "ours,runpod,wavespeed")).split(",")
    for n in names:
        if n not in peers.SDKS:
            ap.error("unknown sdk %r" % n)
    scen = (args.scenario or ",".join(ALL_SCENARIOS)).split(",")
    for s in scen:
        if s not in ALL_SCENARIOS:
            ap.error("unknown scenario %r" % s)

    def on_signal(signum, _frame):
        raise Interrupted("signal %d" % signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    stale = sweep_orphans()
    if stale:
        log("killed %d worker process(es) left by an earlier, killed bench: %s" % (len(stale), stale))
    stamp = time.strftime("%Y%m%dT%H%M%S")
    logdir = peers.CACHE / "logs" / stamp
    logdir.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(args, logdir)
    t_start = mono()
    out = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": args.quick,
        "take_mode": args.take_mode,
        "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                 "platform": "bench/fake_platform.py (epoll, HTTP/1.1 keep-alive, own process)"},
        "logs": str(logdir), "sdks": {}, "results": {}, "notes": [],
    }
    spec = scenario_specs(args.quick)
    sdks = []
    infos = {}

    def prep(n):
        try:
            peers.prepare(peers.SDKS[n])
            infos[n] = peers.verify(peers.SDKS[n])
        except (Exception, SystemExit) as exc:
            infos[n] = {"ok": False, "error": str(exc)}

    # venvs install in parallel (first run only); no worker runs yet
    threads = [threading.Thread(target=prep, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n in names:
        sdk = peers.SDKS[n]
        info = infos[n]
        out["sdks"][n] = info
        if not info.get("ok"):
            log("SKIP %s: not runnable: %s" % (n, info.get("error") or info))
            out["notes"].append("%s skipped: %s" % (n, (info.get("error") or "import from wrong place")[:300]))
            continue
        log("%s: %s %s (python %s)" % (n, info["file"], info["version"], info["python"]))
        sdks.append(sdk)
        out["results"][n] = {}

    rc = 0
    try:
        ctx.platform = PlatformProc(logdir)
        if not args.no_capacity:
            cap = clientmod.capacity(ctx.platform.port, n=20000, seconds=2.0 if args.quick else 4.0)
            out["platform_capacity"] = cap
            log("platform capacity (1 keep-alive connection, take+done loop): %.0f req/s, "
                "%.0f jobs/s, %.0f us per round trip" % (cap["req_per_s"], cap["jobs_per_s"], cap["rtt_us"]))
        for key in scen:
            for sdk in sdks:
                t0 = mono()
                try:
                    if key == "cold":
                        r = run_cold(ctx, sdk)
                        log("cold %s: import %.3f s, RSS after import %.1f MB, start->first take %.2f s"
                            % (sdk.name, r["import_wall_s"], r["rss_after_import_mb"], r["to_first_job_s"]))
                    elif key == "idle":
                        r = run_idle(ctx, sdk)
                        log("idle %s: 204 %.1f req/s %.2f%% CPU; long-poll %.1f req/s %.2f%% CPU; "
                            "SIGTERM exit %s / %s s" % (
                                sdk.name, r["204"]["req_per_s"], r["204"]["cpu_pct"],
                                r["longpoll"]["req_per_s"], r["longpoll"]["cpu_pct"],
                                _fmt(_term(r["longpoll"])[0], "s"), _fmt(_term(r["204"])[0], "s")))
                    else:
                        r = run_scenario(ctx, sdk, spec[key])
                        log("%s %s: %s %d/%d, %s%.1f jobs/s, p50 %s ms, lost/dup/wrong %s/%d/%d, %.1f s"
                            % (key, sdk.name, r["status"], r["done"], r["n"],
                               "~" if r["extrapolated"] else "", r["jobs_per_s"],
                               _fmt(r["lat_ms"].get("p50"), "ms"), r["lost"], r["dup"],
                               r["wrong"] + r["unknown"], mono() - t0))
                        if r["wrong_samples"]:
                            log("  wrong: %s" % r["wrong_samples"][:2])
                except Interrupted:
                    raise
                except Exception as exc:
                    log("%s %s: ERROR %s" % (key, sdk.name, exc))
                    r = {"error": str(exc)}
                    rc = 2
                r["bench_seconds"] = mono() - t0
                out["results"][sdk.name][key] = r
    except (Interrupted, KeyboardInterrupt) as exc:
        log("interrupted (%s): cleaning up" % exc)
        rc = 130
    finally:
        for w in list(ctx.live):
            w.kill()
        if ctx.platform is not None:
            ctx.platform.stop()

    for res in out["results"].values():
        c1, c8 = res.get("trivial1") or {}, res.get("trivial8") or {}
        if c1.get("jobs_per_s") and c8.get("jobs_per_s"):
            c8["vs_c1"] = c8["jobs_per_s"] / c1["jobs_per_s"]
            c8["extrapolated_vs_c1"] = bool(c1.get("extrapolated") or c8.get("extrapolated"))
    out["bench_seconds"] = mono() - t_start
    table, rows = render_table(out["results"], sdks, spec)
    out["table"] = table
    legend = ("~ = the worker was stopped before finishing (too slow for the time cap, "
              "or stalled); the figure is extrapolated from the jobs it did finish.\n"
              "lost/dup/wrong: lost = taken and never answered (stalled or dead worker; "
              "'-' while it still held them when stopped); ratios are ours/peer.")
    print()
    print(table)
    print(legend)
    for note in out["notes"]:
        print("note: " + note)
    print("bench time %.0f s; JSON: " % out["bench_seconds"], end="")
    path = Path(args.out) if args.out else RESULTS / ("%s.json" % stamp)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, sort_keys=False, default=str))
    print(path)
    if args.check and any(r[-1] == "FAIL" for r in rows):
        rc = rc or 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
