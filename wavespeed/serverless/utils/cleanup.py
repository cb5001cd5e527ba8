"""Remove what a job left on disk: runpod's ``clean`` folders, plus your own."""

import os
import shutil
from collections.abc import Iterable
from typing import Optional

from ..logs import logger

__all__ = ["clean", "DEFAULT_FOLDERS"]

log = logger("utils.cleanup")

#: What the download and upload helpers write under the working directory.
DEFAULT_FOLDERS = ("input_objects", "output_objects", "job_files")
_DEFAULT_FILES = ("output.zip",)


def _refused(path: str) -> bool:
    """A folder no job cleanup should ever delete: /, the home folder, the cwd or above it."""
    real = os.path.realpath(path)
    cwd = os.path.realpath(os.getcwd())
    if real in (os.path.realpath(os.sep), os.path.realpath(os.path.expanduser("~"))):
        return True
    return cwd == real or cwd.startswith(real.rstrip(os.sep) + os.sep)


def clean(folder_list: Optional[Iterable[str]] = None) -> list[str]:
    """Delete the default job folders and ``output.zip`` under the working
    directory, then each folder in ``folder_list``.

    Missing paths are skipped. ``/``, the home folder, the working directory
    and its parents are never deleted (logged instead). Returns the paths
    removed.
    """
    removed: list[str] = []
    folders = list(DEFAULT_FOLDERS) + [str(f) for f in (folder_list or ()) if f]
    for folder in folders:
        if not os.path.lexists(folder):
            continue
        if _refused(folder):
            log.warning("clean(): refusing to delete %s", os.path.abspath(folder))
            continue
        if os.path.isdir(folder) and not os.path.islink(folder):
            shutil.rmtree(folder, ignore_errors=True)
        else:
            try:
                os.remove(folder)
            except OSError:
                continue
        removed.append(folder)
    for name in _DEFAULT_FILES:
        try:
            os.remove(name)
            removed.append(name)
        except OSError:
            pass
    return removed
