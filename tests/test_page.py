"""The local API's page at ``/`` in a real browser (headless Chromium).

The page runs a job by itself when opened with ``?input=<JSON>`` and opens
an earlier one with ``?job=<id>``; Chromium dumps the DOM once the page is
idle, and the tests read what a person would see from it: the job's status,
stream chunks, the progress bar, the history, the request as code, and the
media elements (an ``<img>`` whose natural size is the size of the PNG the
handler returned, an ``<audio>`` for a WAV). Skipped when Chromium is not
installed (``.ci/install-chromium`` installs it on CI).
"""

import base64
import importlib.util
import io
import json
import math
import os
import shlex
import shutil
import struct
import subprocess
import threading
import time
import urllib.parse
import wave
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import pytest
import requests

import wavespeed.serverless as serverless
from wavespeed.serverless.config import Config
from wavespeed.serverless.devserver import make_server

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("WAVESPEED_TEST_CHROMIUM", "/usr/bin/chromium")

if not os.path.exists(CHROMIUM):
    pytestmark.append(pytest.mark.skip(reason=f"{CHROMIUM} not installed (run .ci/install-chromium)"))


def load_image_example() -> ModuleType:
    """examples/image/handler.py as a module (its start() call is behind __main__)."""
    spec = importlib.util.spec_from_file_location("image_example", ROOT / "examples" / "image" / "handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


IMAGE = load_image_example()


def png(width: int, height: int) -> bytes:
    """A gradient PNG, packed by the image example's own encoder."""
    rows = [
        bytes(v for x in range(width) for v in (x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), 90))
        for y in range(height)
    ]
    return bytes(IMAGE.png_bytes(width, height, rows))


def wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        samples = [int(8000 * math.sin(2 * math.pi * 440 * i / 8000)) for i in range(800)]
        w.writeframes(struct.pack(f"<{len(samples)}h", *samples))
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# A 1x1 GIF, byte for byte: header, screen, 2-colour table, image, LZW data, trailer.
GIF_1X1 = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


def media_chunks(port: int) -> List[Any]:
    """Chunks with media under neutral key names: the page must go by the bytes."""
    return [
        {"a": b64(png(96, 64))},
        {"b": [b64(wav())]},
        "data:image/png;base64," + b64(png(32, 16)),
        {
            "x": b64(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00" + bytes(32)),
            "y": b64(GIF_1X1),
            "z": b64(b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(32)),
            "m": b64(b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(32)),
            "f": b64(b"\xff\xfb\x90\x64" + bytes(40)),
            "v": b64(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(16)),
            "s": base64.urlsafe_b64encode(png(8, 8)).decode("ascii"),
            "u": f"http://127.0.0.1:{port}/media/clip.webm?rev=2",
            "not a page": f"http://127.0.0.1:{port}/index.html",
            "text": "a sentence that is long enough to be looked at, but is only text",
            "text b64": b64(b"just some text that happens to be base64 encoded"),
            "n": 5,
        },
    ]


def handler(job: Dict[str, Any]) -> Any:
    inp = job["input"]
    if inp.get("fail"):
        raise RuntimeError("page-visible failure")
    if "progress" in inp:
        serverless.progress_update(job, inp["progress"])
        job.cancelled.wait(30)  # set when the server closes at the end of the test
        return {"stopped": True}
    if "media_port" in inp:
        return (chunk for chunk in media_chunks(inp["media_port"]))  # a generator: streamed

    def tokens() -> Iterator[Dict[str, Any]]:
        for i, word in enumerate(inp["prompt"].split()):
            serverless.progress_update(job, {"step": i + 1})
            time.sleep(0.05)  # chunks arrive over time, as from a model
            yield {"token": word.upper()}

    return tokens()


def serve(handler_fn: Callable[..., Any]) -> Iterator[str]:
    config = Config(handler=handler_fn, return_aggregate_stream=True)
    server = make_server(config, host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.close()  # cancels what still runs; handlers return when they see it
        thread.join(5)


@pytest.fixture
def base_url() -> Iterator[str]:
    yield from serve(handler)


@pytest.fixture
def image_url() -> Iterator[str]:
    yield from serve(IMAGE.handler)


# -- the browser ------------------------------------------------------------------


def chromium(url: str, profile: Path, budget_ms: int, *extra: str) -> str:
    argv = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--mute-audio",
        f"--user-data-dir={profile}",
        # Virtual time runs the page's timers fast and pauses while requests
        # are in flight; the DOM is dumped when the budget is used up.
        f"--virtual-time-budget={budget_ms}",
        *extra,
        url,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def dump_dom(url: str, profile: Path, budget_ms: int = 15000) -> "Node":
    return parse(chromium(url, profile, budget_ms, "--dump-dom"))


def page_url(base: str, body: Any) -> str:
    return f"{base}/?input={urllib.parse.quote(json.dumps(body))}"


# -- a small DOM, to assert on what the page shows ---------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Node:
    def __init__(self, tag: str, attrs: Dict[str, str], parent: Optional["Node"]) -> None:
        self.tag = tag
        self.attrs = attrs
        self.parent = parent
        self.children: List[Union["Node", str]] = []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self) -> Iterator["Node"]:
        for child in self.children:
            if isinstance(child, Node):
                yield child
                yield from child.iter()

    def all(self, tag: Optional[str] = None, cls: Optional[str] = None) -> List["Node"]:
        return [
            n
            for n in self.iter()
            if (tag is None or n.tag == tag) and (cls is None or cls in n.attrs.get("class", "").split())
        ]

    def by_id(self, element_id: str) -> "Node":
        for node in self.iter():
            if node.attrs.get("id") == element_id:
                return node
        raise AssertionError(f"#{element_id} not in the DOM")


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {}, None)
        self.at = self.root

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, self.at)
        self.at.children.append(node)
        if tag not in VOID:
            self.at = node

    def handle_endtag(self, tag: str) -> None:
        node: Optional[Node] = self.at
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.at = node.parent

    def handle_data(self, data: str) -> None:
        self.at.children.append(data)


