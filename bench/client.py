"""Small blocking HTTP/1.1 keep-alive client for the bench (stdlib only).

Used to drive the fake platform's control routes and, as a tight loop, to
measure the platform's own capacity before any SDK is measured.
"""

import json
import socket
import time


class Client:
    """One keep-alive connection to 127.0.0.1:port; raw sockets, no parsing frills."""

    def __init__(self, port, host="127.0.0.1", timeout=30.0):
        self.addr = (host, port)
        self.timeout = timeout
        self.sock = None
        self.buf = b""

    def _connect(self):
        s = socket.create_connection(self.addr, timeout=self.timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = s
        self.buf = b""

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def request(self, method, path, body=b""):
        """Return (status, body bytes). Reconnects once if the server closed."""
        if isinstance(body, str):
            body = body.encode()
        req = b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % (
            method.encode(), path.encode(), len(body)) + body
        for attempt in (0, 1):
            if self.sock is None:
                self._connect()
            try:
                self.sock.sendall(req)
                return self._read_response()
            except (ConnectionError, BrokenPipeError, socket.timeout, EOFError):
                self.close()
                if attempt:
                    raise
        raise RuntimeError("unreachable")

    def _read_response(self):
        buf = self.buf
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("server closed the connection")
            buf += chunk
        idx = buf.index(b"\r\n\r\n")
        head = buf[:idx].split(b"\r\n")
        status = int(head[0].split(b" ", 2)[1])
        clen = 0
        close = False
        for line in head[1:]:
            k, _, v = line.partition(b":")
            k = k.strip().lower()
            if k == b"content-length":
                clen = int(v)
            elif k == b"connection" and v.strip().lower() == b"close":
                close = True
        start = idx + 4
        while len(buf) < start + clen:
            chunk = self.sock.recv(max(65536, start + clen - len(buf)))
            if not chunk:
                raise EOFError("server closed the connection")
            buf += chunk
        body = buf[start:start + clen]
        self.buf = buf[start + clen:]
        if close:
            self.close()
        return status, body

    def json(self, method, path, obj=None):
        status, body = self.request(method, path, json.dumps(obj).encode() if obj is not None else b"")
        if status != 200:
            raise RuntimeError("%s %s -> %d" % (method, path, status))
        return json.loads(body)


def capacity(port, n=20000, seconds=5.0):
    """Tight single-connection take+done loop against a loaded platform.

    Returns requests/s, jobs/s and the per-request round trip, measured over
    at most n jobs or `seconds`, whichever ends first.
    """
    ctl = Client(port)
    ctl.json("POST", "/_ctl/reset", {"mode": "204", "limit": 1})
    ctl.json("POST", "/_ctl/load", {"kind": "echo", "n": n, "prefix": "cap"})
    c = Client(port)
    take = "/v2/ep/job-take/cap?gpu=x&job_in_progress=0"
    done_t = "/v2/ep/job-done/cap/%s?gpu=x&isStream=false"
    jobs = 0
    t0 = time.monotonic()
    deadline = t0 + seconds
    while jobs < n:
        status, body = c.request("GET", take)
        if status != 200:
            break
        job = json.loads(body)
        c.request("POST", done_t % job["id"], b'{"output":{"n":%d}}' % (job["input"]["n"] + 1))
        jobs += 1
        if (jobs & 255) == 0 and time.monotonic() > deadline:
            break
    dt = time.monotonic() - t0
    st = ctl.json("GET", "/_ctl/stats")
    c.close()
    ctl.close()
    return {
        "jobs": jobs, "seconds": dt, "req_per_s": 2 * jobs / dt, "jobs_per_s": jobs / dt,
        "rtt_us": dt / (2 * jobs) * 1e6, "wrong": st["wrong"], "dup": st["dup"],
    }
