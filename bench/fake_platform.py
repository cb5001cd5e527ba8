#!/usr/bin/env python3
"""A fast fake serverless platform for the benchmark (stdlib only).

One thread, one epoll loop, raw non-blocking sockets, a minimal HTTP/1.1
parser with keep-alive.  It speaks the worker side of the protocol
(shared PROTOCOL.md §2-5, §7, §9):

    GET  /v2/<ep>/job-take/<worker>?...&job_in_progress=0|1
    GET  /v2/<ep>/job-take-batch/<worker>?...&batch_size=N&job_in_progress=..
    POST /v2/<ep>/job-done/<pod>/<job id>?...&isStream=true|false
    POST /v2/<ep>/job-stream/<pod>/<job id>?...
    GET  /v2/<ep>/ping/<pod>?...&job_id=a,b&runpod_version=..
    GET  /v2/<ep>/job-stop/<worker>?...          (runpod >= 1.10)

and records every take, result and stream chunk, checking each result.

Two modes for an empty queue: "longpoll" holds job-take (and job-stop) open
for `hold` seconds, as RunPod does, and hands a job to the oldest held
request as soon as one is loaded; "204" answers at once, as Waverless does.

The bench drives it through control routes on the same port:

    POST /_ctl/reset  {"mode": "longpoll"|"204", "hold": s, "limit": c,
                       "stream_delay": s}
    POST /_ctl/load   {"kind": "echo"|"big"|"gen"|"bigout", "n": N, "chunks": 10,
                       "blob": bytes, "prefix": "..."}
    GET  /_ctl/progress   small JSON: counts and first/last times
    GET  /_ctl/stats      full JSON: counts, latencies, checks
    POST /_ctl/sink       reads the body and answers 200 (the bare-POST reference)
    POST /_ctl/quit

"stream_delay" holds each job-stream answer that long (a slow platform);
the held connection's later requests wait behind it, as on a real server.
Kind "bigout" asks each job for an output string of "blob" bytes (the
handler returns it); the platform checks its length and its first 8 bytes.

All times are time.monotonic() (CLOCK_MONOTONIC, comparable across the
processes of this machine).  Run: python bench/fake_platform.py [--port P]; it
prints "LISTENING <port>" on stdout once ready and exits when its parent
dies or on /_ctl/quit.
"""

import json
import os
import selectors
import socket
import sys
import time
from collections import deque

now = time.monotonic

R204 = b"HTTP/1.1 204 No Content\r\n\r\n"
R200_EMPTY = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
R200_JSON = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
R404 = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
R400 = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

API_KEY = os.environ.get("BENCH_API_KEY", "bench-key").encode()


def _pct(sorted_vals, p):
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


class Conn:
    __slots__ = ("sock", "fd", "inbuf", "outbuf", "parked", "close_after", "closed", "writing")

    def __init__(self, sock):
        self.sock = sock
        self.fd = sock.fileno()
        self.inbuf = bytearray()
        self.outbuf = None
        self.parked = None  # token of the held request, if any
        self.close_after = False
        self.closed = False
        self.writing = False


class Job:
    __slots__ = ("id", "n", "payload", "take_t", "done_t", "done_count", "ok", "chunks",
                 "late_chunks", "bad_chunks", "final_is_stream")

    def __init__(self, jid, n, payload):
        self.id = jid
        self.n = n
        self.payload = payload  # bytes of the input JSON, or None (built on take)
        self.take_t = None
        self.done_t = None
        self.done_count = 0
        self.ok = None
        self.chunks = None
        self.late_chunks = 0
        self.bad_chunks = 0
        self.final_is_stream = None