def parse(html: str) -> Node:
    builder = _Builder()
    builder.feed(html)
    builder.close()
    return builder.root


def figures(node: Node) -> Dict[str, Node]:
    """The media figures under ``node``, by the JSON path they were found at."""
    return {f.attrs["data-path"]: f for f in node.all("figure", "media")}


def state(dom: Node) -> str:
    return dom.all("body")[0].attrs["data-state"]


# -- tests ------------------------------------------------------------------------


def test_page_runs_a_job_and_shows_its_chunks_and_output(base_url: str, tmp_path: Path) -> None:
    dom = dump_dom(page_url(base_url, {"input": {"prompt": "quick brown fox"}}), tmp_path / "p")
    assert state(dom) == "completed"
    assert dom.by_id("status").text() == "COMPLETED"
    chunks = [json.loads(pre.text()) for pre in dom.by_id("stream").all("pre", "chunk")]
    assert [c["token"] for c in chunks] == ["QUICK", "BROWN", "FOX"]
    output = json.loads(dom.by_id("output").text())
    assert output == [{"token": "QUICK"}, {"token": "BROWN"}, {"token": "FOX"}]
    assert dom.by_id("execution").text().endswith(" ms")
    job_id = dom.by_id("job-id").text()
    assert len(job_id) == 36 and job_id.count("-") == 4
    # Without media, the JSON is what there is to see: shown, not folded away.
    assert "open" in dom.by_id("raw").attrs
    assert not figures(dom)


def test_page_shows_a_failed_job(base_url: str, tmp_path: Path) -> None:
    dom = dump_dom(page_url(base_url, {"input": {"fail": True, "prompt": ""}}), tmp_path / "p")
    assert state(dom) == "failed"
    assert dom.by_id("status").text() == "FAILED"
    assert "page-visible failure" in dom.by_id("output").text()


def test_page_wraps_a_bare_object_as_input(base_url: str, tmp_path: Path) -> None:
    # Without "input" at the top, the page sends {"input": <what was typed>}.
    dom = dump_dom(page_url(base_url, {"prompt": "bare"}), tmp_path / "p")
    assert dom.by_id("status").text() == "COMPLETED"
    assert json.loads(dom.by_id("output").text()) == [{"token": "BARE"}]


def test_the_image_example_is_shown_as_an_image_of_its_size(image_url: str, tmp_path: Path) -> None:
    request = {"input": {"prompt": "a test card", "width": 120, "height": 80}}
    dom = dump_dom(page_url(image_url, request), tmp_path / "p")
    assert dom.by_id("status").text() == "COMPLETED"
    shown = figures(dom.by_id("media"))
    assert list(shown) == ["output.image"]
    fig = shown["output.image"]
    assert fig.attrs["data-mime"] == "image/png"
    # The browser decoded it: its natural size is the one the handler drew.
    assert fig.attrs.get("data-natural") == "120x80", fig.attrs
    img = fig.all("img")[0]
    drawn = IMAGE.png_bytes(120, 80, IMAGE.sunset(120, 80, "a test card"))
    expected = {"image": b64(drawn), "width": 120, "height": 80}
    assert img.attrs["src"] == "data:image/png;base64," + expected["image"]
    # The raw JSON is one click away: folded, and it holds the handler's output.
    assert "open" not in dom.by_id("raw").attrs
    assert json.loads(dom.by_id("output").text()) == expected


