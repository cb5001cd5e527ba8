"""An on-disk spool for results the platform could not take in time.

Each entry is one JSON file (mode 0600, in a 0700 folder) holding the job id,
the isStream flag and the exact body text. Nothing in it is ever executed or
unpickled. Entries are re-sent by the worker while it runs and on the next
start, then removed.
"""

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import List, Optional

from .logs import logger

log = logger("spool")


@dataclass(frozen=True)
class SpoolEntry:
    path: str
    job_id: str
    payload: bytes
    is_stream: bool


class Spool:
    """A folder of undelivered results. Safe to use from several threads."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def save(self, job_id: str, payload: bytes, is_stream: bool) -> Optional[str]:
        """Write one result; returns its path, or None when the disk refused."""
        record = {"job_id": job_id, "is_stream": is_stream, "body": payload.decode("utf-8")}
        digest = hashlib.sha1(job_id.encode("utf-8")).hexdigest()[:16]
        name = f"{time.time_ns():020d}-{digest}.json"
        path = os.path.join(self.directory, name)
        tmp = f"{path}.tmp"
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(record, handle, ensure_ascii=False)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            log.error("could not spool the result of job %s to %s: %s", job_id, self.directory, exc)
            return None
        return path

    def entries(self) -> List[SpoolEntry]:
        """The spooled results, oldest first. Unreadable files are set aside."""
        try:
            names = sorted(n for n in os.listdir(self.directory) if n.endswith(".json"))
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.warning("cannot read the spool folder %s: %s", self.directory, exc)
            return []
        found = []
        for name in names:
            path = os.path.join(self.directory, name)
            try:
                with open(path, encoding="utf-8") as handle:
                    record = json.load(handle)
                found.append(
                    SpoolEntry(
                        path=path,
                        job_id=str(record["job_id"]),
                        payload=str(record["body"]).encode("utf-8"),
                        is_stream=bool(record.get("is_stream", False)),
                    )
                )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("spool file %s is unreadable (%s); renamed to .bad", path, exc)
                try:
                    os.replace(path, f"{path}.bad")
                except OSError:
                    pass
        return found

    def remove(self, entry: SpoolEntry) -> None:
        try:
            os.remove(entry.path)
        except FileNotFoundError:
            pass
