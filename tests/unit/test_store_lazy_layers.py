"""Snapshot-backed layers in the store: recording, regenerating (verified), the sweep that
keeps a layer's only copy, and the schema upgrade that adds them. No mounts: an overlay
snapshot's own diff is a plain directory, written here directly."""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import tarfile
from pathlib import Path

import pytest

from dockyard.errors import NotFoundError, StoreError
from dockyard.layers.tarwriter import LayerStats
from dockyard.snapshot.overlay import OverlaySnapshotter
from dockyard.store import CacheRecord, Store
from dockyard.store.cache_gc import sweep_snapshots
from dockyard.store.db import SCHEMA_VERSION, LayerSnapshot

CHAIN = "sha256:" + "c" * 64


class _Sink:
    def __init__(self) -> None:
        self.buf = io.BytesIO()

    def write(self, data: bytes) -> int:
        return self.buf.write(data)


def _committed(store: Store, name: str, files: dict[str, bytes]) -> tuple[LayerStats, bytes]:
    """An overlay snapshot ``name`` whose diff holds ``files``; (its layer stats, tar bytes)."""
    snap = OverlaySnapshotter(store.snapshots_dir)
    key = f"active-{name[-8:]}"
    snap.prepare(key, None)
    fs = snap.fs_dir(key)
    for rel, data in files.items():
        (fs / rel).parent.mkdir(parents=True, exist_ok=True)
        (fs / rel).write_bytes(data)
    sink = _Sink()
    stats = snap.diff(key, sink, source_date_epoch=0)  # type: ignore[arg-type]
    snap.commit(name, key)
    return stats, sink.buf.getvalue()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "root")


def test_a_recorded_layer_is_regenerated_byte_for_byte(store: Store) -> None:
    stats, tar = _committed(store, CHAIN, {"app/hello.txt": b"hello\n", "app/x": b"x" * 5000})
    assert stats.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    store.put_snapshot_layer(stats.diff_id, stats.size, LayerSnapshot("overlay", CHAIN, 0))

    layer = store.get_layer(stats.diff_id)
    assert layer is not None and layer.size == len(tar) and not layer.blobs
    assert layer.snapshots == (LayerSnapshot("overlay", CHAIN, 0),)
    assert store.layer_present(stats.diff_id) and not store.blobs.has(stats.diff_id)

    assert store.ensure_layer_blob(stats.diff_id) == stats.diff_id
    assert store.blobs.read_bytes(stats.diff_id) == tar
    layer = store.get_layer(stats.diff_id)
    assert layer is not None and layer.blobs["none"].size == len(tar)
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        assert sorted(tf.getnames()) == ["app", "app/hello.txt", "app/x"]
    assert list(store.blobs.tmp.iterdir()) == []


def test_changed_snapshot_content_is_refused_and_names_the_layer(store: Store) -> None:
    stats, _ = _committed(store, CHAIN, {"f": b"original"})
    store.put_snapshot_layer(stats.diff_id, stats.size, LayerSnapshot("overlay", CHAIN, 0))
    target = OverlaySnapshotter(store.snapshots_dir).fs_dir(CHAIN) / "f"
    target.write_bytes(b"Original")  # same size; mtimes are clamped to 0 anyway
    with pytest.raises(StoreError) as info:
        store.ensure_layer_blob(stats.diff_id)
    assert stats.diff_id in str(info.value) and CHAIN in str(info.value)
    assert list(store.blobs.iter_digests()) == []
    assert list(store.blobs.tmp.iterdir()) == []


def test_the_clamp_used_at_build_time_is_the_one_used_again(store: Store) -> None:
    _committed(store, CHAIN, {"f": b"data"})
    snap = OverlaySnapshotter(store.snapshots_dir)
    sink = _Sink()
    unclamped = snap.diff(CHAIN, sink, source_date_epoch=None)  # type: ignore[arg-type]
    store.put_snapshot_layer(unclamped.diff_id, unclamped.size,
                             LayerSnapshot("overlay", CHAIN, None))
    assert store.ensure_layer_blob(unclamped.diff_id) == unclamped.diff_id


