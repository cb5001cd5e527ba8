"""Soak the worker: a real worker process against a loopback platform that misbehaves.

    python tools/soak.py [--duration 120] [--fault-rate 0.04] [--concurrency 8] [--seed N]

A fault-injecting platform on 127.0.0.1 hands out an endless stream of jobs
of mixed kinds (sync, async, generators, async generators, raising, slow,
progress updates, output that is not JSON, ``sys.exit`` inside the handler)
plus malformed items (no ``input``, no ``id``, not an object, duplicate ids
in one batch, a job handed out again while it runs, a job whose ``input`` is
nested 20,000 deep: too deep to parse on any supported Python, its id still
readable) and job ids
that are not header-safe (``\n``, ``\r\n``, CJK, emoji, a tab and a
trailing space). Every route answers with a random fault at
``--fault-rate``: 500/502/503, 429 with or without ``Retry-After``, a
connection reset, a slow answer, and (on job-take) a body that is not JSON;
results are also refused now and then (400), and for the last 6 s of every
40 s (``--outage-every``) the result route is down, so results go to the
worker's spool and must be re-sent.

Every ``--restart-every``-th outage (the first included) the worker gets
SIGTERM while its results are being retried: it must spool what it could
not deliver and exit 0 within its drain timeout + 5 s; a new worker process
then starts on the same spool folder and re-sends it.

After ``--duration`` seconds the platform stops handing out jobs and turns
the faults off, waits for every job served to be answered, sends SIGTERM to
the worker and prints one accounting line. A job whose take answer could not
be written (the worker had cut that connection at a SIGTERM: it never had
the job, and a real platform sees the broken connection) is counted apart,
not as lost. The exit status is 1 when any job
was lost (no accepted final result), duplicated (more than one), answered
with the wrong result, when a ``.tmp`` file is left in the spool, or when a
worker did not exit 0 in time.

Run with ``--worker`` it is the worker process itself (internal).
"""

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Deque, Dict, Iterator, List, Optional, Set, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENDPOINT = "soak"
API_KEY = "soak-key"
OUTAGE_LENGTH = 6.0
DRAIN_TIMEOUT = 2.0  # the workers' drain timeout: SIGTERM to exit within this + 5 s
EXIT_SLACK = 5.0
DEEP = 20_000  # nesting of the job bodies too deep to parse (3.13 parses 5,000)
# Suffixes that make a job id unsafe as a raw header value (PROTOCOL §17).
HOSTILE_SUFFIXES = ["\nline", "\r\nX-Injected: 1", "-任务", "-🚀", "\tand space "]

# Handler kinds and how often each is handed out.
KINDS: List[Tuple[str, int]] = [
    ("sync", 30),
    ("async", 12),
    ("gen", 10),
    ("agen", 6),
    ("raise", 10),
    ("slow", 10),
    ("progress", 6),
    ("not-json", 3),
    ("exit", 3),
]
KIND_NAMES = [k for k, _ in KINDS]
KIND_WEIGHTS = [w for _, w in KINDS]


# -- the worker process ---------------------------------------------------------------------


def _chunks(n: int) -> Iterator[Dict[str, int]]:
    for i in range(3):
        yield {"n": n, "i": i}


async def _achunks(n: int) -> Any:
    for i in range(3):
        await asyncio.sleep(0)
        yield {"n": n, "i": i}


async def _async_result(n: int) -> Dict[str, Any]:
    await asyncio.sleep(0.001)
    return {"kind": "async", "n": n}


def soak_handler(job: Dict[str, Any]) -> Any:
    """Do what the job's kind says (see KINDS)."""
    import wavespeed.serverless as serverless

    data = job["input"]
    kind, n = data["kind"], data["n"]
    if kind == "async":
        return _async_result(n)
    if kind == "gen":
        return _chunks(n)
    if kind == "agen":
        return _achunks(n)
    if kind == "raise":
        raise RuntimeError(f"soak failure {n}")
    if kind == "slow":
        time.sleep(data.get("seconds", 1.0))
    if kind == "progress":
        serverless.progress_update(job, {"n": n})
    if kind == "not-json":
        return {"n": n, "bad": {1, 2}}
    if kind == "exit":
        sys.exit(1)
    return {"kind": kind, "n": n}


def run_worker() -> None:
    import wavespeed.serverless as serverless

    concurrency = int(os.environ.get("SOAK_CONCURRENCY", "8"))
    serverless.start({"handler": soak_handler, "concurrency_modifier": lambda _c: concurrency})


