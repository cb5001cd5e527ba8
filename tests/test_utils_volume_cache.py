"""VolumeCache: a warm mirror of model folders on a network volume (runpod 1.12's API).

A temporary folder stands in for the mounted volume and another for the
container's cache folder; "a new container" is the cache folder emptied.
The on-volume layout (``.cache/<namespace>/manifest.json`` version 1,
``small.tar`` for files under 256 KiB, ``big/<path>`` for the rest) is
runpod's, so workers of both SDKs share one mirror.
"""

import json
import os
import tarfile
import time
from pathlib import Path
from typing import Dict, Tuple

import pytest

from wavespeed.serverless.utils import VolumeCache
from wavespeed.serverless.utils.volume_cache import SMALL_FILE_THRESHOLD

pytestmark = pytest.mark.timeout(60)

BIG = SMALL_FILE_THRESHOLD + 10


@pytest.fixture
def places(tmp_path: Path) -> Tuple[Path, Path]:
    volume = tmp_path / "volume"
    volume.mkdir()
    cache = tmp_path / "container" / "hf"
    cache.mkdir(parents=True)
    return volume, cache.resolve()


def write(path: Path, data: bytes, mtime: float = 1_700_000_000.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


def tree(root: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def mirror(volume: Path, namespace: str = "ep1") -> Path:
    return volume / ".cache" / namespace


@pytest.fixture
def model(places: Tuple[Path, Path]) -> Dict[str, bytes]:
    _, cache = places
    files = {
        "models--org--m/blobs/config.json": b'{"a": 1}',
        "models--org--m/snapshots/abc/tokenizer.txt": b"t" * 1000,
        "models--org--m/blobs/weights.bin": os.urandom(BIG),
    }
    for name, data in files.items():
        write(cache / name, data)
    return files


def test_unavailable_without_volume_or_namespace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNPOD_ENDPOINT_ID", raising=False)
    monkeypatch.delenv("WAVERLESS_ENDPOINT_ID", raising=False)
    (tmp_path / "hf").mkdir()
    write(tmp_path / "hf" / "x", b"x")
    no_namespace = VolumeCache(str(tmp_path / "hf"), volume_path=str(tmp_path))
    no_volume = VolumeCache([str(tmp_path / "hf")], namespace="ep", volume_path=str(tmp_path / "missing"))
    for cache in (no_namespace, no_volume):
        assert cache.available is False
        assert cache.hydrate() == 0
        cache.sync(background=False)
        with cache:
            pass
    assert not (tmp_path / ".cache").exists() and not (tmp_path / "missing").exists()


def test_namespace_defaults_to_the_endpoint_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNPOD_ENDPOINT_ID", "ep-7")
    cache = VolumeCache(str(tmp_path), volume_path=str(tmp_path))
    assert cache.available and cache.mirror == str(tmp_path / ".cache" / "ep-7")


@pytest.mark.parametrize("namespace", ["a/b", "..", ".", "/abs", "a\\b"])
def test_namespace_must_be_one_safe_component(tmp_path: Path, namespace: str) -> None:
    with pytest.raises(ValueError, match="single safe path component"):
        VolumeCache([str(tmp_path)], namespace=namespace, volume_path=str(tmp_path))


def test_max_workers_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_workers"):
        VolumeCache([str(tmp_path)], namespace="n", volume_path=str(tmp_path), max_workers=0)


def test_a_bare_path_is_one_folder(tmp_path: Path) -> None:
    assert VolumeCache(str(tmp_path), namespace="n").dirs == [str(tmp_path.resolve())]
    assert VolumeCache(os.fsencode(str(tmp_path)), namespace="n").dirs == [str(tmp_path.resolve())]
    assert VolumeCache(tmp_path, namespace="n").dirs == [str(tmp_path.resolve())]


def test_sync_writes_runpods_layout(places: Tuple[Path, Path], model: Dict[str, bytes]) -> None:
    volume, cache = places
    VolumeCache([str(cache)], namespace="ep1", volume_path=str(volume)).sync(background=False)
    root = mirror(volume)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["version"] == 1 and manifest["threshold"] == 256 * 1024
    assert sorted(e["path"] for e in manifest["small"]) == sorted(
        str(cache / n) for n in model if len(model[n]) < SMALL_FILE_THRESHOLD
    )
    (big,) = manifest["big"]
    assert big == {"path": str(cache / "models--org--m/blobs/weights.bin"), "size": BIG, "mtime": 1_700_000_000.0}
    copied = root / "big" / os.path.relpath(big["path"], os.sep)
    assert copied.read_bytes() == model["models--org--m/blobs/weights.bin"]
    with tarfile.open(root / "small.tar") as archive:
        names = sorted(archive.getnames())
    assert names == sorted(os.path.relpath(e["path"], os.sep) for e in manifest["small"])


def test_a_new_container_is_hydrated_from_the_mirror(places: Tuple[Path, Path], model: Dict[str, bytes]) -> None:
    volume, cache = places
    VolumeCache([str(cache)], namespace="ep1", volume_path=str(volume)).sync(background=False)
    before = tree(cache)
    for path in list(cache.rglob("*")):
        if path.is_file():
            path.unlink()
    fresh = VolumeCache([str(cache)], namespace="ep1", volume_path=str(volume))
    assert fresh.hydrate() == 3
    assert tree(cache) == before
    assert os.stat(cache / "models--org--m/blobs/weights.bin").st_mtime == 1_700_000_000.0
    assert fresh.hydrate() == 0  # everything current: nothing copied again


def test_sync_is_incremental(places: Tuple[Path, Path], model: Dict[str, bytes]) -> None:
    volume, cache = places
    vc = VolumeCache([str(cache)], namespace="ep1", volume_path=str(volume))
    vc.sync(background=False)
    root = mirror(volume)
    archive = root / "small.tar"
    big = root / "big" / os.path.relpath(str(cache / "models--org--m/blobs/weights.bin"), os.sep)
    stamps = (archive.stat().st_mtime_ns, big.stat().st_ino)
    vc.sync(background=False)
    assert (archive.stat().st_mtime_ns, big.stat().st_ino) == stamps  # nothing rewritten
    write(cache / "models--org--m/blobs/new.json", b"{}", mtime=time.time())
    vc.sync(background=False)
    assert big.stat().st_ino == stamps[1]  # the large file was not copied again
    with tarfile.open(archive) as packed:
        assert any(n.endswith("new.json") for n in packed.getnames())


def test_a_file_deleted_locally_is_not_brought_back(places: Tuple[Path, Path], model: Dict[str, bytes]) -> None:
    volume, cache = places
    vc = VolumeCache([str(cache)], namespace="ep1", volume_path=str(volume))
    vc.sync(background=False)
    (cache / "models--org--m/blobs/config.json").unlink()
    vc.sync(background=False)
    (cache / "models--org--m/snapshots/abc/tokenizer.txt").unlink()
    vc.hydrate()
    assert (cache / "models--org--m/snapshots/abc/tokenizer.txt").exists()
    assert not (cache / "models--org--m/blobs/config.json").exists()


def test_locks_refs_no_exist_and_links_are_not_mirrored(places: Tuple[Path, Path]) -> None:
    volume, cache = places
    write(cache / "kept.txt", b"k")
    write(cache / "blobs" / "x.lock", b"l")
    write(cache / "models--o--m" / "refs" / "main", b"abc")
    write(cache / "models--o--m" / ".no_exist" / "abc" / "f", b"")
    write(cache / "half.bin.1.2.rpvc.tmp", b"partial")
    os.symlink("/etc/hostname", cache / "link")
    VolumeCache([str(cache)], namespace="ep1", volume_path=str(volume)).sync(background=False)
    manifest = json.loads((mirror(volume) / "manifest.json").read_text())
    assert [e["path"] for e in manifest["small"]] == [str(cache / "kept.txt")]
    assert manifest["big"] == []


def test_a_crafted_mirror_cannot_write_outside_the_folders(places: Tuple[Path, Path], tmp_path: Path) -> None:
    volume, cache = places
    root = mirror(volume)
    (root / "big").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = write(tmp_path / "secret.txt", b"not for the container")
    with tarfile.open(root / "small.tar", "w") as archive:
        for name, data in (
            (os.path.relpath(str(outside / "evil.txt"), os.sep), b"evil"),
            (os.path.relpath(str(cache / "ok.txt"), os.sep), b"ok"),
            (os.path.relpath(str(cache), os.sep) + "/../../outside/dots.txt", b"dots"),
        ):
            src = write(tmp_path / "src.bin", data)
            archive.add(str(src), arcname=name)
        link = tarfile.TarInfo(os.path.relpath(str(cache / "link"), os.sep))
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    (root / "manifest.json").write_text(
        json.dumps(
            {
                "version": 1,
                "threshold": SMALL_FILE_THRESHOLD,
                "small": [{"path": str(cache / "ok.txt"), "size": 2, "mtime": 0}],
                "big": [
                    {"path": str(outside / "big-evil.bin"), "size": 4, "mtime": 0},
                    # a source outside big/: would read the volume's other files into the cache
                    {"path": str(cache) + "/../../../" + os.path.relpath(str(secret), os.sep), "size": 21, "mtime": 0},
                ],
            }
        )
    )
    write(root / "big" / os.path.relpath(str(outside / "big-evil.bin"), os.sep), b"evil")
    assert VolumeCache([str(cache)], namespace="ep1", volume_path=str(volume)).hydrate() == 1
    assert tree(cache) == {"ok.txt": b"ok"}
    assert sorted(os.listdir(outside)) == []
    assert not (cache / "link").exists()


def test_an_old_or_damaged_manifest_is_ignored_then_rewritten(places: Tuple[Path, Path], model: Dict[str, bytes]) -> None:
    volume, cache = places
    root = mirror(volume)
    root.mkdir(parents=True)
    (root / "manifest.json").write_text('{"version": 99, "small": "nonsense"}')
    vc = VolumeCache([str(cache)], namespace="ep1", volume_path=str(volume))
    assert vc.hydrate() == 0
    vc.sync(background=False)
    assert json.loads((root / "manifest.json").read_text())["version"] == 1


def test_best_effort_logs_and_strict_raises(places: Tuple[Path, Path], model: Dict[str, bytes]) -> None:
    volume, cache = places
    (volume / ".cache").write_text("a file where the mirror's parent folder should be")
    VolumeCache([str(cache)], namespace="ep1", volume_path=str(volume)).sync(background=False)  # no raise
    with pytest.raises(OSError):
        VolumeCache([str(cache)], namespace="ep1", volume_path=str(volume), best_effort=False).sync(background=False)


def test_context_manager_hydrates_then_syncs_in_the_background(places: Tuple[Path, Path]) -> None:
    volume, cache = places
    with VolumeCache([str(cache)], namespace="ep1", volume_path=str(volume)) as vc:
        write(cache / "downloaded.safetensors", b"w" * 10)  # the model download inside the block
    assert vc.wait(30)
    assert json.loads((mirror(volume) / "manifest.json").read_text())["small"][0]["path"] == str(
        cache / "downloaded.safetensors"
    )
    (cache / "downloaded.safetensors").unlink()
    with VolumeCache([str(cache)], namespace="ep1", volume_path=str(volume)) as again:
        assert (cache / "downloaded.safetensors").read_bytes() == b"w" * 10
    assert again.wait(30)


def test_the_exception_of_the_block_is_not_swallowed(places: Tuple[Path, Path]) -> None:
    volume, cache = places
    with pytest.raises(RuntimeError, match="load failed"):
        with VolumeCache([str(cache)], namespace="ep1", volume_path=str(volume)) as vc:
            raise RuntimeError("load failed")
    assert vc.wait(30)


def test_the_runpod_layer_names_the_same_class() -> None:
    import importlib
    import sys

    from wavespeed.compat import layer_path

    sys.path.insert(0, layer_path())
    saved = {k: v for k, v in sys.modules.items() if k == "runpod" or k.startswith("runpod.")}
    try:
        for name in saved:
            del sys.modules[name]
        runpod = importlib.import_module("runpod")
        assert runpod.serverless.VolumeCache is VolumeCache
        assert importlib.import_module("runpod.serverless.utils").VolumeCache is VolumeCache
        assert importlib.import_module("runpod.serverless.utils.rp_volume_cache").VolumeCache is VolumeCache
    finally:
        sys.path.remove(layer_path())
        for name in [k for k in sys.modules if k == "runpod" or k.startswith("runpod.")]:
            del sys.modules[name]
        sys.modules.update(saved)
