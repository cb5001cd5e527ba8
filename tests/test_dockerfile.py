"""docker/Dockerfile, read as text: the checks that need no container engine.

Building and running the image is `make docker-test-local` (podman, root,
minutes), outside the test suite. These catch, in milliseconds, the mistakes
that break it: a COPY of a file the repository no longer has, a default
HANDLER_DIR that is not one example folder, the SDK source copied into the
image the handler runs in, or the worker running as root.
"""

import re
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile"


def instructions() -> List[Tuple[str, str]]:
    """(KEYWORD, arguments) for each instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def stages() -> List[List[Tuple[str, str]]]:
    """The instructions of each build stage, in order (those before FROM dropped)."""
    result: List[List[Tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def arg_defaults() -> Dict[str, str]:
    defaults = {}
    for keyword, rest in instructions():
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            defaults[name] = value
    return defaults


def expand(value: str) -> str:
    defaults = arg_defaults()
    return re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], value)


def context_copies(stage: List[Tuple[str, str]]) -> List[List[str]]:
    """The sources of each COPY in a stage that reads the build context."""
    copies = []
    for keyword, rest in stage:
        if keyword == "COPY" and "--from=" not in rest:
            words = [w for w in rest.split() if not w.startswith("--")]
            copies.append([expand(w) for w in words[:-1]])
    return copies


def test_every_copied_path_exists_in_the_repository() -> None:
    sources = [src for stage in stages() for copy in context_copies(stage) for src in copy]
    assert sources, "no COPY found: the parser no longer matches the Dockerfile"
    missing = [src for src in sources if not (ROOT / src).exists()]
    assert missing == []


def test_default_handler_dir_is_one_example_folder() -> None:
    handler_dir = ROOT / arg_defaults()["HANDLER_DIR"]
    assert handler_dir.parent == ROOT / "examples"
    assert (handler_dir / "handler.py").is_file()
    assert (handler_dir / "test_input.json").is_file()


def test_makefile_builds_the_same_default_handler() -> None:
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(r"^HANDLER_DIR\s*\?=\s*(\S+)", makefile, re.M)
    assert match is not None
    assert match.group(1) == arg_defaults()["HANDLER_DIR"]


def test_final_stage_holds_no_sdk_source_and_runs_as_a_user() -> None:
    final = stages()[-1]
    copied = [src for copy in context_copies(final) for src in copy]
    assert copied == [arg_defaults()["HANDLER_DIR"] + "/"]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
