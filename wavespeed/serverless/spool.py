"""An on-disk spool for results the platform could not take in time.

Each entry is one JSON file (mode 0600, in a 0700 folder) holding the job
id, the isStream flag and the exact body text. Nothing in it is ever
executed or unpickled; symlinks are never followed.

- Writes go to a ``.tmp`` file that is fsynced and renamed into place; a
  failed write leaves no ``.tmp`` behind, and ``.tmp`` files older than a
  minute (a crash mid-write) are removed at start.
- Entries are read one at a time (``claim``), never all at once.
- Several workers may share a folder: an entry is claimed with an
  exclusive ``flock`` before it is sent, and the lock dies with its
  process, so a crashed worker never strands an entry. An entry removed by
  another worker while we waited is skipped.
- Each entry has its own backoff (``Resender``): one entry that keeps
  failing never holds up the others.
"""

import fcntl
import hashlib
import json
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable, Optional

from .logs import logger

log = logger("spool")

STALE_TMP_SECONDS = 60.0


@dataclass(frozen=True)
class SpoolEntry:
    path: str
    job_id: str
    payload: bytes
    is_stream: bool


class Claim:
    """An entry this process holds the lock of; ``release()`` or ``remove()`` it."""

    def __init__(self, entry: SpoolEntry, fd: int) -> None:
        self.entry = entry
        self._fd: Optional[int] = fd

    def remove(self) -> None:
        """The entry is done: delete it, then drop the lock."""
        try:
            os.remove(self.entry.path)
        except FileNotFoundError:
            pass
        self.release()

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing drops the flock


class Spool:
    """A folder of undelivered results. Safe to use from several threads and processes."""

    def __init__(self, directory: str) -> None:
        self.directory = os.path.abspath(directory)

    def prepare(self, now: Optional[float] = None) -> None:
        """At start: make the folder private and clear what a crash left half-written."""
        now = time.time() if now is None else now
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            info = os.lstat(self.directory)
            if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) != 0o700:
                os.chmod(self.directory, 0o700)
        except OSError as exc:
            log.warning("cannot prepare the spool folder %s: %s", self.directory, exc)
            return
        for name in self._names(".tmp"):
            path = os.path.join(self.directory, name)
            try:
                if now - os.lstat(path).st_mtime > STALE_TMP_SECONDS:
                    os.remove(path)
            except OSError:
                pass

    def save(self, job_id: str, payload: bytes, is_stream: bool) -> Optional[str]:
        """Write one result; returns its path, or None when the disk refused."""
        record = {"job_id": job_id, "is_stream": is_stream, "body": payload.decode("utf-8")}
        digest = hashlib.sha1(job_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        name = f"{time.time_ns():020d}-{digest}-{os.getpid()}.json"
        path = os.path.join(self.directory, name)
        tmp = f"{path}.tmp"
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                # A job id may hold a lone surrogate (JSON allows "\ud800"), which
                # UTF-8 cannot encode; backslashreplace writes it as that very
                # JSON escape, so it reads back as the same id.
                with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as handle:
                    json.dump(record, handle, ensure_ascii=False)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, path)
            except BaseException:
                _unlink(tmp)
                raise
        except (OSError, ValueError) as exc:  # ValueError: never raise into the delivery path
            log.error("could not spool the result of job %s to %s: %s", job_id, self.directory, exc)
            return None
        return path

    def _names(self, suffix: str = ".json") -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.directory) if n.endswith(suffix))
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.warning("cannot read the spool folder %s: %s", self.directory, exc)
            return []

    def paths(self) -> list[str]:
        """The entries' paths, oldest first (nothing is read)."""
        return [os.path.join(self.directory, n) for n in self._names()]

    def __len__(self) -> int:
        return len(self._names())

    def claim(self, path: str) -> Optional[Claim]:
        """Lock and read one entry; None when it is gone, taken, a symlink or unreadable."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:  # ELOOP: a symlink; never followed
            log.warning("spool entry %s ignored: %s", path, exc)
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return None  # another worker is sending it
            info = os.fstat(fd)
            if info.st_nlink == 0 or not stat.S_ISREG(info.st_mode):
                os.close(fd)  # removed by the worker that held it before us
                return None
            with os.fdopen(os.dup(fd), "rb") as handle:
                record = json.loads(handle.read().decode("utf-8"))
            entry = SpoolEntry(
                path=path,
                job_id=str(record["job_id"]),
                payload=str(record["body"]).encode("utf-8"),
                is_stream=bool(record.get("is_stream", False)),
            )
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
            log.error("spool file %s is unreadable (%s); renamed to .bad", path, exc)
            try:
                os.replace(path, f"{path}.bad")
            except OSError:
                pass
            os.close(fd)
            return None
        return Claim(entry, fd)

    def entries(self) -> Iterator[Claim]:
        """Claim entries one by one, oldest first (the caller removes or releases each)."""
        for path in self.paths():
            claim = self.claim(path)
            if claim is not None:
                yield claim


def _unlink(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


# What sending one spooled result came to: (delivered or finally refused, detail).
SendFn = Callable[[SpoolEntry], tuple[bool, str]]


class Resender:
    """Re-sends spooled results, each entry with its own backoff.

    ``turn()`` is a ``Role`` body: it tries every entry that is due, one at
    a time, and returns how long until the next one is due, or None when
    the spool is empty (the owner wakes it when it spools something).
    """

    def __init__(
        self,
        spool: Spool,
        send: SendFn,
        base: float = 1.0,
        cap: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spool = spool
        self._send = send
        self.base = base
        self.cap = cap
        self._clock = clock
        self._due: dict[str, tuple[float, int]] = {}  # path -> (next try, failures)
        self.sent = 0

    def turn(self) -> Optional[float]:
        paths = self.spool.paths()
        known = set(paths)
        for path in list(self._due):
            if path not in known:
                del self._due[path]
        if not paths:
            return None
        for path in paths:
            due, failures = self._due.get(path, (0.0, 0))
            if due > self._clock():
                continue
            claim = self.spool.claim(path)
            if claim is None:  # gone, or another worker is sending it: look again later
                self._due[path] = (self._clock() + 5.0, failures)
                continue
            try:
                done, detail = self._send(claim.entry)
            except Exception as exc:  # noqa: BLE001 - one bad entry must not stop the rest
                done, detail = False, f"{type(exc).__name__}: {exc}"
            if done:
                claim.remove()
                self._due.pop(path, None)
                self.sent += 1
            else:
                claim.release()
                failures += 1
                delay = min(self.cap, self.base * (2 ** min(failures - 1, 10)))
                self._due[path] = (self._clock() + delay, failures)
                log.debug(
                    "spooled result %s not sent (%s); next try in %.0f s", path, detail, delay
                )
        if not self._due:
            return 0.0 if self.spool.paths() else None
        return max(0.05, min(d for d, _ in self._due.values()) - self._clock())