class Platform:
    def __init__(self, host="127.0.0.1", port=0):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((host, port))
        self.lsock.listen(512)
        self.lsock.setblocking(False)
        self.port = self.lsock.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.lsock, selectors.EVENT_READ, None)
        self.conns = {}
        self.running = True
        self.parent = os.getppid()
        self.reset({})

    # ------------------------------------------------------------------ state
    def reset(self, cfg):
        # answer whatever is still held from the previous scenario
        for q in (getattr(self, "held_takes", ()), getattr(self, "held_stops", ())):
            for (_dl, conn, token, _bs, _batch) in q:
                if conn.parked == token and not conn.closed:
                    conn.parked = None
                    self.send(conn, R204)
        for (_dl, conn, token) in getattr(self, "delayed", ()):
            if conn.parked == token and not conn.closed:
                conn.parked = None
                self.send(conn, R200_EMPTY)
        self.mode = cfg.get("mode", "longpoll")
        self.stream_delay = float(cfg.get("stream_delay", 0.0))
        self.delayed = deque()  # (deadline, conn, token): stream answers held back
        self.hold = float(cfg.get("hold", 60.0))
        self.limit = int(cfg.get("limit", 1))
        self.kind = "echo"
        self.chunks = 0
        self.blob = b""
        self.blob_len = 0
        self.jobs = {}
        self.queue = deque()
        self.held_takes = deque()
        self.held_stops = deque()
        self.token = 0
        self.requests = {}
        self.take_empty = 0  # takes answered with no job (204 at once or after hold)
        self.first_req_t = None  # first job-take request (any answer)
        self.first_job_t = None  # first job handed out
        self.last_take_t = None
        self.last_done_t = None
        self.taken = 0
        self.done = 0
        self.dup = 0
        self.wrong = 0
        self.unknown = 0
        self.progress_updates = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.over_limit_takes = 0
        self.max_batch = 0
        self.batch_over_limit = 0
        self.auth_missing = 0
        self.auth_forms = {}
        self.xrid_mismatch = 0
        self.pings = 0
        self.pings_with_jobs = 0
        self.stream_posts = 0
        self.chunks_total = 0
        self.gen_final_not_stream = 0
        self.wrong_samples = []
        self.reset_t = now()

    def load(self, cfg):
        self.kind = cfg.get("kind", "echo")
        n = int(cfg.get("n", 0))
        prefix = cfg.get("prefix", "job")
        self.chunks = int(cfg.get("chunks", 10))
        start = len(self.jobs)
        if self.kind == "big":
            size = int(cfg.get("blob", 1 << 20))
            # printable, JSON-safe, not all one byte
            pattern = b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
            self.blob = (pattern * (size // len(pattern) + 1))[:size]
            self.blob_len = size
        for i in range(start, start + n):
            jid = "%s-%d" % (prefix, i)
            if self.kind == "big":
                payload = None
            elif self.kind == "bigout":
                self.blob_len = int(cfg.get("blob", 20 << 20))
                payload = b'{"id":"%s","input":{"n":%d,"size":%d}}' % (jid.encode(), i, self.blob_len)
            else:
                payload = b'{"id":"%s","input":{"n":%d}}' % (jid.encode(), i)
            job = Job(jid, i, payload)
            if self.kind == "gen":
                job.chunks = []
            self.jobs[jid] = job
            self.queue.append(job)
        self.serve_held()

    def job_bytes(self, job):
        if job.payload is not None:
            return job.payload
        return b'{"id":"%s","input":{"n":%d,"blob":"%s"}}' % (job.id.encode(), job.n, self.blob)

    # --------------------------------------------------------------- network
    def serve_forever(self):
        sel = self.sel
        next_check = now() + 0.5
        while self.running:
            timeout = 0.5
            t = now()
            if self.held_takes:
                timeout = min(timeout, max(0.0, self.held_takes[0][0] - t))
            if self.held_stops:
                timeout = min(timeout, max(0.0, self.held_stops[0][0] - t))
            if self.delayed:
                timeout = min(timeout, max(0.0, self.delayed[0][0] - t))
            events = sel.select(timeout)
            for key, mask in events:
                conn = key.data
                if conn is None:
                    self.accept()
                    continue
                if mask & selectors.EVENT_WRITE:
                    self.flush(conn)
                if mask & selectors.EVENT_READ and not conn.closed:
                    self.on_read(conn)
            t = now()
            if self.held_takes or self.held_stops:
                self.expire(t)
            if self.delayed:
                self.release_delayed(t)
            if t >= next_check:
                next_check = t + 0.5
                if os.getppid() != self.parent:
                    break  # our parent (the bench) died: don't outlive it

    def accept(self):
        for _ in range(64):
            try:
                s, _addr = self.lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = Conn(s)
            self.conns[c.fd] = c
            self.sel.register(s, selectors.EVENT_READ, c)

    def close(self, conn):
        if conn.closed:
            return
        conn.closed = True
        conn.parked = None
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        self.conns.pop(conn.fd, None)
        try:
            conn.sock.close()
        except OSError:
            pass

    def send(self, conn, data):
        if conn.closed:
            return
        if conn.outbuf:
            conn.outbuf += data
            return
        try:
            sent = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close(conn)
            return
        if sent < len(data):
            conn.outbuf = bytearray(memoryview(data)[sent:])
            if not conn.writing:
                conn.writing = True
                self.sel.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
        elif conn.close_after:
            self.close(conn)

    def flush(self, conn):
        if conn.outbuf:
            try:
                sent = conn.sock.send(conn.outbuf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close(conn)
                return
            del conn.outbuf[:sent]
        if not conn.outbuf:
            conn.outbuf = None
            if conn.writing:
                conn.writing = False
                self.sel.modify(conn.sock, selectors.EVENT_READ, conn)
            if conn.close_after:
                self.close(conn)

    def on_read(self, conn):
        try:
            data = conn.sock.recv(1 << 18)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close(conn)
            return
        if not data:
            self.close(conn)
            return
        conn.inbuf += data
        self.parse(conn)

    def parse(self, conn):
        buf = conn.inbuf
        while buf and not conn.closed and conn.parked is None:
            idx = buf.find(b"\r\n\r\n")
            if idx < 0:
                if len(buf) > 65536:
                    self.send_close(conn, R400)
                return
            lines = bytes(buf[:idx]).split(b"\r\n")
            try:
                method, target, version = lines[0].split(b" ", 2)
            except ValueError:
                self.send_close(conn, R400)
                return
            clen = 0
            chunked = False
            close = version == b"HTTP/1.0"
            auth = None
            xrid = None
            for line in lines[1:]:
                k, _, v = line.partition(b":")
                k = k.strip().lower()
                if k == b"content-length":
                    clen = int(v)
                elif k == b"transfer-encoding":
                    chunked = b"chunked" in v.lower()
                elif k == b"connection":
                    v = v.strip().lower()
                    if v == b"close":
                        close = True
                    elif v == b"keep-alive":
                        close = False
                elif k == b"authorization":
                    auth = v.strip()
                elif k == b"x-request-id":
                    xrid = v.strip()
            start = idx + 4
            if chunked:
                body, end = self.dechunk(buf, start)
                if body is None:
                    return
                del buf[:end]
            else:
                if len(buf) < start + clen:
                    return
                body = bytes(buf[start:start + clen])
                del buf[:start + clen]
            if close:
                conn.close_after = True
            try:
                self.dispatch(conn, method, target, body, auth, xrid)
            except Exception as exc:  # a bug here must not kill the platform
                sys.stderr.write("platform: error on %r: %r\n" % (target[:200], exc))
                self.send_close(conn, b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    @staticmethod
    def dechunk(buf, pos):
        out = bytearray()
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None, 0
            size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
            pos = eol + 2
            if size == 0:
                end = buf.find(b"\r\n\r\n", pos - 2)
                if end < 0:
                    return None, 0
                return bytes(out), end + 4
            if len(buf) < pos + size + 2:
                return None, 0
            out += buf[pos:pos + size]
            pos += size + 2

    def send_close(self, conn, data):
        conn.close_after = True
        self.send(conn, data)

    def send_json(self, conn, body):
        self.send(conn, (R200_JSON % len(body)) + body)

    # -------------------------------------------------------------- routing
    def dispatch(self, conn, method, target, body, auth, xrid):
        path, _, query = target.partition(b"?")
        parts = path.split(b"/")
        # ['', 'v2', ep, route, ...]
        if len(parts) >= 4 and parts[1] == b"v2":
            route = parts[3]
            self.requests[route] = self.requests.get(route, 0) + 1
            if auth is None:
                self.auth_missing += 1
            elif auth != API_KEY:
                form = "bearer" if auth == b"Bearer " + API_KEY else "other"
                self.auth_forms[form] = self.auth_forms.get(form, 0) + 1
            if route == b"job-take" or route == b"job-take-batch":
                return self.on_take(conn, route == b"job-take-batch", query)
            if route == b"job-done" and len(parts) >= 6:
                return self.on_done(conn, parts[5].decode(), query, body, xrid)
            if route == b"job-stream" and len(parts) >= 6:
                return self.on_stream(conn, parts[5].decode(), body)
            if route == b"ping":
                self.pings += 1
                if b"job_id=" in query:
                    self.pings_with_jobs += 1
                return self.send(conn, R200_EMPTY)
            if route == b"job-stop":
                if self.mode == "204":
                    return self.send(conn, R204)
                return self.park(conn, self.held_stops, 0, False)
            return self.send(conn, R404)
        if len(parts) >= 3 and parts[1] == b"_ctl":
            return self.on_ctl(conn, parts[2].decode(), body)
        self.requests[b"other"] = self.requests.get(b"other", 0) + 1
        self.send(conn, R404)

    @staticmethod
    def qparam(query, name):
        for kv in query.split(b"&"):
            k, _, v = kv.partition(b"=")
            if k == name:
                return v
        return None

    def park(self, conn, q, batch_size, batch):
        self.token += 1
        conn.parked = self.token
        q.append((now() + self.hold, conn, self.token, batch_size, batch))

    def on_take(self, conn, batch, query):
        t = now()
        if self.first_req_t is None:
            self.first_req_t = t
        bs = 1
        if batch:
            v = self.qparam(query, b"batch_size")
            bs = int(v) if v else 1
            if bs > self.max_batch:
                self.max_batch = bs
            if bs > self.limit:
                self.batch_over_limit += 1
        if self.queue:
            return self.give(conn, bs, batch, t)
        if self.mode == "204":
            self.take_empty += 1
            return self.send(conn, R204)
        self.park(conn, self.held_takes, bs, batch)

    def give(self, conn, bs, batch, t):
        q = self.queue
        if self.first_job_t is None:
            self.first_job_t = t
        self.last_take_t = t
        if not batch:
            job = q.popleft()
            job.take_t = t
            self.taken += 1
            self._held(1)
            return self.send_json(conn, self.job_bytes(job))
        out = []
        for _ in range(min(bs, len(q))):
            job = q.popleft()
            job.take_t = t
            out.append(self.job_bytes(job))
        self.taken += len(out)
        self._held(len(out))
        self.send_json(conn, b"[" + b",".join(out) + b"]")

    def _held(self, k):
        self.in_flight += k
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight
        if self.in_flight > self.limit:
            self.over_limit_takes += 1

    def serve_held(self):
        while self.queue and self.held_takes:
            _dl, conn, token, bs, batch = self.held_takes.popleft()
            if conn.closed or conn.parked != token:
                continue
            conn.parked = None
            self.give(conn, bs, batch, now())
            if conn.inbuf and not conn.closed:
                self.parse(conn)  # a request queued behind the held one

    def expire(self, t):
        for q, is_take in ((self.held_takes, True), (self.held_stops, False)):
            while q and (q[0][0] <= t or q[0][1].closed or q[0][1].parked != q[0][2]):
                _dl, conn, token, _bs, _batch = q.popleft()
                if conn.closed or conn.parked != token:
                    continue
                conn.parked = None
                if is_take:
                    self.take_empty += 1
                self.send(conn, R204)

    def release_delayed(self, t):
        # One fixed delay for every stream answer: the deque is in deadline order.
        while self.delayed and self.delayed[0][0] <= t:
            _dl, conn, token = self.delayed.popleft()
            if conn.closed or conn.parked != token:
                continue
            conn.parked = None
            self.send(conn, R200_EMPTY)
            if conn.inbuf and not conn.closed:
                self.parse(conn)  # a request queued behind the held one

    # --------------------------------------------------------------- results
    def _wrong(self, job, why):
        self.wrong += 1
        job.ok = False
        if len(self.wrong_samples) < 10:
            self.wrong_samples.append({"id": job.id, "why": why[:300]})

    def on_done(self, conn, jid, query, body, xrid):
        t = now()
        self.send(conn, R200_EMPTY)
        job = self.jobs.get(jid)
        if job is None or job.take_t is None:
            self.unknown += 1
            if len(self.wrong_samples) < 10:
                self.wrong_samples.append({"id": jid, "why": "result for a job never handed out"})
            return
        if xrid is not None and xrid != jid.encode():
            self.xrid_mismatch += 1
        try:
            d = json.loads(body)
        except ValueError:
            d = None
        if isinstance(d, dict) and d.get("status") == "IN_PROGRESS":
            self.progress_updates += 1
            return
        job.done_count += 1
        if job.done_count > 1:
            self.dup += 1
            return
        job.done_t = t
        self.last_done_t = t
        self.done += 1
        self.in_flight -= 1
        if not isinstance(d, dict):
            return self._wrong(job, "body is not a JSON object: %r" % body[:200])
        if d.get("error"):
            return self._wrong(job, "error: %s" % str(d.get("error"))[:300])
        kind = self.kind
        if kind == "echo":
            if d.get("output") != {"n": job.n + 1}:
                return self._wrong(job, "output %r" % (d.get("output"),))
        elif kind == "big":
            if d.get("output") != {"n": job.n + 1, "len": self.blob_len}:
                return self._wrong(job, "output %r" % (d.get("output"),))
        elif kind == "bigout":
            out = d.get("output")
            if not isinstance(out, str) or len(out) != self.blob_len or out[:8] != "%08d" % job.n:
                return self._wrong(job, "output %r... (%s chars)" % (
                    str(out)[:40], len(out) if isinstance(out, str) else "-"))
        elif kind == "gen":
            job.final_is_stream = self.qparam(query, b"isStream") == b"true"
            if not job.final_is_stream:
                self.gen_final_not_stream += 1
            if job.chunks != list(range(self.chunks)):
                return self._wrong(job, "chunks %r" % (job.chunks[:20],))
            out = d.get("output", [])
            want = [{"n": job.n, "k": k} for k in range(self.chunks)]
            if out not in ([], None, want):
                return self._wrong(job, "final output %r" % (out,))
        job.ok = True

    def on_stream(self, conn, jid, body):
        if self.stream_delay > 0:
            self.token += 1
            conn.parked = self.token
            self.delayed.append((now() + self.stream_delay, conn, self.token))
        else:
            self.send(conn, R200_EMPTY)
        self.stream_posts += 1
        job = self.jobs.get(jid)
        if job is None or job.chunks is None:
            self.unknown += 1
            return
        try:
            d = json.loads(body)
        except ValueError:
            job.bad_chunks += 1
            return
        items = d if isinstance(d, list) else [d]
        for item in items:
            out = item.get("output") if isinstance(item, dict) else None
            outs = out if isinstance(out, list) else [out]
            for o in outs:
                if not isinstance(o, dict) or o.get("n") != job.n:
                    job.bad_chunks += 1
                    continue
                self.chunks_total += 1
                if job.done_count:
                    job.late_chunks += 1
                job.chunks.append(o.get("k"))

    # --------------------------------------------------------------- control
    def on_ctl(self, conn, name, body):
        if name == "reset":
            self.reset(json.loads(body or b"{}"))
            return self.send_json(conn, b'{"ok":true}')
        if name == "load":
            self.load(json.loads(body or b"{}"))
            return self.send_json(conn, b'{"ok":true}')
        if name == "progress":
            return self.send_json(conn, json.dumps(self.progress()).encode())
        if name == "stats":
            return self.send_json(conn, json.dumps(self.stats()).encode())
        if name == "sink":
            return self.send(conn, R200_EMPTY)
        if name == "quit":
            self.running = False
            return self.send_json(conn, b'{"ok":true}')
        self.send(conn, R404)

    def progress(self):
        return {
            "now": now(), "taken": self.taken, "done": self.done,
            "first_req_t": self.first_req_t, "first_job_t": self.first_job_t,
            "last_done_t": self.last_done_t, "take_empty": self.take_empty,
            "requests": {k.decode(): v for k, v in self.requests.items()},
            "pings": self.pings, "stream_posts": self.stream_posts,
            "held_takes": sum(1 for x in self.held_takes if x[1].parked == x[2]),
        }

    def stats(self):
        lats = sorted(j.done_t - j.take_t for j in self.jobs.values() if j.done_t is not None)
        taken_not_done = sum(1 for j in self.jobs.values() if j.take_t is not None and j.done_count == 0)
        st = self.progress()
        st.update({
            "mode": self.mode, "limit": self.limit, "kind": self.kind,
            "n_jobs": len(self.jobs), "untaken": len(self.queue),
            "dup": self.dup, "wrong": self.wrong, "unknown": self.unknown,
            "taken_not_done": taken_not_done,
            "progress_updates": self.progress_updates,
            "max_in_flight": self.max_in_flight, "over_limit_takes": self.over_limit_takes,
            "max_batch": self.max_batch, "batch_over_limit": self.batch_over_limit,
            "auth_missing": self.auth_missing, "auth_forms": self.auth_forms,
            "xrid_mismatch": self.xrid_mismatch,
            "pings_with_jobs": self.pings_with_jobs,
            "chunks_total": self.chunks_total,
            "late_chunks": sum(j.late_chunks for j in self.jobs.values()),
            "bad_chunks": sum(j.bad_chunks for j in self.jobs.values()),
            "gen_final_not_stream": self.gen_final_not_stream,
            "wrong_samples": self.wrong_samples,
            "last_take_t": self.last_take_t,
            # per-job arrival of the final result, for the few large-output jobs
            "done_t_by_n": ({str(j.n): j.done_t for j in self.jobs.values() if j.done_t is not None}
                            if self.kind == "bigout" else {}),
            "lat": {
                "n": len(lats),
                "p50": _pct(lats, 50), "p90": _pct(lats, 90), "p99": _pct(lats, 99),
                "max": lats[-1] if lats else None,
                "mean": (sum(lats) / len(lats)) if lats else None,
            },
        })
        return st


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    if not args.host.startswith("127.") and args.host not in ("localhost", "::1"):
        raise SystemExit("the bench platform only listens on loopback")
    p = Platform(args.host, args.port)
    sys.stdout.write("LISTENING %d\n" % p.port)
    sys.stdout.flush()
    try:
        p.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
