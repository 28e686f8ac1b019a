"""``store check [--repair]`` on crafted damage (no root needed): each kind of problem is
found in plain words, ``repair`` fixes what it can, and never a tagged image's content."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_exporter import BASE, F, make_image

from dockyard.exporter._pending import atomic_output
from dockyard.snapshot._meta import MetaTable
from dockyard.store.cache import CacheRecord
from dockyard.store.check import check_store
from dockyard.store.db import Store
from dockyard.store.reserve import RESERVE_BYTES, making_room, release_reserve


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "root")


def _kinds(report: object) -> list[str]:
    return sorted(f.kind for f in report.findings)  # type: ignore[attr-defined]


def _layer_blobs(store: Store, image_id: str) -> list[str]:
    from dockyard.exporter import read_image

    return [layer.diff_id for layer in read_image(store, image_id).layers]


def test_a_fresh_store_is_clean(store: Store) -> None:
    make_image(store, BASE, names=("app:1",))
    report = check_store(store)
    assert report.ok and report.findings == ()
    assert report.images == 1 and report.blobs >= 3


def test_corrupt_blob_of_an_untagged_image(store: Store) -> None:
    image = make_image(store, [*BASE, [F("x", b"untagged\n")]])
    layer = _layer_blobs(store, image)[-1]
    path = store.blobs.path(layer)
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes() + b"junk")
    report = check_store(store)
    assert not report.ok and "image-broken" in _kinds(report)
    assert any(layer in f.message for f in report.findings)
    fixed = check_store(store, repair=True)
    assert fixed.ok
    assert store.find_image(image) is None and not path.exists()
    assert check_store(store).findings == ()


def test_tagged_content_is_never_removed(store: Store) -> None:
    image = make_image(store, BASE, names=("keep:1",))
    layer = _layer_blobs(store, image)[0]
    path = store.blobs.path(layer)
    os.chmod(path, 0o644)
    damaged = path.read_bytes()[:-10]
    path.write_bytes(damaged)
    report = check_store(store, repair=True)
    assert not report.ok
    broken = [f for f in report.findings if not f.repaired]
    assert broken and all(not f.repairable for f in broken)
    assert any("keep:1" in f.message and "pull or build it again" in f.message for f in broken)
    assert store.find_image("keep:1") is not None and path.read_bytes() == damaged


def test_leftovers_are_found_and_removed(store: Store, tmp_path: Path) -> None:
    make_image(store, BASE, names=("app:1",))
    (store.blobs.tmp / "blob-abc").write_bytes(b"half a blob")
    (store.blobs.dir / "not-a-digest").write_bytes(b"?")
    table = MetaTable(store.snapshots_dir)
    table.create("active-key", "active", None)  # a killed build's
    (table.dir / "77" / "fs").mkdir(parents=True)  # a directory with no record
    # an export killed while writing: its record names a hidden temp file
    dest = tmp_path / "out" / "image.tar"
    dest.parent.mkdir()
    child = subprocess.run(
        [sys.executable, "-c",
         "import sys, os\n"
         "from pathlib import Path\n"
         "from dockyard.exporter._pending import atomic_output\n"
         f"cm = atomic_output(Path({str(store.root)!r}), Path({str(dest)!r}))\n"
         "tmp = cm.__enter__()\n"
         "tmp.write_bytes(b'partial')\n"
         "print(tmp, flush=True)\n"
         "os._exit(9)\n"],
        capture_output=True, text=True, check=False)
    leftover = Path(child.stdout.strip())
    assert leftover.exists() and leftover.name.endswith(".dockyard-tmp")
    report = check_store(store)
    kinds = _kinds(report)
    for kind in ("temp-file", "blob-stray", "snapshot-uncommitted", "snapshot-orphan",
                 "output-temp"):
        assert kind in kinds, (kind, kinds)
    assert not report.ok
    fixed = check_store(store, repair=True)
    assert fixed.ok, fixed.findings
    assert not leftover.exists() and not dest.exists()
    assert list(store.blobs.tmp.iterdir()) == []
    assert not (table.dir / "77").exists() and table.find("active-key") is None
    assert check_store(store).findings == ()


def test_a_live_output_is_left_alone(store: Store, tmp_path: Path) -> None:
    dest = tmp_path / "x.tar"
    with atomic_output(store.root, dest) as tmp:
        tmp.write_bytes(b"being written")
        report = check_store(store, repair=True)
        assert "output-temp" not in _kinds(report) and tmp.exists()
    assert dest.read_bytes() == b"being written"


def test_dangling_records_are_dropped(store: Store) -> None:
    image = make_image(store, BASE, names=("app:1",))
    gone = "sha256:" + "ab" * 32
    store.put_cache_record(CacheRecord(key="sha256:" + "cd" * 32, diff_id=gone, chain_id=None,
                                       description="RUN lost", result={}, explain={},
                                       created=time.time(), last_used=time.time()))
    # a compressed form of a live layer whose blob went missing
    layer = _layer_blobs(store, image)[0]
    store.blobs.put_bytes(b"pretend gzip")
    fake = "sha256:" + __import__("hashlib").sha256(b"pretend gzip").hexdigest()
    store.put_layer_blob(layer, "gzip", fake, 12)
    store.blobs.delete(fake)
    report = check_store(store)
    assert {"cache-record", "layer-form"} <= set(_kinds(report))
    assert check_store(store, repair=True).ok
    assert store.get_cache_record("sha256:" + "cd" * 32) is None
    assert "gzip" not in store.get_layer(layer).blobs  # type: ignore[union-attr]
    assert store.find_image("app:1") is not None


def test_snapshot_without_directory(store: Store) -> None:
    table = MetaTable(store.snapshots_dir)
    table.create("a", "active", None)
    table.commit("chain-a", "a")
    table.create("b", "active", "chain-a")
    table.commit("chain-b", "b")
    rec = table.get("chain-a")
    os.rename(table.dir / str(rec.id), table.dir.parent / "moved-away")
    report = check_store(store)
    assert any(f.kind == "snapshot" and "chain-a" in f.message for f in report.findings)
    assert check_store(store, repair=True).ok
    assert table.find("chain-a") is None and table.find("chain-b") is None


def test_check_waits_for_builds(store: Store) -> None:
    from dockyard.errors import StoreError

    with store.build_lock(), pytest.raises(StoreError):
        check_store(store, timeout=0.2)


def test_the_reserve(store: Store) -> None:
    reserve = store.root / "reserve"
    assert reserve.stat().st_blocks * 512 >= RESERVE_BYTES
    assert release_reserve(store.root) and not reserve.exists()
    with making_room(store.root):
        pass
    assert reserve.exists()
    assert check_store(store).findings == ()  # the reserve is not a leftover


def test_cli_store_check(store: Store) -> None:
    make_image(store, BASE, names=("app:1",))
    (store.blobs.tmp / "leftover").write_bytes(b"x")
    run = [sys.executable, "-m", "dockyard.cli.main", "--root", str(store.root), "store",
           "check"]
    bad = subprocess.run(run, capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and "temp file" in bad.stdout and "--repair" in bad.stdout
    fixed = subprocess.run([*run, "--repair"], capture_output=True, text=True, check=False)
    assert fixed.returncode == 0 and "fixed: temp file" in fixed.stdout
    good = subprocess.run([*run, "--format", "json"], capture_output=True, text=True,
                          check=False)
    assert good.returncode == 0 and json.loads(good.stdout)["ok"] is True


def test_recorded_sizes_are_checked(store: Store) -> None:
    make_image(store, BASE)  # untagged: repair may drop it
    with store.database.write() as db:
        db.execute("UPDATE images SET manifest_size = manifest_size + 1")
    report = check_store(store)
    assert any("bytes, not the" in f.message and "manifest" in f.message
               for f in report.findings)
    assert check_store(store, repair=True).ok