def test_a_data_uri_output_is_shown_as_is(image_url: str, tmp_path: Path) -> None:
    request = {"input": {"prompt": "uri", "width": 40, "height": 30, "data_uri": True}}
    dom = dump_dom(page_url(image_url, request), tmp_path / "p")
    fig = figures(dom.by_id("media"))["output.image"]
    assert fig.attrs.get("data-natural") == "40x30"
    assert fig.all("img")[0].attrs["src"].startswith("data:image/png;base64,iVBORw0KGgo")


def test_media_in_stream_chunks_is_found_by_its_bytes(base_url: str, tmp_path: Path) -> None:
    port = int(urllib.parse.urlsplit(base_url).port or 0)
    dom = dump_dom(page_url(base_url, {"input": {"media_port": port}}), tmp_path / "p")
    assert dom.by_id("status").text() == "COMPLETED"
    items = dom.by_id("stream").all("li")
    assert len(items) == 4

    first = figures(items[0])
    assert first["stream[0].a"].attrs["data-natural"] == "96x64"

    audio = figures(items[1])["stream[1].b[0]"]
    assert audio.attrs["data-mime"] == "audio/wav"
    players = audio.all("audio")
    assert len(players) == 1 and players[0].attrs["src"].startswith("data:audio/wav;base64,UklGR")
    assert "controls" in players[0].attrs

    assert figures(items[2])["stream[2]"].attrs["data-natural"] == "32x16"

    found = {path: f.attrs["data-mime"] for path, f in figures(items[3]).items()}
    assert found == {
        "stream[3].x": "image/jpeg",
        "stream[3].y": "image/gif",
        "stream[3].z": "image/webp",
        "stream[3].m": "audio/mpeg",
        "stream[3].f": "audio/mpeg",
        "stream[3].v": "video/mp4",
        "stream[3].s": "image/png",
        "stream[3].u": "video/webm",
    }
    last = figures(items[3])
    assert last["stream[3].y"].attrs["data-natural"] == "1x1"
    assert last["stream[3].s"].attrs["data-natural"] == "8x8"  # url-safe base64 too
    assert last["stream[3].v"].all("video") and last["stream[3].m"].all("audio")
    assert last["stream[3].u"].all("video")[0].attrs["src"] == f"http://127.0.0.1:{port}/media/clip.webm?rev=2"
    # Long base64 is shortened where chunks are listed; the full text is one click away.
    assert "characters)" in items[0].all("pre", "chunk")[0].text()
    assert json.loads(items[0].all("pre", "raw")[0].text()) == media_chunks(port)[0]

    # The aggregated output (the list of chunks) shows the same media.
    output = figures(dom.by_id("media"))
    assert output["output[0].a"].attrs["data-natural"] == "96x64"
    assert output["output[1].b[0]"].all("audio")
    assert len(output) == 11


@pytest.mark.parametrize(
    "value, percent",
    [
        (0.4, "40"),
        (40, "40"),
        ("3/10", "30"),
        ("85%", "85"),
        ({"progress": 0.25, "message": "denoising"}, "25"),
        ({"step": 3, "total": 4}, "75"),
        ({"step": 3}, None),  # no total: no fraction
        ("loading the model", None),
    ],
)
def test_progress_is_shown_as_a_bar(base_url: str, tmp_path: Path, value: Any, percent: Optional[str]) -> None:
    # The handler reports progress, then waits until the server closes: the
    # DOM is dumped while the job is IN_PROGRESS. A small budget is enough,
    # as virtual time stands still while the page's requests are in flight.
    dom = dump_dom(page_url(base_url, {"input": {"progress": value}}), tmp_path / "p", budget_ms=400)
    assert dom.by_id("status").text() == "IN_PROGRESS"
    shown = dom.by_id("progress").text()
    assert (shown if isinstance(value, str) else json.loads(shown)) == value
    row = dom.by_id("progress-row")
    if percent is None:
        assert "hidden" in row.attrs
    else:
        assert "hidden" not in row.attrs
        assert dom.by_id("progress-bar").attrs["aria-valuenow"] == percent
        assert dom.by_id("progress-label").text() == percent + "%"
        assert dom.by_id("progress-fill").attrs["style"] == f"width: {percent}%;"


