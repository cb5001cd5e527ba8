"""Run a worker written for runpod-python on wavespeed, unmodified.

    python -m wavespeed.run handler.py [handler args...]
    python -m wavespeed.run -m my_package.handler [args...]

For this process only, ``import runpod`` resolves to wavespeed's
compatibility layer (``wavespeed/compat/runpod``): its folder is put on
``sys.path`` right after the script's own folder, then the script runs as
``__main__`` the way ``python handler.py`` would run it (same ``sys.argv``,
same ``sys.path[0]``). Nothing is installed and other processes are not
affected.

If a real runpod-python is installed too, the layer still wins by default
and a line on stderr says so; ``--runpod=installed`` (or
``WAVESPEED_RUNPOD=installed``) runs the script on the installed runpod
instead. ``--runpod=layer`` / ``WAVESPEED_RUNPOD=layer`` is the default.
"""

import importlib.machinery
import os
import runpy
import sys
from collections.abc import Mapping, Sequence
from typing import Optional, TextIO

__all__ = ["main", "activate_layer", "find_installed_runpod", "CHOICE_ENV"]

CHOICE_ENV = "WAVESPEED_RUNPOD"
CHOICES = ("layer", "installed")

USAGE = f"""\
usage: python -m wavespeed.run [--runpod={{layer,installed}}] handler.py [args...]
       python -m wavespeed.run [--runpod={{layer,installed}}] -m module [args...]

Run a runpod-python worker on wavespeed without changing it: inside this
process `import runpod` gives wavespeed's compatibility layer, then the
script runs as __main__ with the remaining arguments (--rp_serve_api,
--test_input, --rp_debugger, your own flags, ...).

options (before the script):
  -h, --help           show this help and exit
  --runpod=layer       use wavespeed's layer even if runpod-python is installed (default)
  --runpod=installed   use the installed runpod-python instead
  -m MODULE            run a module (like python -m) instead of a file

environment:
  {CHOICE_ENV}=layer|installed   the same choice as --runpod
"""


def find_installed_runpod(path: Optional[Sequence[str]] = None) -> Optional[str]:
    """Where a real runpod-python is installed (its package folder), or None.

    The layer's own folder is skipped.
    """
    from .compat import layer_path

    layer = os.path.realpath(layer_path())
    search = [
        p for p in (sys.path if path is None else path) if os.path.realpath(p or ".") != layer
    ]
    spec = importlib.machinery.PathFinder.find_spec("runpod", search)
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return str(list(spec.submodule_search_locations)[0])
    return spec.origin


def activate_layer(script_dir: Optional[str] = None) -> str:
    """Make ``import runpod`` find the layer in this process; returns the layer's folder.

    The folder goes right after ``script_dir`` (the script's own folder,
    which Python puts first), or first when there is none.
    """
    from .compat import layer_path

    layer = layer_path()
    while layer in sys.path:
        sys.path.remove(layer)
    index = 1 if script_dir is not None and sys.path and sys.path[0] == script_dir else 0
    sys.path.insert(index, layer)
    # A runpod imported before this point would shadow the layer.
    for name in [n for n in sys.modules if n == "runpod" or n.startswith("runpod.")]:
        del sys.modules[name]
    return layer


def _parse(argv: list[str], environ: Mapping[str, str]) -> tuple[str, str, str, list[str]]:
    """Split our options from the target: returns (choice, kind, target, rest)."""
    choice = (environ.get(CHOICE_ENV) or "layer").strip().lower()
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg in ("-h", "--help"):
            raise _Exit(0, USAGE)
        if arg.startswith("--runpod="):
            choice = arg.split("=", 1)[1].strip().lower()
        elif arg == "--runpod":
            if index + 1 >= len(argv):
                raise _Exit(2, "wavespeed.run: --runpod needs a value (layer or installed)")
            index += 1
            choice = argv[index].strip().lower()
        elif arg == "-m":
            if index + 1 >= len(argv):
                raise _Exit(2, "wavespeed.run: -m needs a module name")
            return choice, "module", argv[index + 1], argv[index + 2 :]
        elif arg == "--":
            if index + 1 >= len(argv):
                break
            return choice, "path", argv[index + 1], argv[index + 2 :]
        elif arg.startswith("-"):
            raise _Exit(2, f"wavespeed.run: unknown option {arg!r} before the script\n\n{USAGE}")
        else:
            return choice, "path", arg, argv[index + 1 :]
        index += 1
    raise _Exit(2, f"wavespeed.run: no script given\n\n{USAGE}")


class _Exit(Exception):
    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


def main(argv: Optional[Sequence[str]] = None, stderr: Optional[TextIO] = None) -> int:
    """Entry point of ``python -m wavespeed.run``; returns only on a usage error."""
    err = stderr or sys.stderr
    try:
        choice, kind, target, rest = _parse(
            list(sys.argv[1:] if argv is None else argv), os.environ
        )
    except _Exit as stop:
        print(stop.message, file=sys.stdout if stop.code == 0 else err)
        return stop.code
    if choice not in CHOICES:
        print(
            f"wavespeed.run: --runpod / {CHOICE_ENV} must be 'layer' or 'installed',"
            f" not {choice!r}",
            file=err,
        )
        return 2

    if kind == "path":
        if not os.path.exists(target):
            print(f"wavespeed.run: {target}: no such file", file=err)
            return 2
        script_dir: Optional[str] = os.path.dirname(os.path.abspath(target))
        # What `python handler.py` does: the script's folder is sys.path[0].
        if sys.path and sys.path[0] in ("", os.getcwd()):
            sys.path[0] = script_dir  # type: ignore[assignment]
        else:
            sys.path.insert(0, script_dir)  # type: ignore[arg-type]
    else:
        script_dir = None
        if not sys.path or sys.path[0] not in ("", os.getcwd()):
            sys.path.insert(0, os.getcwd())  # `python -m` puts the cwd first

    installed = find_installed_runpod()
    if choice == "installed":
        if installed is None:
            print(
                "wavespeed.run: --runpod=installed, but runpod-python is not installed "
                "(pip install runpod, or drop the option to use wavespeed's layer)",
                file=err,
            )
            return 2
        print(f"wavespeed.run: using the installed runpod-python at {installed}", file=err)
    else:
        layer = activate_layer(script_dir)
        if installed is not None:
            print(
                f"wavespeed.run: runpod-python is installed at {installed}, but this process "
                f"uses wavespeed's compatibility layer ({os.path.join(layer, 'runpod')}); "
                f"pass --runpod=installed or set {CHOICE_ENV}=installed to use the installed one",
                file=err,
            )
    err.flush()

    if kind == "module":
        sys.argv = [target] + rest
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        sys.argv = [target] + rest
        runpy.run_path(target, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
