"""Run the test suite on every CPython 3.9-3.13 found on this machine.

Each interpreter gets its own virtualenv under ``.matrix/<version>/`` with
the project installed (editable) with its test extra, made on first use and
remade when setup.cfg or setup.py change. The suite runs in each, one
version after the other (the machine is shared), its output kept in
``.matrix/<version>.log``; one line per version is printed, and the lines
are saved with the date in ``.matrix/summary.txt``.

Interpreters are looked for as ``python3.X`` on PATH, in /usr/bin and
/usr/local/bin, and under pyenv's versions folder (``$PYENV_ROOT`` or
~/.pyenv). None is built or downloaded.

    make test-matrix
    python3 tools/test_matrix.py 3.9 3.12          # only these
    python3 tools/test_matrix.py -- -x tests/test_cli.py   # pytest arguments after --

Exit status: 0 when every interpreter found passed, 1 otherwise (or when
none was found).
"""

import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MATRIX = os.path.join(ROOT, ".matrix")
VERSIONS = ("3.9", "3.10", "3.11", "3.12", "3.13")
SETUP_TIMEOUT = 900  # seconds for a virtualenv and its installs
SUITE_TIMEOUT = 3600  # seconds for one run of the suite
PROBE = (
    "import platform, sys, venv, ensurepip; "
    "print(platform.python_implementation(), platform.python_version())"
)


def candidates(version: str) -> Iterator[str]:
    name = f"python{version}"
    on_path = shutil.which(name)
    if on_path:
        yield on_path  # may be a pyenv shim that answers "command not found": probed below
    for folder in ("/usr/bin", "/usr/local/bin"):
        yield os.path.join(folder, name)
    pyenv = os.environ.get("PYENV_ROOT") or os.path.join(os.path.expanduser("~"), ".pyenv")

    def patch(path: str) -> Tuple[int, ...]:
        tail = os.path.basename(path)[len(version) + 1 :]
        return tuple(int(p) for p in re.findall(r"\d+", tail)[:1]) or (-1,)

    installs = glob.glob(os.path.join(pyenv, "versions", f"{version}.*"))
    for folder in sorted(installs, key=patch, reverse=True):  # the newest patch release first
        if re.fullmatch(rf"{re.escape(version)}\.\d+", os.path.basename(folder)):
            yield os.path.join(folder, "bin", name)


def find(version: str) -> Optional[Tuple[str, str]]:
    """(path, full version) of a working CPython ``version`` with venv and ensurepip."""
    seen = set()
    for path in candidates(version):
        if path in seen or not os.access(path, os.X_OK):
            continue
        seen.add(path)
        try:
            proc = subprocess.run([path, "-c", PROBE], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        words = proc.stdout.split()
        if proc.returncode == 0 and len(words) == 2 and words[0] == "CPython":
            if words[1].startswith(version + "."):
                return path, words[1]
    return None


def fingerprint() -> str:
    digest = hashlib.sha256()
    for name in ("setup.cfg", "setup.py"):
        with open(os.path.join(ROOT, name), "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def prepare(version: str, interpreter: str, log: "LogFile") -> str:
    """The virtualenv's python for ``version``, made or remade as needed."""
    venv = os.path.join(MATRIX, version)
    python = os.path.join(venv, "bin", "python")
    stamp = os.path.join(venv, ".installed")
    wanted = f"{interpreter}\n{fingerprint()}\n"
    try:
        with open(stamp) as f:
            if f.read() == wanted and os.path.exists(python):
                return python
    except OSError:
        pass
    log.run([interpreter, "-m", "venv", "--clear", venv], SETUP_TIMEOUT)
    log.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--upgrade", "pip"], SETUP_TIMEOUT)
    log.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", ".[test]"], SETUP_TIMEOUT)
    with open(stamp, "w") as f:
        f.write(wanted)
    return python


class StepFailed(Exception):
    pass


class LogFile:
    """Appends each command and its output to one log file."""

    def __init__(self, path: str) -> None:
        self.path = path
        with open(path, "w") as f:
            f.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S %z')}\n")

    def run(self, argv: Sequence[str], timeout: float) -> int:
        with open(self.path, "a") as f:
            f.write("$ " + " ".join(argv) + "\n")
            f.flush()
            try:
                code = subprocess.run(argv, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                f.write(f"\n# timed out after {timeout:.0f} s\n")
                code = -1
        if code != 0 and argv[1:3] != ["-m", "pytest"]:
            raise StepFailed(f"{os.path.basename(argv[0])} {' '.join(argv[1:4])} exited {code}")
        return code


def summary(junit_xml: str) -> Dict[str, int]:
    """The counts of pytest's JUnit XML report (whatever the verbosity asked for)."""
    import xml.etree.ElementTree as ElementTree

    try:
        root = ElementTree.parse(junit_xml).getroot()
    except (OSError, ElementTree.ParseError):
        return {}
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        for key in counts:
            counts[key] += int(suite.get(key, "0"))
    return {
        "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
        "failed": counts["failures"],
        "errors": counts["errors"],
        "skipped": counts["skipped"],
    }


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    pytest_args: List[str] = []
    if "--" in args:
        at = args.index("--")
        args, pytest_args = args[:at], args[at + 1 :]
    versions = [v for v in VERSIONS if not args or v in args]
    unknown = sorted(set(args) - set(VERSIONS))
    if unknown:
        print(f"test-matrix: not a version this project supports: {', '.join(unknown)}", file=sys.stderr)
        return 2
    os.makedirs(MATRIX, exist_ok=True)
    results: List[str] = []
    ran = 0
    ok = True
    for version in versions:
        found = find(version)
        if found is None:
            line = f"{version:<5} -        not found (python{version} on PATH, /usr/bin, /usr/local/bin, pyenv)"
        else:
            interpreter, full = found
            log = LogFile(os.path.join(MATRIX, f"{version}.log"))
            rel = os.path.relpath(log.path, ROOT)
            try:
                python = prepare(version, interpreter, log)
                started = time.monotonic()
                report = os.path.join(MATRIX, f"{version}.xml")
                if os.path.exists(report):
                    os.remove(report)
                code = log.run(
                    [python, "-m", "pytest", "-q", "-p", "no:randomly", f"--junitxml={report}", *pytest_args],
                    SUITE_TIMEOUT,
                )
            except StepFailed as exc:
                line = f"{version:<5} {full:<8} SETUP FAILED: {exc} (see {rel})"
                ok = False
            else:
                ran += 1
                counts = summary(report)
                seconds = time.monotonic() - started
                if not counts:
                    line = f"{version:<5} {full:<8} FAIL   no pytest summary, exit {code} (see {rel})"
                    ok = False
                else:
                    verdict = "ok" if code == 0 else "FAIL"
                    ok = ok and code == 0
                    line = (
                        f"{version:<5} {full:<8} {verdict:<6} {counts['passed']} passed, {counts['failed']} failed, "
                        f"{counts['errors']} errors, {counts['skipped']} skipped in {seconds:.0f} s ({rel})"
                    )
        print(line, flush=True)
        results.append(line)
    with open(os.path.join(MATRIX, "summary.txt"), "w") as f:
        f.write(f"# make test-matrix, {time.strftime('%Y-%m-%d %H:%M %z')}, args: {' '.join(pytest_args) or '-'}\n")
        f.write("\n".join(results) + "\n")
    return 0 if ok and ran else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