# -- the platform ----------------------------------------------------------------------------


def expected_ok(kind: str, body: Any, is_stream: bool) -> bool:
    """Is ``body`` the right final result for a job of ``kind``?"""
    if not isinstance(body, dict):
        return False
    error = body.get("error")
    if isinstance(error, str) and "the platform refused the job's result" in error:
        return True  # a refused result replaced by a small FAILED one: still an answer
    if isinstance(error, str) and "worker shutting down" in error:
        return True  # still running at a restart's drain deadline: reported FAILED
    if kind in ("gen", "agen"):
        return is_stream and body == {"output": []}
    if kind == "raise":
        return isinstance(error, str) and "soak failure" in error
    if kind == "not-json":
        return isinstance(error, str) and "JSON" in error
    if kind == "exit":
        return isinstance(error, str) and "SystemExit" in error
    if kind == "malformed":
        return isinstance(error, str) and "malformed" in error
    return error is None and isinstance(body.get("output"), dict) and body["output"].get("kind") == kind


class Deep(str):
    """A job-take item already in JSON text (too deep for ``json.dumps`` to write)."""


def job_take_body(items: List[Any], batch: bool) -> bytes:
    texts = [item if isinstance(item, Deep) else json.dumps(item) for item in items]
    return (("[%s]" % ",".join(texts)) if batch else texts[0]).encode()


