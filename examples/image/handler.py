"""Return an image, as most GPU workers do: a PNG as base64 text.

The picture (a sun setting over the sea, coloured by the prompt) is drawn
pixel by pixel and packed into a PNG with the standard library only (zlib
and struct), standing in for a model's output. Serve it and open the page
to see the image rendered rather than printed:

    python handler.py                                  # ./test_input.json, prints JSON
    python handler.py --rp_serve_api                   # then open http://localhost:8000/

Input: ``prompt`` (any text; it picks the colours), ``width`` and
``height`` (1 to 1024, default 320 x 200), ``data_uri`` (true: return
``data:image/png;base64,...`` instead of bare base64). Progress is reported
as rows drawn (``"120/300"``), which the page shows as a bar.
"""

import base64
import hashlib
import math
import struct
import zlib

import wavespeed.serverless as serverless

MAX_SIDE = 1024


def png_bytes(width, height, rows):
    """A PNG file (8-bit RGB) from ``rows``: one bytes object of 3 * width per row."""

    def chunk(kind, data):
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    # Each scanline starts with its filter type; 0 means "stored as is".
    raw = b"".join(b"\x00" + row for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def palette(prompt):
    """Sky top, horizon glow and sea colours, picked by the prompt's hash."""
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    shift = digest[0] / 255.0  # 0..1: from a red dusk to a violet one

    def mix(a, b, t):
        return tuple(a[i] + (b[i] - a[i]) * t for i in range(3))

    top = mix((32, 36, 92), (58, 24, 96), shift)
    glow = mix((255, 150, 64), (250, 112, 132), shift)
    sea = mix((20, 40, 84), (36, 28, 80), shift)
    return top, glow, sea


def sunset(width, height, prompt, report=None):
    """The rows of a sunset: sky gradient, sun disc with a halo, rippled sea.

    ``report(done, total)`` is called every tenth of the rows.
    """
    top, glow, sea = palette(prompt)
    horizon = int(height * 0.62)
    sun_x, sun_y = width * 0.5, horizon - height * 0.08
    radius = min(width, height) * 0.16
    rows = []
    for y in range(height):
        row = bytearray()
        for x in range(width):
            if y < horizon:
                t = y / max(1, horizon - 1)
                colour = [top[i] + (glow[i] - top[i]) * t * t for i in range(3)]
                distance = math.hypot(x - sun_x, y - sun_y)
                if distance < radius:
                    colour = [255, 226, 150]
                else:
                    halo = max(0.0, 1.0 - (distance - radius) / (radius * 2.2))
                    colour = [c + (255 - c) * halo * halo * 0.55 for c in colour]
            else:
                depth = (y - horizon) / max(1, height - horizon)
                colour = [sea[i] + (glow[i] - sea[i]) * (1 - depth) * 0.35 for i in range(3)]
                # The sun's reflection: a column of ripples that widens with depth.
                ripple = math.sin(y * 0.9 + math.sin(x * 0.07) * 2.0)
                spread = radius * (0.6 + depth * 1.4)
                if abs(x - sun_x) < spread and ripple > 0.35:
                    fade = 1 - abs(x - sun_x) / spread
                    colour = [c + (255 - c) * fade * 0.7 for c in colour]
            row.extend(max(0, min(255, int(c))) for c in colour)
        rows.append(bytes(row))
        if report is not None and (y + 1) % max(1, height // 10) == 0:
            report(y + 1, height)
    return rows


def handler(job):
    job_input = job["input"]
    prompt = str(job_input.get("prompt", ""))
    width, height = job_input.get("width", 320), job_input.get("height", 200)
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIDE:
            return {"error": f"{name}: an integer from 1 to {MAX_SIDE}"}
    # "120/300" rows drawn: the local API's page shows such progress as a bar.
    def report(done, total):
        serverless.progress_update(job, f"{done}/{total}")

    data = png_bytes(width, height, sunset(width, height, prompt, report))
    text = base64.b64encode(data).decode("ascii")
    if job_input.get("data_uri"):
        text = "data:image/png;base64," + text
    return {"image": text, "width": width, "height": height}


if __name__ == "__main__":
    serverless.start({"handler": handler})
