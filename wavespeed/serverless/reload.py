"""``--rp_api_reload``: restart the local API when the handler's code changes.

hupper (the Pylons reloader that pairs with waitress) keeps this process as
a monitor and runs the handler's script again in a child process, which
serves the API. When a ``.py`` file under the handler's folder changes, the
monitor stops the child (SIGTERM, which the local API takes like Ctrl-C) and
starts a new one. A child that cannot start, say a syntax error in the file
just saved, prints the error and exits; the monitor stays and starts the
next child on the next change. Ctrl-C or SIGTERM stops both.

hupper is the optional extra ``wavespeed[dev]``. It is imported here only,
and this module only when the flag is used.
"""

import os
import runpy
import sys
import traceback
from types import TracebackType
from typing import Any, Callable, Optional

from .config import Config
from .errors import ConfigError
from .logs import logger

log = logger("api")

FLAG = "--rp_api_reload/--waverless_api_reload"
INSTALL = "pip install 'wavespeed[dev]'"
RELOAD_INTERVAL = 1.0  # seconds between scans of the watched files
SHUTDOWN_GRACE = 2.0  # seconds a child has to stop before it is killed
MAX_WATCHED = 5000  # more .py files than this under one folder is not a handler's code
# Folders never scanned: virtualenvs and caches hold thousands of .py files
# nobody edits while developing a handler.
SKIPPED_DIRS = frozenset({"__pycache__", "node_modules", "site-packages", "dist-packages"})


def _import_hupper() -> Any:
    try:
        import hupper
    except ImportError:
        raise ConfigError(f"needs hupper, which is not installed: {INSTALL}", FLAG) from None
    return hupper


def serve_with_reload(config: Config) -> None:
    """Serve the local API under the reloader; called by ``start()`` for the flag.

    In the monitor this never returns (it exits with the last child's exit
    code); in a child it serves until the monitor stops it.
    """
    hupper = _import_hupper()
    if hupper.is_active():  # this process is a child the monitor started
        from .devserver import serve

        serve(config)
        return
    kind, target = main_target()
    folder = handler_folder(config.handler)
    log.info("reload: the local API restarts when a .py file under %s changes", folder)
    hupper.start_reloader(
        f"{__name__}.run_child",
        reload_interval=RELOAD_INTERVAL,
        shutdown_interval=SHUTDOWN_GRACE,
        worker_kwargs={"kind": kind, "target": target, "folder": folder},
    )


def main_target() -> tuple[str, str]:
    """How this process was started: ("module", name) for ``-m``, else ("path", file)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return "module", str(spec.name)
    path = getattr(main, "__file__", None)
    if path:
        return "path", os.path.abspath(path)
    raise ConfigError(
        "needs the handler started from a file (python handler.py) or a module (python -m ...)",
        FLAG,
    )


def handler_folder(handler: Callable[..., Any]) -> str:
    """The folder of the file that defines the handler (else of the script, else cwd)."""
    import inspect

    for source in (handler, type(handler)):
        try:
            path = inspect.getsourcefile(source)
        except TypeError:  # a builtin, or a class defined in C
            path = None
        if path and os.path.isfile(path):
            return os.path.dirname(os.path.abspath(path))
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file:
        return os.path.dirname(os.path.abspath(str(main_file)))
    return os.getcwd()


def python_files(folder: str, limit: int = MAX_WATCHED) -> list[str]:
    """The .py files under ``folder``, skipping hidden folders, caches and virtualenvs."""
    found: list[str] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".")
            and d not in SKIPPED_DIRS
            and not os.path.exists(os.path.join(root, d, "pyvenv.cfg"))
        )
        found.extend(os.path.join(root, f) for f in sorted(files) if f.endswith(".py"))
        if len(found) >= limit:
            log.warning(
                "more than %d .py files under %s; watching the first %d", limit, folder, limit
            )
            return found[:limit]
    return found


def run_child(kind: str, target: str, folder: str) -> None:
    """The child's entry point (named to hupper by its dotted path): run the script again.

    The script calls ``start()``, which finds itself in a child and serves.
    """
    import hupper

    # Watch first: a file that fails to load must still be watched for its fix.
    hupper.get_reloader().watch_files(python_files(folder))
    try:
        if kind == "module":
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(target, run_name="__main__")
    except Exception as exc:  # noqa: BLE001 - any error loading user code is reported, then we wait
        _report(exc, target, folder)
        sys.exit(1)  # the monitor waits for the next change, then starts a child again


def _report(exc: BaseException, target: str, folder: str) -> None:
    # Drop the frames of runpy and of this module: the user's own code is what to read.
    ours = {os.path.abspath(__file__), os.path.abspath(runpy.__file__), "<frozen runpy>"}
    tb: Optional[TracebackType] = exc.__traceback__
    while tb is not None and _where(tb) in ours:
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb, file=sys.stderr)
    print(
        f"wavespeed: {target} failed to start ({type(exc).__name__}); the local API "
        f"restarts when a .py file under {folder} changes",
        file=sys.stderr,
        flush=True,
    )


def _where(tb: TracebackType) -> str:
    name = tb.tb_frame.f_code.co_filename
    return name if name.startswith("<") else os.path.abspath(name)
