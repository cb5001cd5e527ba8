"""A warm cache of model folders on a network volume (runpod's ``VolumeCache``).

A cold worker spends most of its start downloading weights into a local
cache folder (``HF_HOME``, ``TORCH_HOME``, ...). With a network volume
mounted, ``VolumeCache`` keeps a mirror of those folders on the volume, so
the next cold worker copies them from the volume instead of the internet::

    from wavespeed.serverless.utils import VolumeCache

    with VolumeCache(dirs=[os.path.expanduser("~/.cache/huggingface")]):
        model = load_model()   # downloads only what the mirror did not have

Entering the block copies what the mirror has into the container
(``hydrate()``); leaving it copies what is new in the container onto the
volume (``sync()``, in a background thread by default; the process waits
for it at exit, at most 30 s).

The mirror lives at ``<volume_path>/.cache/<namespace>`` (default
``/runpod-volume`` and the endpoint id), in runpod 1.12's layout, so runpod
and wavespeed workers of one endpoint share it:

- files under 256 KiB are packed into one ``small.tar`` (one volume round
  trip instead of thousands of small ones), re-packed whole when any of them
  changed or went away;
- larger files are copied as they are under ``big/``, in parallel, only
  when their size differs or they are newer (2 s of mtime tolerance for
  coarse network file systems);
- ``manifest.json`` (format version 1), written last, lists what the mirror
  holds; a file whose copy failed is left out of it.

Nothing is written outside the configured folders: every path read from
the volume is checked to resolve inside them (and inside ``big/`` for
sources), links are skipped, and files are replaced atomically, so two
workers syncing at once never leave a half-written file. Lock files and
the ``refs/`` and ``.no_exist/`` entries of the Hugging Face cache are not
mirrored.

It is best-effort by default: a missing volume or namespace makes every
call a no-op, and any failure is logged and leaves a cold (but working)
worker. ``best_effort=False`` raises instead.

Over 400 lines on purpose: runpod's ``VolumeCache`` API (its on-volume
layout, locks and manifest) is reproduced as one unit, so that runpod and
wavespeed workers can share one mirror.
"""

import atexit
import json
import os
import shutil
import stat
import tarfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import (
    Any,
    Callable,
    Optional,
    TypeVar,
    Union,
)

from ..logs import ensure_handler, logger

__all__ = ["VolumeCache", "FORMAT_VERSION", "SMALL_FILE_THRESHOLD"]

log = logger("utils.volume_cache")

FORMAT_VERSION = 1
SMALL_FILE_THRESHOLD = 256 * 1024  # bytes; smaller files go into small.tar
MTIME_TOLERANCE = 2.0  # seconds
EXIT_WAIT_SECONDS = 30.0  # at most this long at exit for background syncs
MANIFEST = "manifest.json"
SMALL_ARCHIVE = "small.tar"
BIG_FOLDER = "big"
TEMP_SUFFIX = ".rpvc.tmp"  # runpod's suffix: workers of both SDKs skip each other's leftovers
_SKIPPED_PARTS = (os.sep + "refs" + os.sep, os.sep + ".no_exist" + os.sep)

PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
Meta = dict[str, Any]  # {"path": absolute path in the container, "size": int, "mtime": float}
T = TypeVar("T")


def _text(path: Any) -> str:
    return os.fsdecode(os.fspath(path))


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _temp_name(path: str) -> str:
    return f"{path}.{os.getpid()}.{threading.get_ident()}{TEMP_SUFFIX}"


def _inside(base: str, path: str) -> bool:
    """True when ``path`` resolves (links followed) to ``base`` or below it."""
    base = os.path.realpath(base)
    target = os.path.realpath(path)
    return target == base or target.startswith(base.rstrip(os.sep) + os.sep)


def _container_path(recorded: str) -> str:
    """A path recorded on the volume, as an absolute path in this container."""
    return os.path.join(os.sep, os.path.relpath(os.path.join(os.sep, recorded), os.sep))


