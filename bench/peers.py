"""The SDKs under test, each in its own virtualenv.

- ours:      the checkout this file lives in.  Uses <repo>/.venv/bin/python
             (made by `make install`) when it exists, else a venv under the
             cache folder holding the project's dependencies (setup.cfg).
             The checkout is put first on PYTHONPATH either way, so the
             worker always runs this tree's code.
- runpod:    runpod==1.12.0 from the package index.
- wavespeed: wavespeed==1.0.14 from the package index (same import name as
             ours, hence a venv of its own).

Peer venvs live under ${XDG_CACHE_HOME:-~/.cache}/wavespeed-bench/ and are
created on first use; nothing is installed into the project's environment.
"""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wavespeed-bench"


class SDK:
    def __init__(self, name, label, requirement=None, import_line="", import_module=""):
        self.name = name
        self.label = label
        self.requirement = requirement
        self.import_line = import_line  # what the handler scripts import
        self.import_module = import_module  # for the import-time figure
        self.python = None
        self.extra_env = {}
        self.extra_args = []

    def __repr__(self):
        return "SDK(%s)" % self.name


SDKS = {
    "ours": SDK("ours", "ours (checkout)", None,
                "import wavespeed.serverless as serverless", "wavespeed.serverless"),
    "runpod": SDK("runpod", "runpod 1.12.0", "runpod==1.12.0",
                  "import runpod", "runpod"),
    "wavespeed": SDK("wavespeed", "wavespeed 1.0.14", "wavespeed==1.0.14",
                     "import wavespeed.serverless as serverless", "wavespeed.serverless"),
}


def _log(msg):
    sys.stderr.write("[bench] %s\n" % msg)
    sys.stderr.flush()


def _make_venv(path, install_args, stamp):
    """Create a venv at path and pip install; idempotent via a stamp file."""
    stamp_file = path / ".bench-ok"
    if stamp_file.exists() and stamp_file.read_text() == stamp:
        return
    if path.exists():
        shutil.rmtree(path)
    _log("creating venv %s (pip install %s), first use only ..." % (path, " ".join(install_args)))
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    pip = [str(path / "bin" / "python"), "-m", "pip", "install", "-q",
           "--disable-pip-version-check"]
    r = subprocess.run(pip + install_args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-4000:])
        raise SystemExit("pip install %s failed" % " ".join(install_args))
    stamp_file.write_text(stamp)


def _project_requirements():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    raw = cfg.get("options", "install_requires", fallback="")
    return [line.strip() for line in raw.splitlines() if line.strip() and not line.strip().startswith("#")]


def prepare(sdk):
    """Make sure the SDK's interpreter exists; fill sdk.python/extra_env."""
    if sdk.name == "ours":
        project_py = ROOT / ".venv" / "bin" / "python"
        if project_py.exists():
            sdk.python = str(project_py)
        else:
            # no project venv (make creates it): a cache venv with the
            # project's dependencies only; the code comes from PYTHONPATH, so
            # nothing is built or written inside the checkout
            reqs = _project_requirements()
            tag = hashlib.sha1(("\n".join(reqs)).encode()).hexdigest()[:8]
            venv = CACHE / ("ours-deps-" + tag)
            _make_venv(venv, reqs or ["pip"], "deps:" + ";".join(reqs))
            sdk.python = str(venv / "bin" / "python")
        # the checkout wins over anything installed
        sdk.extra_env = {"PYTHONPATH": str(ROOT)}
    else:
        venv = CACHE / sdk.requirement.replace("==", "-")
        _make_venv(venv, [sdk.requirement], sdk.requirement)
        sdk.python = str(venv / "bin" / "python")
        sdk.extra_env = {}
    if sdk.name == "wavespeed":
        # 1.0.14 starts a health server on 0.0.0.0:8000 in worker mode and
        # parses its argv strictly; keep it on loopback, on a free port.
        sdk.extra_args = ["--waverless_api_host", "127.0.0.1", "--waverless_api_port", "{free_port}"]
    return sdk


def base_env(sdk):
    """Environment for anything run with the SDK's interpreter."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RUNPOD_", "WAVERLESS_", "BENCH_", "PYTHON", "VIRTUAL_ENV"))
           and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(sdk.extra_env)
    return env


def verify(sdk):
    """Check the SDK imports from where we think, and return its version/path."""
    mod = "runpod" if sdk.name == "runpod" else "wavespeed"
    code = ("import %s as m, sys; v = getattr(m, '__version__', '?'); "
            "print(m.__file__); print(v); print(sys.version.split()[0])" % mod)
    r = subprocess.run([sdk.python, "-c", code], env=base_env(sdk), cwd="/",
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    if r.returncode != 0:
        return {"ok": False, "error": r.stderr.strip()[-2000:]}
    path, version, pyver = r.stdout.split("\n")[:3]
    ok = True
    if sdk.name == "ours":
        ok = Path(path).resolve().is_relative_to(ROOT)
    elif not path.startswith(str(Path(sdk.python).parent.parent)):
        ok = False
    return {"ok": ok, "file": path, "version": version, "python": pyver, "interpreter": sdk.python}
