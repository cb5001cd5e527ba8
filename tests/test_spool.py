"""Unit tests of spool.py: the on-disk store of undelivered results."""

import json
import os
import pickle
import stat
from pathlib import Path
from typing import List

import pytest

from wavespeed.serverless.job import encode
from wavespeed.serverless.spool import Spool, SpoolEntry

pytestmark = pytest.mark.timeout(60)


def entries(spool: Spool) -> List[SpoolEntry]:
    """Every readable entry, oldest first (claimed one at a time and released)."""
    found = []
    for claim in spool.entries():
        found.append(claim.entry)
        claim.release()
    return found


def remove(spool: Spool, entry: SpoolEntry) -> None:
    claim = spool.claim(entry.path)
    if claim is not None:
        claim.remove()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "spool"  # not created yet: save() makes it


def test_round_trip(folder: Path) -> None:
    spool = Spool(str(folder))
    first = encode({"output": {"text": "héllo 世界"}})
    second = encode({"output": []})
    assert spool.save("job-1", first, False)
    assert spool.save("job-2", second, True)
    found = entries(spool)
    assert [(e.job_id, e.payload, e.is_stream) for e in found] == [
        ("job-1", first, False),
        ("job-2", second, True),
    ]
    remove(spool, found[0])
    assert [e.job_id for e in entries(spool)] == ["job-2"]
    remove(spool, found[1])
    assert entries(spool) == []
    assert os.listdir(folder) == []


def test_oldest_first(folder: Path) -> None:
    spool = Spool(str(folder))
    for i in range(5):
        spool.save(f"job-{i}", b"{}", False)
    assert [e.job_id for e in entries(spool)] == [f"job-{i}" for i in range(5)]


def test_same_job_id_twice_keeps_both(folder: Path) -> None:
    spool = Spool(str(folder))
    spool.save("job-1", b'{"output":1}', False)
    spool.save("job-1", b'{"output":2}', False)
    assert [e.payload for e in entries(spool)] == [b'{"output":1}', b'{"output":2}']


def test_remove_twice_is_harmless(folder: Path) -> None:
    spool = Spool(str(folder))
    spool.save("job-1", b"{}", False)
    entry = entries(spool)[0]
    remove(spool, entry)
    remove(spool, entry)
    assert entries(spool) == []


def test_file_and_folder_modes(folder: Path) -> None:
    path = Spool(str(folder)).save("job-1", b"{}", False)
    assert path is not None
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700


def test_files_are_plain_json(folder: Path) -> None:
    payload = encode({"output": "ü"})
    path = Spool(str(folder)).save("job/1", payload, True)
    assert path is not None and path.endswith(".json")
    assert os.path.dirname(path) == str(folder)  # the job id does not make a path
    with open(path, encoding="utf-8") as handle:
        record = json.load(handle)
    assert record == {"job_id": "job/1", "is_stream": True, "body": payload.decode("utf-8")}
    assert not [n for n in os.listdir(folder) if n.endswith(".tmp")]


def test_missing_folder_has_no_entries(tmp_path: Path) -> None:
    assert entries(Spool(str(tmp_path / "never-made"))) == []


def test_only_json_files_are_read(folder: Path) -> None:
    spool = Spool(str(folder))
    spool.save("good", b"{}", False)
    (folder / "note.txt").write_text("not a result")
    (folder / "half.json.tmp").write_text('{"job_id": "tmp"}')
    (folder / "old.json.bad").write_text("junk")
    assert [e.job_id for e in entries(spool)] == ["good"]
    # files that are not entries are left alone
    assert {"note.txt", "half.json.tmp", "old.json.bad"} <= set(os.listdir(folder))


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"body": "{}"}',  # no job_id
        b'["job", "body"]',
        pickle.dumps({"job_id": "x", "body": "{}"}),  # never unpickled
        b"\xff\xfe\x00",
    ],
    ids=["broken", "no-job-id", "list", "pickle", "binary"],
)
def test_unreadable_file_is_set_aside(folder: Path, content: bytes) -> None:
    spool = Spool(str(folder))
    spool.save("good-1", b'{"output":1}', False)
    bad = folder / "00000000000000000001-bad.json"
    bad.write_bytes(content)
    spool.save("good-2", b'{"output":2}', False)
    assert [e.job_id for e in entries(spool)] == ["good-1", "good-2"]
    assert not bad.exists()
    assert (folder / "00000000000000000001-bad.json.bad").read_bytes() == content
    # set aside once: the next scan does not see it again
    assert [e.job_id for e in entries(spool)] == ["good-1", "good-2"]


def test_save_failure_returns_none(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    assert Spool(str(blocker / "spool")).save("job-1", b"{}", False) is None
