"""Job returning one large string (input "size" bytes, 20 MB in the bench),
as an image worker returns a base64 image. Each job builds a new string with
a single allocation of its final size, so the worker's peak RSS growth is
that string plus what the SDK adds.

Just before returning, the handler writes "BENCH_RETURN <n> <monotonic time>"
to stderr: the bench measures the post time from there to the platform
having the whole result.
"""
import sys
import time

from _sdk import start

_FILL = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3ODkrLw=="
_BLOCK = (_FILL * (65536 // len(_FILL) + 1))[:65536]


def handler(job):
    inp = job["input"]
    whole, rest = divmod(inp["size"] - 8, len(_BLOCK))
    out = "".join(["%08d" % inp["n"]] + [_BLOCK] * whole + [_BLOCK[:rest]])
    sys.stderr.write("BENCH_RETURN %d %.6f\n" % (inp["n"], time.monotonic()))
    sys.stderr.flush()
    return out


if __name__ == "__main__":
    start(handler)