class VolumeCache:
    """Keep local folders warm across workers through a network volume.

    ``dirs``: the folders to cache (one path, or several). ``namespace``: the
    mirror's name on the volume, one safe path component (default: the
    endpoint id). ``volume_path``: where the volume is mounted.
    ``best_effort``: log failures instead of raising. ``max_workers``: how
    many large files are copied at once.
    """

    def __init__(
        self,
        dirs: Union[PathLike, Iterable[PathLike]],
        *,
        namespace: Optional[str] = None,
        volume_path: PathLike = "/runpod-volume",
        best_effort: bool = True,
        max_workers: Optional[int] = None,
    ) -> None:
        if isinstance(dirs, (str, bytes, os.PathLike)):
            dirs = [dirs]  # one folder, not its characters
        self.dirs: list[str] = [os.path.realpath(_text(d)) for d in dirs]
        name = (
            namespace
            or os.environ.get("RUNPOD_ENDPOINT_ID")
            or os.environ.get("WAVERLESS_ENDPOINT_ID")
            or ""
        )
        if name and (
            os.path.isabs(name)
            or "/" in name
            or "\\" in name
            or os.sep in name
            or name in (".", "..")
        ):
            raise ValueError(f"namespace must be a single safe path component, got {name!r}")
        self.namespace = name
        self.volume_path = _text(volume_path)
        if max_workers is not None and max_workers < 1:
            raise ValueError(f"max_workers must be a positive integer, got {max_workers!r}")
        self.max_workers = max_workers or min(32, (os.cpu_count() or 4) * 4)
        self.best_effort = best_effort
        self._sync_lock = threading.Lock()  # one sync at a time per cache
        self._threads_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._exit_hook = False
        ensure_handler()  # a cache is usually opened at import time, before start() sets up logging

    # -- where things are --

    @property
    def mirror(self) -> str:
        return os.path.join(self.volume_path, ".cache", self.namespace)

    @property
    def available(self) -> bool:
        """True when a namespace is set and the volume is mounted (a folder)."""
        return bool(self.namespace) and os.path.isdir(self.volume_path)

    def _manifest_path(self) -> str:
        return os.path.join(self.mirror, MANIFEST)

    def _archive_path(self) -> str:
        return os.path.join(self.mirror, SMALL_ARCHIVE)

    def _big_root(self) -> str:
        return os.path.join(self.mirror, BIG_FOLDER)

    def _in_dirs(self, path: str) -> bool:
        return any(_inside(d, path) for d in self.dirs)

    # -- public operations --

    def hydrate(self) -> int:
        """Copy what the mirror has and the container lacks (or has older). Returns the count."""
        if not self.available:
            return 0
        return self._guarded("hydrate", self._hydrate, 0)

    def sync(self, *, background: bool = True) -> None:
        """Copy what the container has and the mirror lacks (or has older).

        In the background by default: returns at once, and the process waits
        for the copy at exit (at most 30 s). ``wait()`` waits sooner.
        """
        if not self.available:
            return
        if not background:
            self._guarded("sync", self._sync, 0)
            return
        thread = threading.Thread(
            target=self._guarded,
            args=("sync", self._sync, 0),
            name="wavespeed-volume-sync",
            daemon=True,
        )
        with self._threads_lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
            if not self._exit_hook:
                # Registered on first use, not at import. A daemon thread so
                # a stalled volume cannot hold the process past the bound.
                atexit.register(self._wait_at_exit)
                self._exit_hook = True
        thread.start()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait for background syncs; True when none is still running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._threads_lock:
            threads = list(self._threads)
        for thread in threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        with self._threads_lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            return not self._threads

    def __enter__(self) -> "VolumeCache":
        self.hydrate()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.sync(background=True)

    # -- internals --

    def _wait_at_exit(self) -> None:
        try:
            if not self.wait(EXIT_WAIT_SECONDS):
                log.warning(
                    "VolumeCache: the background sync to %s did not finish within %.0f s at exit; "
                    "the mirror may be incomplete",
                    self.mirror,
                    EXIT_WAIT_SECONDS,
                )
        except Exception:  # noqa: BLE001 - nothing at exit may block or raise
            pass

    def _guarded(self, what: str, operation: Callable[[], T], default: T) -> T:
        try:
            return operation()
        except Exception as exc:  # noqa: BLE001 - best effort: a cold worker still works
            if not self.best_effort:
                raise
            log.warning("VolumeCache: %s failed: %s", what, exc)
            return default

    def _read_manifest(self) -> Optional[dict[str, Any]]:
        try:
            with open(self._manifest_path(), encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            return None  # absent, damaged or from a future format: start over
        return data

    @staticmethod
    def _entries(manifest: Optional[dict[str, Any]], key: str) -> list[Meta]:
        if not manifest:
            return []
        entries = manifest.get(key)
        if not isinstance(entries, list):
            return []
        return [
            e
            for e in entries
            if isinstance(e, dict)
            and isinstance(e.get("path"), str)
            and isinstance(e.get("size"), int)
            and isinstance(e.get("mtime"), (int, float))
        ]

    def _write_manifest(self, small: list[Meta], big: list[Meta]) -> None:
        os.makedirs(self.mirror, exist_ok=True)
        target = self._manifest_path()
        temp = _temp_name(target)
        data = {
            "version": FORMAT_VERSION,
            "threshold": SMALL_FILE_THRESHOLD,
            "small": small,
            "big": big,
        }
        try:
            with open(temp, "w", encoding="utf-8") as handle:
                json.dump(data, handle)
            os.replace(temp, target)
        except BaseException:
            _remove(temp)
            raise

    def _local_files(self) -> Iterator[str]:
        for root in self.dirs:
            if not os.path.isdir(root):
                continue
            for folder, _subdirs, names in os.walk(root):
                for name in names:
                    if name.endswith(".lock") or name.endswith(TEMP_SUFFIX):
                        continue
                    path = os.path.join(folder, name)
                    if any(part in path for part in _SKIPPED_PARTS):
                        continue
                    if os.path.islink(path):
                        continue
                    yield path

    @staticmethod
    def _meta(path: str) -> Optional[Meta]:
        try:
            info = os.stat(path)
        except OSError:
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        return {"path": path, "size": info.st_size, "mtime": info.st_mtime}

    @staticmethod
    def _stale(source: str, destination: str) -> bool:
        """Does ``destination`` need a fresh copy of ``source``?"""
        try:
            src = os.stat(source)
        except OSError:
            return False
        try:
            dst = os.stat(destination)
        except OSError:
            return True
        return src.st_size != dst.st_size or src.st_mtime > dst.st_mtime + MTIME_TOLERANCE

    @staticmethod
    def _copy(source: str, destination: str) -> bool:
        temp = _temp_name(destination)
        try:
            os.makedirs(os.path.dirname(destination), exist_ok=True)
            shutil.copy2(source, temp)  # keeps the mtime, so the next comparison agrees
            os.replace(temp, destination)
            return True
        except OSError as exc:
            log.debug("VolumeCache: could not copy %s to %s: %s", source, destination, exc)
            _remove(temp)
            return False

    def _copy_all(self, pairs: Sequence[tuple[str, str]]) -> tuple[set[str], set[str]]:
        """Copy each stale (source, destination).

        Returns (sources copied, sources already current).
        """
        todo = [(s, d) for s, d in pairs if self._stale(s, d)]
        current = {s for s, _ in pairs} - {s for s, _ in todo}
        if not todo:
            return set(), current
        with ThreadPoolExecutor(
            max_workers=min(self.max_workers, len(todo)), thread_name_prefix="wavespeed-vc"
        ) as pool:
            done = list(pool.map(lambda pair: self._copy(*pair), todo))
        return {s for (s, _), ok in zip(todo, done) if ok}, current

    # hydrate: volume -> container

    def _hydrate(self) -> int:
        manifest = self._read_manifest()
        if manifest is None:
            return 0
        restored = 0
        if self._entries(manifest, "small"):
            restored += self._unpack_small()
        big_root = self._big_root()
        pairs: list[tuple[str, str]] = []
        for entry in self._entries(manifest, "big"):
            destination = _container_path(entry["path"])
            source = os.path.join(big_root, os.path.relpath(destination, os.sep))
            # A crafted manifest must not write outside the folders or read outside big/.
            if self._in_dirs(destination) and _inside(big_root, source):
                pairs.append((source, destination))
        copied, _current = self._copy_all(pairs)
        restored += len(copied)
        if restored:
            log.info("VolumeCache: hydrated %d file(s) from %s", restored, self.mirror)
        return restored

    def _unpack_small(self) -> int:
        try:
            archive = tarfile.open(self._archive_path())
        except (OSError, tarfile.TarError):
            return 0
        count = 0
        with archive:
            try:
                members = archive.getmembers()
            except (OSError, tarfile.TarError) as exc:
                log.debug("VolumeCache: %s is damaged: %s", self._archive_path(), exc)
                return 0
            for member in members:
                if not member.isreg():
                    continue  # links, folders, devices: never
                destination = _container_path(member.name)
                if not self._in_dirs(destination):
                    continue
                if self._satisfied(destination, member.size, member.mtime):
                    continue
                try:
                    self._unpack_one(archive, member, destination)
                    count += 1
                except (OSError, tarfile.TarError) as exc:
                    log.debug("VolumeCache: could not restore %s: %s", destination, exc)
        return count

    @staticmethod
    def _satisfied(path: str, size: int, mtime: float) -> bool:
        try:
            info = os.stat(path)
        except OSError:
            return False
        return info.st_size == size and info.st_mtime >= mtime - MTIME_TOLERANCE

    @staticmethod
    def _unpack_one(archive: tarfile.TarFile, member: tarfile.TarInfo, destination: str) -> None:
        source = archive.extractfile(member)
        if source is None:
            return
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        temp = _temp_name(destination)
        try:
            with source, open(temp, "wb") as out:
                shutil.copyfileobj(source, out, 1024 * 1024)
            os.chmod(temp, (member.mode & 0o777) | 0o600)  # no set-id bits; readable by us
            os.utime(temp, (member.mtime, member.mtime))
            os.replace(temp, destination)
        except BaseException:
            _remove(temp)
            raise

    # sync: container -> volume

    def _sync(self) -> int:
        with self._sync_lock:
            return self._sync_locked()

    def _sync_locked(self) -> int:
        small: list[Meta] = []
        big_files: list[str] = []
        for path in self._local_files():
            meta = self._meta(path)
            if meta is None:
                continue
            if meta["size"] < SMALL_FILE_THRESHOLD:
                small.append(meta)
            else:
                big_files.append(path)

        manifest = self._read_manifest()
        packed = 0
        if small:
            before = {e["path"]: e for e in self._entries(manifest, "small")}
            changed = [
                m
                for m in small
                if m["path"] not in before
                or before[m["path"]]["size"] != m["size"]
                or m["mtime"] > before[m["path"]]["mtime"] + MTIME_TOLERANCE
            ]
            # A file deleted locally must leave the archive too, or the next
            # hydrate would bring it back.
            gone = bool(set(before) - {m["path"] for m in small})
            if changed or gone or not os.path.exists(self._archive_path()):
                in_archive = self._pack(m["path"] for m in small)
                if in_archive is not None:
                    small = [m for m in small if m["path"] in in_archive]
                    packed = len([m for m in changed if m["path"] in in_archive])
                else:
                    big_files.extend(m["path"] for m in small)  # copy them one by one instead
                    small = []
        if not small:
            _remove(self._archive_path())  # before the manifest, so both agree

        big_root = self._big_root()
        pairs = [
            (path, os.path.join(big_root, os.path.relpath(path, os.sep))) for path in big_files
        ]
        copied, current = self._copy_all(pairs)
        held = copied | current  # a failed copy is not claimed by the manifest
        big = [m for m in (self._meta(p) for p in big_files) if m is not None and m["path"] in held]
        self._write_manifest(small, big)
        total = packed + len(copied)
        if total:
            log.info("VolumeCache: synced %d file(s) to %s", total, self.mirror)
        return total

    def _pack(self, paths: Iterable[str]) -> Optional[set[str]]:
        """Pack ``paths`` into a new small.tar; the paths packed, or None when packing failed."""
        os.makedirs(self.mirror, exist_ok=True)
        target = self._archive_path()
        temp = _temp_name(target)
        packed: set[str] = set()
        try:
            with tarfile.open(temp, "w") as archive:
                for path in paths:
                    try:
                        archive.add(path, arcname=os.path.relpath(path, os.sep), recursive=False)
                    except FileNotFoundError:
                        continue  # deleted since it was listed: not in the mirror either
                    packed.add(path)
            os.replace(temp, target)
            return packed
        except (OSError, tarfile.TarError) as exc:
            log.debug("VolumeCache: could not pack the small files: %s", exc)
            _remove(temp)
            return None