def test_no_blob_and_no_snapshot_is_not_found(store: Store) -> None:
    missing = "sha256:" + "d" * 64
    assert not store.layer_present(missing)
    with pytest.raises(NotFoundError):
        store.ensure_layer_blob(missing)
    # a row naming a snapshot that was removed behind the store's back: the first attempt
    # to read the layer finds out, says so, and drops the row, so it is not claimed again
    store.put_snapshot_layer(missing, 10, LayerSnapshot("overlay", CHAIN, 0))
    assert store.layer_present(missing)  # rows are trusted (no snapshotter on this path)
    with pytest.raises(NotFoundError):
        store.ensure_layer_blob(missing)
    layer = store.get_layer(missing)
    assert layer is not None and layer.snapshots == ()
    assert not store.layer_present(missing)


def test_forget_snapshot_layers(store: Store) -> None:
    diff_id = "sha256:" + "d" * 64
    store.put_snapshot_layer(diff_id, 10, LayerSnapshot("overlay", CHAIN, 0))
    assert store.layers_backed_by(CHAIN) == [diff_id]
    store.forget_snapshot_layers(CHAIN, "native")  # another snapshotter's: not these
    assert store.layers_backed_by(CHAIN) == [diff_id]
    store.forget_snapshot_layers(CHAIN)
    assert store.layers_backed_by(CHAIN) == []
    layer = store.get_layer(diff_id)
    assert layer is not None and layer.snapshots == () and not store.layer_present(diff_id)


def test_sweep_keeps_the_snapshot_that_is_a_used_layers_only_copy(store: Store) -> None:
    stats, _ = _committed(store, CHAIN, {"f": b"only copy"})
    store.put_snapshot_layer(stats.diff_id, stats.size, LayerSnapshot("overlay", CHAIN, 0))
    # the record's own chain is elsewhere (same diff made on another parent): only the
    # layer's snapshot source can keep the bytes
    other_chain = "sha256:" + "e" * 64
    store.put_cache_record(CacheRecord(key="k1", diff_id=stats.diff_id, chain_id=other_chain))
    snap = OverlaySnapshotter(store.snapshots_dir)
    with store.exclusive_lock():
        assert sweep_snapshots(store, snap) == (0, 0)
    assert snap.committed() == [CHAIN]
    assert store.layer_present(stats.diff_id)

    # with a blob the snapshot is no longer the only copy, and nothing else uses it
    store.ensure_layer_blob(stats.diff_id)
    with store.exclusive_lock():
        removed, _ = sweep_snapshots(store, snap)
    assert removed == 1 and snap.committed() == []
    layer = store.get_layer(stats.diff_id)
    assert layer is not None and layer.snapshots == ()
    assert store.layer_present(stats.diff_id)  # the blob remains


def test_sweep_removes_it_once_nothing_uses_the_layer(store: Store) -> None:
    stats, _ = _committed(store, CHAIN, {"f": b"unused"})
    store.put_snapshot_layer(stats.diff_id, stats.size, LayerSnapshot("overlay", CHAIN, 0))
    snap = OverlaySnapshotter(store.snapshots_dir)
    with store.exclusive_lock():
        removed, _ = sweep_snapshots(store, snap)
    assert removed == 1 and snap.committed() == []
    assert not store.layer_present(stats.diff_id)


def test_sweep_keeps_the_rows_of_a_snapshot_that_stays(store: Store) -> None:
    stats, _ = _committed(store, CHAIN, {"f": b"parent"})
    store.put_snapshot_layer(stats.diff_id, stats.size, LayerSnapshot("overlay", CHAIN, 0))
    snap = OverlaySnapshotter(store.snapshots_dir)
    child = "sha256:" + "f" * 64
    snap.prepare("child-key", CHAIN)
    snap.commit(child, "child-key")
    # the child is live (a cache record's chain), so its parent cannot go and keeps its rows
    store.put_cache_record(CacheRecord(key="k2", diff_id=None, chain_id=child))
    with store.exclusive_lock():
        assert sweep_snapshots(store, snap) == (0, 0)
    assert sorted(snap.committed()) == sorted([CHAIN, child])
    assert store.layers_backed_by(CHAIN) == [stats.diff_id]


def test_a_version_1_store_is_upgraded(tmp_path: Path) -> None:
    root = tmp_path / "root"
    Store.open(root).close()
    with sqlite3.connect(root / "dockyard.db") as db:
        db.execute("DROP TABLE layer_snapshots")
        db.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    store = Store.open(root)
    with sqlite3.connect(root / "dockyard.db") as db:
        version = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        assert version[0] == str(SCHEMA_VERSION) == "7"
        assert db.execute(
            "SELECT 1 FROM sqlite_master WHERE name='layer_snapshots'").fetchone()
    store.put_snapshot_layer("sha256:" + "a" * 64, 1, LayerSnapshot("overlay", CHAIN, 0))
    store.close()


