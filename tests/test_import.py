"""Importing wavespeed.serverless is inert: no env read, no thread, no heavy imports.

Each check runs in a fresh interpreter, since this test process has long
since imported requests and friends.
"""

import json
import os
import subprocess
import sys
import textwrap
from typing import Any, Dict

import pytest

pytestmark = pytest.mark.timeout(60)

PROBE = textwrap.dedent(
    """
    import json, logging, os, sys, threading

    reads = []

    class Spy(dict):
        # Records every look-up of our variables in os.environ.
        def _note(self, key):
            if str(key).startswith(("RUNPOD_", "WAVERLESS_", "WAVESPEED_", "DEVICE_ID", "HOSTNAME")):
                reads.append(key)
        def __getitem__(self, key):
            self._note(key); return super().__getitem__(key)
        def get(self, key, default=None):
            self._note(key); return super().get(key, default)
        def __contains__(self, key):
            self._note(key); return super().__contains__(key)
        def __iter__(self):
            reads.append("<iterate>"); return super().__iter__()
        def items(self):
            reads.append("<items>"); return super().items()
        def keys(self):
            reads.append("<keys>"); return super().keys()

    os.environ = Spy(os.environ)

    started = []
    original_start = threading.Thread.start

    def recording_start(self):
        started.append(self.name)
        return original_start(self)

    threading.Thread.start = recording_start

    import wavespeed.serverless as serverless
    after_import = {
        "threads": [t.name for t in threading.enumerate()],
        "started": list(started),
        "heavy": sorted(m for m in ("requests", "urllib3", "flask", "waitress", "asyncio", "boto3")
                        if m in sys.modules),
        "reads": list(reads),
        "wavespeed_handlers": len(logging.getLogger("wavespeed").handlers),
        "root_handlers": len(logging.getLogger().handlers),
        "public": all(hasattr(serverless, name) for name in serverless.__all__),
    }
    serverless.Config, serverless.log, serverless.progress_update, serverless.start
    after_access = {
        "threads": [t.name for t in threading.enumerate()],
        "started": list(started),
        "heavy": sorted(m for m in ("requests", "urllib3", "flask", "waitress", "asyncio")
                        if m in sys.modules),
        "reads": list(reads),
    }
    print(json.dumps({"import": after_import, "access": after_access}))
    """
)


def probe(extra_env: Dict[str, str]) -> Dict[str, Any]:
    env = dict(os.environ)
    env.update(extra_env)
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no warnings or log lines at import
    result: Dict[str, Any] = json.loads(proc.stdout)
    return result


def test_import_is_inert() -> None:
    result = probe({})
    at_import = result["import"]
    assert at_import["threads"] == ["MainThread"]
    assert at_import["started"] == []
    assert at_import["heavy"] == []
    assert at_import["reads"] == []
    assert at_import["wavespeed_handlers"] == 0 and at_import["root_handlers"] == 0
    assert at_import["public"] is True


def test_public_names_do_not_pull_heavy_modules() -> None:
    after = probe({})["access"]
    assert after["threads"] == ["MainThread"]
    assert after["started"] == []
    assert after["heavy"] == []
    assert after["reads"] == []


def test_import_ignores_bad_settings() -> None:
    # Bad values are errors at start(), never at import.
    result = probe(
        {
            "RUNPOD_LOG_LEVEL": "LOUD",
            "RUNPOD_PING_INTERVAL": "often",
            "WAVERLESS_WEBHOOK_GET_JOB": "http://127.0.0.1:9/job-take/$ID",
            "WAVESPEED_HEALTH_PORT": "eighty",
        }
    )
    assert result["import"]["threads"] == ["MainThread"]
    assert result["import"]["reads"] == []


def test_import_wavespeed_alone_is_inert() -> None:
    code = (
        "import sys, threading, wavespeed; "
        "assert threading.active_count() == 1; "
        "assert 'wavespeed.serverless' not in sys.modules; "
        "assert 'requests' not in sys.modules; "
        "print(wavespeed.__version__)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