def test_history_keeps_the_last_jobs_and_reopens_one(base_url: str, tmp_path: Path) -> None:
    profile = tmp_path / "p"  # one browser profile: the history lives in its storage
    first = dump_dom(page_url(base_url, {"input": {"prompt": "first job"}}), profile)
    first_id = first.by_id("job-id").text()
    dom = dump_dom(page_url(base_url, {"input": {"prompt": "second"}}), profile)
    second_id = dom.by_id("job-id").text()

    rows = dom.by_id("history-rows").all("tr")
    assert [r.attrs["data-id"] for r in rows] == [second_id, first_id]
    for row in rows:
        cells = [td.text() for td in row.all("td")]
        assert cells[1] == "COMPLETED" == row.attrs["data-status"]
        assert cells[2].endswith(" ms") and cells[3].endswith(" ms")
        assert row.all("a")[0].attrs["href"] == f"?job={row.attrs['data-id']}"
    assert rows[0].attrs.get("class") == "current"

    # Re-open the first job: its output comes back, and so does its request.
    again = dump_dom(f"{base_url}/?job={first_id}", profile)
    assert again.by_id("job-id").text() == first_id
    assert again.by_id("status").text() == "COMPLETED"
    assert json.loads(again.by_id("output").text()) == [{"token": "FIRST"}, {"token": "JOB"}]
    assert '"first job"' in again.by_id("curl").text()
    assert [r.attrs["data-id"] for r in again.by_id("history-rows").all("tr")] == [second_id, first_id]


def test_an_expired_job_says_so(base_url: str, tmp_path: Path) -> None:
    dom = dump_dom(f"{base_url}/?job=no-such-job", tmp_path / "p", budget_ms=2000)
    assert "no longer has this job" in dom.by_id("message").text()


def snippet_request() -> Dict[str, Any]:
    # Quotes of both kinds, a backslash, JSON's null/true/false: the escaping matters.
    return {"input": {"prompt": "it's \"quoted\" \\ here", "flags": [True, False, None], "n": 1.5}}


def test_copy_as_curl_is_a_working_command(base_url: str, tmp_path: Path) -> None:
    body = {"input": {"prompt": "curl's turn"}}
    dom = dump_dom(page_url(base_url, body), tmp_path / "p")
    command = dom.by_id("curl").text()
    argv = shlex.split(command.replace("\\\n", " "))
    assert argv[:5] == ["curl", "-s", "-X", "POST", f"{base_url}/runsync"]
    assert json.loads(argv[argv.index("-d") + 1]) == body
    if shutil.which("curl"):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        doc = json.loads(proc.stdout)
    else:
        doc = requests.post(argv[4], data=argv[argv.index("-d") + 1], timeout=30).json()
    assert doc["status"] == "COMPLETED"
    assert doc["output"] == [{"token": "CURL'S"}, {"token": "TURN"}]


def test_copy_as_python_builds_the_same_request(base_url: str, tmp_path: Path) -> None:
    body = snippet_request()
    dom = dump_dom(page_url(base_url, body), tmp_path / "p")
    code = dom.by_id("python").text()
    assert f'runpod.endpoint_url_base = "{base_url}/v2"' in code
    # The request is a Python literal equal to the JSON body.
    literal = code.split("endpoint.run(", 1)[1].rsplit(")\nprint", 1)[0]
    assert eval(literal, {"__builtins__": {}}) == body  # noqa: S307 - a literal the page wrote
    compile(code, "snippet.py", "exec")
    shell = dom.by_id("curl").text().replace("\\\n", " ")
    assert json.loads(shlex.split(shell)[-1]) == body


def test_copy_as_python_runs_with_the_runpod_client(base_url: str, tmp_path: Path) -> None:
    try:
        from tests.test_runpod_client import ensure_runpod
    except ImportError:  # tests/ run as a plain directory on sys.path
        from test_runpod_client import ensure_runpod  # type: ignore[no-redef]

    python = ensure_runpod()  # skips when runpod cannot be installed (offline)
    dom = dump_dom(page_url(base_url, {"input": {"prompt": "from python"}}), tmp_path / "p")
    script = tmp_path / "snippet.py"
    script.write_text(dom.by_id("python").text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "WAVERLESS_"))}
    env["HOME"] = str(tmp_path)  # no ~/.runpod credentials are read
    proc = subprocess.run([python, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[{'token': 'FROM'}, {'token': 'PYTHON'}]"