def _replaced_dir(store: Store) -> tuple[OverlaySnapshotter, str]:
    """A base snapshot with ``d/old`` and ``d/sub/f``, and an active child whose upper dir
    holds what overlay leaves after ``rm -rf d && mkdir -p d/sub && echo > d/new``: ``d``
    opaque (the ``user.`` form, which needs no root) with ``d/sub`` and ``d/new``."""
    snap = OverlaySnapshotter(store.snapshots_dir)
    snap.prepare("base-active", None)
    fs = snap.fs_dir("base-active")
    (fs / "d" / "sub").mkdir(parents=True)
    (fs / "d" / "old").write_bytes(b"old")
    (fs / "d" / "sub" / "f").write_bytes(b"f")
    snap.commit(CHAIN, "base-active")
    snap.prepare("child-active", CHAIN)
    up = snap.fs_dir("child-active")
    (up / "d" / "sub").mkdir(parents=True)
    (up / "d" / "new").write_bytes(b"new")
    try:
        os.setxattr(up / "d", "user.overlay.opaque", b"y")
    except OSError as err:
        pytest.skip(f"no user xattrs on {up}: {err}")
    return snap, "child-active"


def _names(tar: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        return [ti.name.rstrip("/") for ti in tf]


def test_an_opaque_directory_is_written_as_whiteouts_of_what_it_hides(store: Store) -> None:
    snap, key = _replaced_dir(store)
    sink = _Sink()
    snap.diff(key, sink, source_date_epoch=0)  # type: ignore[arg-type]
    # BuildKit's form, the native snapshotter's: one whiteout per hidden name, where it was
    assert _names(sink.buf.getvalue()) == [
        "d", "d/new", "d/.wh.old", "d/sub", "d/sub/.wh.f"]
    legacy = _Sink()
    snap.diff(key, legacy, source_date_epoch=0, opaque_markers=True)  # type: ignore[arg-type]
    assert _names(legacy.buf.getvalue()) == ["d", "d/.wh..wh..opq", "d/new", "d/sub"]


def test_a_layer_recorded_with_the_opaque_marker_is_written_again_with_it(tmp_path: Path) -> None:
    """A store made before schema 7 keeps its layers' diff ids: their rows get tar format 1
    and are written again in that form; a row recorded now has format 2."""
    root = tmp_path / "root"
    store = Store.open(root)
    snap, key = _replaced_dir(store)
    old, new = _Sink(), _Sink()
    legacy = snap.diff(key, old, source_date_epoch=0, opaque_markers=True)  # type: ignore[arg-type]
    current = snap.diff(key, new, source_date_epoch=0)  # type: ignore[arg-type]
    assert legacy.diff_id != current.diff_id
    child = "sha256:" + "d" * 64
    snap.commit(child, key)
    store.close()
    with sqlite3.connect(root / "dockyard.db") as db:  # the table as schema 6 made it
        db.execute("DROP TABLE layer_snapshots")
        db.execute("CREATE TABLE layer_snapshots (diff_id TEXT NOT NULL REFERENCES"
                   " layers(diff_id) ON DELETE CASCADE, snapshotter TEXT NOT NULL, chain_id"
                   " TEXT NOT NULL, source_date_epoch INTEGER, PRIMARY KEY (diff_id,"
                   " snapshotter, chain_id))")
        db.execute("INSERT INTO layers(diff_id, size) VALUES (?,?)",
                   (legacy.diff_id, legacy.size))
        db.execute("INSERT INTO layer_snapshots VALUES (?,?,?,?)",
                   (legacy.diff_id, "overlay", child, 0))
        db.execute("UPDATE meta SET value='6' WHERE key='schema_version'")
    store = Store.open(root)
    layer = store.get_layer(legacy.diff_id)
    assert layer is not None and layer.snapshots == (LayerSnapshot("overlay", child, 0, 1),)
    assert store.ensure_layer_blob(legacy.diff_id) == legacy.diff_id
    assert store.blobs.read_bytes(legacy.diff_id) == old.buf.getvalue()
    store.put_snapshot_layer(current.diff_id, current.size, LayerSnapshot("overlay", child, 0))
    assert store.ensure_layer_blob(current.diff_id) == current.diff_id
    assert store.blobs.read_bytes(current.diff_id) == new.buf.getvalue()
    store.close()
    Store.open(root).close()  # opened again: the column is there, nothing to add


def test_export_streams_snapshots_into_the_compressor_and_keeps_no_tar(store: Store) -> None:
    import gzip

    from dockyard.exporter.layout import compressed_layers
    from dockyard.layers.compress import compress

    made = []
    for i in range(3):  # several layers: compressed on two threads
        chain = "sha256:" + f"{i}" * 64
        stats, tar = _committed(store, chain, {f"d{i}/f": bytes([i]) * 300_000})
        store.put_snapshot_layer(stats.diff_id, stats.size, LayerSnapshot("overlay", chain, 0))
        made.append((stats.diff_id, tar))
    descs = compressed_layers(store, [d for d, _ in made], "gzip")
    for (diff_id, tar), desc in zip(made, descs, strict=True):
        assert not store.blobs.has(diff_id)  # no uncompressed blob was written
        blob = store.blobs.read_bytes(desc.digest)
        assert gzip.decompress(blob) == tar
        expected = io.BytesIO()
        assert compress(io.BytesIO(tar), expected, "gzip")[0] == desc.digest
        layer = store.get_layer(diff_id)
        assert layer is not None and layer.blobs["gzip"].digest == desc.digest
    assert list(store.blobs.tmp.iterdir()) == []
    # a second export finds the forms
    assert compressed_layers(store, [d for d, _ in made], "gzip") == descs


def test_export_of_a_changed_snapshot_fails_and_keeps_nothing(store: Store) -> None:
    from dockyard.exporter.layout import compressed_layers

    good, _ = _committed(store, CHAIN, {"f": b"fine" * 1000})
    store.put_snapshot_layer(good.diff_id, good.size, LayerSnapshot("overlay", CHAIN, 0))
    chain2 = "sha256:" + "9" * 64
    bad, _ = _committed(store, chain2, {"g": b"original"})
    store.put_snapshot_layer(bad.diff_id, bad.size, LayerSnapshot("overlay", chain2, 0))
    (OverlaySnapshotter(store.snapshots_dir).fs_dir(chain2) / "g").write_bytes(b"Original")
    with pytest.raises(StoreError) as info:
        compressed_layers(store, [good.diff_id, bad.diff_id], "gzip")
    assert bad.diff_id in str(info.value) and chain2 in str(info.value)
    assert list(store.blobs.iter_digests()) == []  # the good layer's blob went too
    assert list(store.blobs.tmp.iterdir()) == []
    for diff_id in (good.diff_id, bad.diff_id):
        layer = store.get_layer(diff_id)
        assert layer is not None and "gzip" not in layer.blobs


def test_sweep_keeps_the_snapshot_of_a_layer_with_only_a_compressed_form(store: Store) -> None:
    from dockyard.exporter.layout import compressed_layers

    stats, tar = _committed(store, CHAIN, {"f": b"exported"})
    store.put_snapshot_layer(stats.diff_id, stats.size, LayerSnapshot("overlay", CHAIN, 0))
    store.put_cache_record(CacheRecord(key="k3", diff_id=stats.diff_id,
                                       chain_id="sha256:" + "e" * 64))
    compressed_layers(store, [stats.diff_id], "gzip")
    snap = OverlaySnapshotter(store.snapshots_dir)
    with store.exclusive_lock():
        assert sweep_snapshots(store, snap) == (0, 0)  # gzip cannot give the tar back
    assert store.ensure_layer_blob(stats.diff_id) == stats.diff_id
    assert store.blobs.read_bytes(stats.diff_id) == tar


def test_is_committed_reads_one_row(store: Store) -> None:
    """The export asks this per layer: a committed name, an active key, an unknown one."""
    _committed(store, CHAIN, {"f": b"x"})
    snap = OverlaySnapshotter(store.snapshots_dir)
    snap.prepare("still-active", CHAIN)
    assert snap.is_committed(CHAIN)
    assert not snap.is_committed("still-active")
    assert not snap.is_committed("sha256:" + "f" * 64)
    assert snap.is_committed(CHAIN) == (CHAIN in snap.committed())