class Platform:
    """The fault-injecting job platform and its books. Every field is guarded by ``lock``."""

    def __init__(self, fault_rate: float, seed: int, outage_every: float = 40.0) -> None:
        self.fault_rate = fault_rate
        self.outage_every = outage_every
        self.rand = random.Random(seed)
        self.lock = threading.Lock()
        self.producing = True
        self.faults_on = True
        self.started = time.monotonic()
        self.next_id = 0
        self.served: Dict[str, str] = {}  # job id -> kind, for jobs that must be answered
        self.served_at: Dict[str, float] = {}  # job id -> seconds since the start
        # Jobs whose take answer could not be written: the worker had cut the
        # connection (its shutdown), so it never had them; a real platform sees
        # the broken connection and hands them out again.
        self.unsent: Set[str] = set()
        self.accepted: Dict[str, int] = {}
        self.wrong: List[Tuple[str, Any]] = []
        self.posted: Set[str] = set()  # ids with any final-result post seen
        self.recent_slow: Deque[Tuple[float, str]] = deque()
        self.rehanded = 0
        self.batch_duplicates = 0
        self.hostile = 0
        self.deep = 0
        self.shutdown_failed = 0
        self.refused = 0
        self.requests = 0
        self.faults: Dict[str, int] = {}
        self.chunks = 0
        self.progress = 0
        self.server: Optional[ThreadingHTTPServer] = None

    # -- serving ---------------------------------------------------------------

    def start(self) -> str:
        platform = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                platform.serve(self, body)

            do_GET = do_POST = handle_one

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # resets we cause and clients that time out are routine here

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return "http://127.0.0.1:%d/v2/%s" % (self.server.server_address[1], ENDPOINT)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    @staticmethod
    def send(h: BaseHTTPRequestHandler, status: int, body: bytes = b"", headers: Optional[Dict[str, str]] = None) -> None:
        h.send_response(status)
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        if status != 204:
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if body and status != 204:
            h.wfile.write(body)

    @staticmethod
    def reset(h: BaseHTTPRequestHandler) -> None:
        try:
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.connection.close()
        except OSError:
            pass
        h.close_connection = True

    def in_outage(self) -> bool:
        if self.outage_every <= 0:
            return False
        phase = (time.monotonic() - self.started) % self.outage_every
        return self.faults_on and self.outage_every - OUTAGE_LENGTH <= phase

    def pick_fault(self, route: str) -> Optional[str]:
        with self.lock:
            if not self.faults_on or route == "job-stop" or self.rand.random() >= self.fault_rate:
                return None
            choices = ["500", "502", "503", "429-after", "reset", "slow"]
            if route.startswith("job-take"):
                choices += ["not-json", "429"]  # a bare 429 costs the worker 5 s: rarer
            elif route == "job-done":
                choices += ["400"]
            fault = self.rand.choice(choices)
            self.faults[fault] = self.faults.get(fault, 0) + 1
            return fault

    def serve(self, h: BaseHTTPRequestHandler, body: bytes) -> None:
        split = urlsplit(h.path)
        parts = [unquote(p) for p in split.path.split("/")]
        route = parts[3] if len(parts) > 3 else ""
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        with self.lock:
            self.requests += 1
        if h.headers.get("Authorization") != API_KEY:
            self.send(h, 401, b'{"error":"unauthorized"}')
            return
        # A result route outage is decided when the request arrives: a slow
        # answer must not accept, after the outage, a post the worker has
        # given up on (that would be an honest at-least-once repeat).
        outage = self.in_outage()
        fault = self.pick_fault(route)
        if fault == "reset":
            self.reset(h)
            return
        if fault == "slow":
            time.sleep(self.rand.uniform(0.1, 1.5))
        elif fault == "429":
            self.send(h, 429)
            return
        elif fault == "429-after":
            self.send(h, 429, headers={"Retry-After": "1"})
            return
        elif fault == "not-json":
            self.send(h, 200, b"<html>gateway error</html>", {"Content-Type": "text/html"})
            return
        elif fault is not None and fault != "400":
            self.send(h, int(fault), b"injected fault")
            return
        if route in ("job-take", "job-take-batch"):
            limit = int(query.get("batch_size", "1")) if route == "job-take-batch" else 1
            items = self.take(limit)
            if not items:
                self.send(h, 204)
                return
            try:
                self.send(h, 200, job_take_body(items, route != "job-take"), {"Content-Type": "application/json"})
                h.wfile.flush()
            except OSError:
                with self.lock:
                    self.unsent.update(i["id"] for i in items if isinstance(i, dict) and "id" in i)
                h.close_connection = True
        elif route == "job-done" and len(parts) >= 6:
            self.done(h, parts[5], body, query.get("isStream") == "true", fault == "400", outage)
        elif route == "job-stream":
            with self.lock:
                self.chunks += 1
            self.send(h, 200, b"{}")
        elif route in ("ping", "job-stop"):
            self.send(h, 200 if route == "ping" else 204, b"{}")
        else:
            self.send(h, 404)

    def take(self, limit: int) -> List[Any]:
        with self.lock:
            if not self.producing:
                return []
            items: List[Any] = []
            now = time.monotonic()
            while self.recent_slow and now - self.recent_slow[0][0] > 0.5:
                self.recent_slow.popleft()
            while len(items) < limit:
                roll = self.rand.random()
                if roll < 0.02 and self.recent_slow:
                    # Handed out again while surely still running (a 1-2 s handler
                    # taken under 0.5 s ago, no result posted yet): must not run twice.
                    _at, job_id = self.recent_slow.popleft()
                    if job_id not in self.posted:
                        self.rehanded += 1
                        items.append({"id": job_id, "input": {"kind": "slow", "n": -1, "seconds": 1.5}})
                    continue
                self.next_id += 1
                job_id = "soak-%d" % self.next_id
                if roll < 0.03:
                    self.served[job_id] = "malformed"
                    items.append({"id": job_id, "inputs": "typo"})
                    continue
                if roll < 0.035:
                    items.append({"input": {"no": "id"}})  # nothing to answer
                    continue
                if roll < 0.04:
                    items.append(["not", "an", "object"])
                    continue
                if roll < 0.045:
                    self.deep += 1
                    self.served[job_id] = "malformed"
                    items.append(Deep('{"id": "%s", "input": %s%s}' % (job_id, "[" * DEEP, "]" * DEEP)))
                    continue
                if roll < 0.075:
                    self.hostile += 1
                    job_id += self.rand.choice(HOSTILE_SUFFIXES)
                kind = self.rand.choices(KIND_NAMES, KIND_WEIGHTS)[0]
                job: Dict[str, Any] = {"id": job_id, "input": {"kind": kind, "n": self.next_id}}
                if kind == "slow":
                    job["input"]["seconds"] = self.rand.uniform(1.0, 2.0)
                    self.recent_slow.append((now, job_id))
                self.served[job_id] = kind
                self.served_at[job_id] = now - self.started
                items.append(job)
                if roll < 0.06 and len(items) < limit:
                    self.batch_duplicates += 1
                    items.append(dict(job))  # the same id twice in one batch
            return items

    def done(
        self, h: BaseHTTPRequestHandler, job_id: str, body: bytes, is_stream: bool, refuse: bool, outage: bool
    ) -> None:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = body
        if isinstance(parsed, dict) and parsed.get("status") == "IN_PROGRESS":
            with self.lock:
                self.progress += 1
            self.send(h, 200, b"{}")
            return
        with self.lock:
            self.posted.add(job_id)
            if refuse and not outage:
                self.refused += 1
        if outage:
            self.send(h, 503, b"results are down")
            return
        if refuse:
            self.send(h, 400, b"result refused by the soak platform")
            return
        with self.lock:
            self.accepted[job_id] = self.accepted.get(job_id, 0) + 1
            kind = self.served.get(job_id)
            if kind is None or not expected_ok(kind, parsed, is_stream):
                self.wrong.append((job_id, parsed))
            elif isinstance(parsed, dict) and "worker shutting down" in str(parsed.get("error")):
                self.shutdown_failed += 1
        self.send(h, 200, b"{}")

    def new_worker(self) -> None:
        """A restart: jobs the old worker ran are never handed to the new one."""
        with self.lock:
            self.recent_slow.clear()

    def outage_index(self) -> int:
        """Which outage is on now (0, 1, ...), or -1 when none is."""
        if self.outage_every <= 0 or not self.in_outage():
            return -1
        return int((time.monotonic() - self.started) // self.outage_every)

    def unanswered(self) -> int:
        with self.lock:
            return sum(1 for job_id in self.served if job_id not in self.accepted)


# -- the run ---------------------------------------------------------------------------------


def read_status(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class WorkerRun:
    """One worker process: started, watched (its log lines, peak RSS), stopped with SIGTERM."""

    def __init__(
        self,
        python: str,
        env: Dict[str, str],
        tail: Deque[str],
        spool_lines: List[str],
        log: Optional[Any] = None,
    ) -> None:
        self.proc = subprocess.Popen(
            [python, os.path.abspath(__file__), "--worker"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,  # the worker's log lines (stdout, as runpod's)
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.peak_kb = 0
        self._tail = tail
        self._spool_lines = spool_lines
        self._log = log
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace")
            self._tail.append(line)
            if self._log is not None:
                self._log.write("%.3f %s" % (time.monotonic(), line))
            if "spooled to" in line:  # the worker's warning for each spooled result
                self._spool_lines.append(line)

    def sample(self) -> None:
        self.peak_kb = max(self.peak_kb, read_status(self.proc.pid, "VmHWM"))

    def running(self) -> bool:
        return self.proc.poll() is None

    def terminate(self, timeout: float) -> Tuple[Optional[int], float]:
        """SIGTERM; (exit code or None, seconds to exit)."""
        self.sample()
        began = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code: Optional[int] = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - began

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self._reader.join(5)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of faults (default 120)")
    parser.add_argument("--fault-rate", type=float, default=0.04, help="share of requests faulted")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--outage-every",
        type=float,
        default=40.0,
        help="the result route is down for the last 6 s of every this many seconds (0: never)",
    )
    parser.add_argument(
        "--restart-every",
        type=int,
        default=2,
        help="SIGTERM the worker during every this many-th outage, the first included (0: never)",
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter for the worker")
    parser.add_argument("--log", help="write every worker log line to this file (with a monotonic time)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker()
        return 0

    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    platform = Platform(args.fault_rate, seed, args.outage_every)
    base = platform.start()
    spool = tempfile.mkdtemp(prefix="wavespeed-soak-")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": ROOT,
        "PYTHONUNBUFFERED": "1",
        "RUNPOD_WEBHOOK_GET_JOB": base + "/job-take/$ID?gpu=soak",
        "RUNPOD_WEBHOOK_POST_OUTPUT": base + "/job-done/$RUNPOD_POD_ID/$ID?gpu=soak",
        "RUNPOD_WEBHOOK_POST_STREAM": base + "/job-stream/$RUNPOD_POD_ID/$ID?gpu=soak",
        "RUNPOD_WEBHOOK_PING": base + "/ping/$RUNPOD_POD_ID?gpu=soak",
        "RUNPOD_POD_ID": "soak-pod",
        "RUNPOD_AI_API_KEY": API_KEY,
        "RUNPOD_PING_INTERVAL": "1000",
        "RUNPOD_LOG_LEVEL": "INFO",
        "WAVESPEED_SPOOL_DIR": spool,
        "WAVESPEED_RESULT_DEADLINE": "3",
        "WAVESPEED_DRAIN_TIMEOUT": str(DRAIN_TIMEOUT),
        "WAVESPEED_HEALTH_PORT": "0",
        "SOAK_CONCURRENCY": str(args.concurrency),
    }
    print(f"soak: {args.duration:g} s, fault rate {args.fault_rate:g}, seed {seed}, spool {spool}", flush=True)
    tail: Deque[str] = deque(maxlen=40)
    spool_lines: List[str] = []
    exit_bound = DRAIN_TIMEOUT + EXIT_SLACK
    restarts: List[Tuple[Optional[int], float]] = []  # (exit code, seconds) of each SIGTERM mid-run
    restart_at: List[float] = []  # seconds since the start of each of those SIGTERMs
    peak_kb = 0
    log = open(args.log, "w", encoding="utf-8") if args.log else None  # noqa: SIM115 - closed below
    worker = WorkerRun(args.python, env, tail, spool_lines, log)
    restarted_in = -1  # the outage a restart was done in
    begin = time.monotonic()
    try:
        while time.monotonic() - begin < args.duration and worker.running():
            time.sleep(0.2)
            worker.sample()
            outage = platform.outage_index()
            if (
                outage >= 0
                and outage != restarted_in
                and args.restart_every > 0
                and outage % args.restart_every == 0
            ):
                # SIGTERM while results are being retried (the result route is down).
                restarted_in = outage
                restart_at.append(round(time.monotonic() - platform.started, 2))
                restarts.append(worker.terminate(exit_bound + 10))
                peak_kb = max(peak_kb, worker.peak_kb)
                worker.kill()
                platform.new_worker()
                worker = WorkerRun(args.python, env, tail, spool_lines, log)
        with platform.lock:
            platform.producing = False
            platform.faults_on = False
        fault_seconds = time.monotonic() - begin
        grace = time.monotonic() + 90  # result deadline + spool re-send backoff + slow jobs
        while platform.unanswered() and time.monotonic() < grace and worker.running():
            time.sleep(0.25)
            worker.sample()
        code, exit_seconds = worker.terminate(exit_bound + 30)
        peak_kb = max(peak_kb, worker.peak_kb)
    finally:
        worker.kill()
        platform.stop()
        if log is not None:
            log.close()

    with platform.lock:
        served = len(platform.served)
        accepted = sum(1 for n in platform.accepted.values() if n >= 1)
        never_had = [j for j in platform.served if j not in platform.accepted and j in platform.unsent]
        lost = [j for j in platform.served if j not in platform.accepted and j not in platform.unsent]
        lost_at = {j: round(platform.served_at.get(j, -1.0), 2) for j in lost}
        duplicated = [j for j, n in platform.accepted.items() if n > 1]
        wrong = list(platform.wrong)
        requests_total = platform.requests
        faults = sum(platform.faults.values())
    spooled = len(spool_lines)
    leftover = sorted(os.listdir(spool)) if os.path.isdir(spool) else []
    tmp_left = [n for n in leftover if n.endswith(".tmp")]
    if not leftover and os.path.isdir(spool):
        os.rmdir(spool)
    bad_restarts = [(c, t) for c, t in restarts if c != 0 or t > exit_bound]
    print(
        "soak: jobs served %d, results accepted %d, lost %d, take answers the worker had cut %d, "
        "duplicated %d, wrong %d, "
        "spooled %d (left on disk %d, .tmp %d), refused->FAILED %d, re-handed %d, batch duplicates %d, "
        "hostile ids %d, deep bodies %d, SIGTERM restarts %d (slowest exit %.1f s, bad %d), "
        "shutdown->FAILED %d, faults %d, requests %d (%.0f/s), peak RSS %.1f MB, worker exit %s in %.1f s"
        % (
            served,
            accepted,
            len(lost),
            len(never_had),
            len(duplicated),
            len(wrong),
            spooled,
            len(leftover),
            len(tmp_left),
            platform.refused,
            platform.rehanded,
            platform.batch_duplicates,
            platform.hostile,
            platform.deep,
            len(restarts),
            max([t for _, t in restarts] or [0.0]),
            len(bad_restarts),
            platform.shutdown_failed,
            faults,
            requests_total,
            requests_total / max(fault_seconds, 1e-9),
            peak_kb / 1024.0,
            code,
            exit_seconds,
        ),
        flush=True,
    )
    for label, items in (("lost", lost), ("duplicated", duplicated), ("wrong", wrong), ("bad restarts", bad_restarts)):
        if items:
            print(f"soak: {label}: {items[:10]!r}", file=sys.stderr)
    if lost:
        print(
            f"soak: lost jobs served at (s since the start, monotonic {platform.started:.3f}): "
            f"{lost_at!r}; restarts at {restart_at!r}",
            file=sys.stderr,
        )
    slow_exit = exit_seconds > exit_bound
    failed = bool(lost or duplicated or wrong or tmp_left or bad_restarts or slow_exit or code != 0 or served == 0)
    if failed:
        print("soak: FAILED; last worker log lines:\n" + "".join(tail), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
