"""Take the README's screenshot of the local API's page with an image output.

Serves examples/image/handler.py on a loopback port, runs two jobs through
the page in headless Chromium (the first only fills the history), and saves
the page after the second as a PNG:

    make screenshot                     # examples/image/screenshot.png
    python tools/screenshot.py --out shot.png --chromium /usr/bin/chromium
"""

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import threading
import urllib.parse
from pathlib import Path
from typing import Any, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout's wavespeed, whichever Python runs this

from wavespeed.serverless.config import Config  # noqa: E402
from wavespeed.serverless.devserver import make_server  # noqa: E402

FIRST = {"input": {"prompt": "harbour at dawn", "width": 160, "height": 100, "data_uri": True}}
SHOWN = {"input": {"prompt": "a lighthouse at dusk", "width": 480, "height": 300}}


def image_handler() -> Any:
    path = ROOT / "examples" / "image" / "handler.py"
    spec = importlib.util.spec_from_file_location("image_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


def chromium(binary: str, profile: Path, url: str, *extra: str) -> None:
    argv: List[str] = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        "--mute-audio",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=15000",
        *extra,
        url,
    ]
    subprocess.run(argv, check=True, capture_output=True, timeout=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "examples" / "image" / "screenshot.png"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--size", default="1280,900", help="window width,height in CSS pixels")
    args = parser.parse_args()
    if not Path(args.chromium).exists():
        print(f"screenshot: {args.chromium} not found (run .ci/install-chromium)", file=sys.stderr)
        return 1

    server = make_server(Config(handler=image_handler()), host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.run, name="screenshot-api", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.port}/"
    out = Path(args.out).resolve()
    try:
        with tempfile.TemporaryDirectory(prefix="wavespeed-shot-") as tmp:
            profile = Path(tmp) / "profile"
            for body, extra in (
                (FIRST, ["--dump-dom"]),
                (SHOWN, [f"--screenshot={out}", f"--window-size={args.size}"]),
            ):
                url = base + "?input=" + urllib.parse.quote(json.dumps(body))
                chromium(args.chromium, profile, url, *extra)
    finally:
        server.close()
        thread.join(5)
    print(f"screenshot: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
