"""prune: tagged images and everything they reference stay; the unreferenced goes."""

from __future__ import annotations

import io
import multiprocessing
import tarfile
import time
from collections.abc import Iterator
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

import pytest

from dockyard.image.oci import (
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_LAYER,
    Descriptor,
    HistoryEntry,
    ImageConfig,
    Manifest,
    Platform,
    chain_ids,
)
from dockyard.store import CacheRecord, ImageRecord, SnapshotRecord, Store, StoreLockTimeout, prune


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def put_layer(store: Store, files: dict[str, bytes]) -> str:
    data = layer_tar(files)
    digest = store.blobs.put_bytes(data)
    store.put_layer(digest, len(data))
    return digest


def make_image(store: Store, diff_ids: list[str], names: tuple[str, ...] = ()) -> ImageRecord:
    config = ImageConfig.empty(Platform("linux", "amd64"))
    for d in diff_ids:
        config = config.add_layer(d, HistoryEntry(created_by=d))
    config_bytes = config.to_json()
    layers = tuple(Descriptor(MEDIA_TYPE_OCI_LAYER, d, store.blobs.size(d)) for d in diff_ids)
    manifest = Manifest(Descriptor.of(MEDIA_TYPE_OCI_CONFIG, config_bytes), layers)
    return store.put_image(manifest.to_json(), config_bytes, names)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "root")
    yield s
    s.close()


def test_prune_keeps_referenced_and_removes_the_rest(store: Store) -> None:
    base = put_layer(store, {"base": b"b"})
    app = put_layer(store, {"app": b"a"})
    cached = put_layer(store, {"cached": b"c"})
    orphan = put_layer(store, {"orphan": b"o"})
    stray = store.blobs.put_bytes(b"a stray blob nobody recorded")
    tagged = make_image(store, [base, app], names=("app:1",))
    untagged = make_image(store, [base])
    old = make_image(store, [orphan], names=("old",))
    store.remove_image(old.id)  # rmi: its blobs are now garbage
    store.put_cache_record(CacheRecord("step", cached, chain_ids([base, cached])[1]))
    (store.blobs.tmp / "blob-crashed").write_bytes(b"half written")

    report = prune(store)

    assert store.get_image("app:1").id == tagged.id
    assert store.get_image(untagged.id).id == untagged.id
    for digest in (
        base,
        app,
        cached,
        tagged.id,
        tagged.manifest_digest,
        untagged.id,
        untagged.manifest_digest,
    ):
        assert store.blobs.has(digest), digest
    for digest in (orphan, stray, old.id, old.manifest_digest):
        assert not store.blobs.has(digest), digest
    assert store.get_layer(orphan) is None
    assert store.get_layer(cached) is not None
    assert report.blobs_removed == 4
    assert report.layers_forgotten == 1
    assert report.bytes_freed > 0
    assert list(store.blobs.tmp.iterdir()) == []

    # everything referenced is still usable: inspect reads manifest, config and layers
    assert store.inspect_image(tagged)["RootFS"]["Layers"] == [base, app]

    # a second prune finds nothing more
    assert prune(store).blobs_removed == 0


def test_prune_all_drops_cache_and_untagged_but_not_tagged(store: Store) -> None:
    base = put_layer(store, {"base": b"b"})
    cached = put_layer(store, {"cached": b"c"})
    only_untagged = put_layer(store, {"u": b"u"})
    tagged = make_image(store, [base], names=("keep",))
    untagged = make_image(store, [only_untagged])
    store.put_cache_record(CacheRecord("step", cached, None))
    (store.cache_dir / "apt").mkdir()
    (store.cache_dir / "apt" / "pkg.deb").write_bytes(b"x" * 100)

    report = prune(store, all_cache=True)

    assert report.cache_records_removed == 1
    assert report.images_removed == 1
    assert report.cache_mounts_removed == 1
    assert store.list_cache_records() == []
    assert store.find_image(untagged.id) is None
    assert store.get_image("keep").id == tagged.id
    assert store.blobs.has(base) and store.blobs.has(tagged.id)
    assert not store.blobs.has(cached)
    assert not store.blobs.has(only_untagged)
    assert list(store.cache_dir.iterdir()) == []


def test_prune_removes_unreferenced_snapshots_through_the_hook(store: Store) -> None:
    base = put_layer(store, {"base": b"b"})
    app = put_layer(store, {"app": b"a"})
    make_image(store, [base, app], names=("app",))
    image_chains = chain_ids([base, app])
    dead = "sha256:" + "d" * 64
    child = "sha256:" + "e" * 64
    parent_only = "sha256:" + "f" * 64
    store.put_snapshot(SnapshotRecord(image_chains[0], "overlay", "s/1"))
    store.put_snapshot(SnapshotRecord(image_chains[1], "overlay", "s/2", image_chains[0]))
    store.put_snapshot(SnapshotRecord(dead, "overlay", "s/dead"))
    # a cache record's snapshot keeps its parent alive although no image uses the parent
    store.put_snapshot(SnapshotRecord(parent_only, "overlay", "s/parent"))
    store.put_snapshot(SnapshotRecord(child, "overlay", "s/child", parent_only))
    store.put_cache_record(CacheRecord("k", None, child))
    removed: list[str] = []

    report = prune(
        store,
        remove_snapshot=removed.append,
        list_snapshot_keys=lambda: ["s/1", "s/2", "s/dead", "s/parent", "s/child", "s/leftover"],
    )

    assert sorted(removed) == ["s/dead", "s/leftover"]
    assert report.snapshots_removed == len(removed)
    assert {s.key for s in store.list_snapshots()} == {"s/1", "s/2", "s/parent", "s/child"}


def test_default_snapshot_removal_deletes_the_directory(store: Store) -> None:
    snap = store.snapshots_dir / "native" / "7"
    (snap / "fs").mkdir(parents=True)
    (snap / "fs" / "file").write_text("x")
    store.put_snapshot(SnapshotRecord("sha256:" + "7" * 64, "native", "native/7"))
    prune(store)
    assert not snap.exists()
    assert (store.snapshots_dir / "native").is_dir()
    assert store.list_snapshots() == []


def _hold_build_lock(root: str, ready: EventType, release: EventType) -> None:
    store = Store.open(root)
    with store.build_lock():
        ready.set()
        release.wait(30)
    store.close()


def test_prune_waits_for_running_builds(store: Store) -> None:
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_build_lock, args=(str(store.root), ready, release))
    proc.start()
    try:
        assert ready.wait(30)
        stray = store.blobs.put_bytes(b"written by the running build, not yet recorded")
        with pytest.raises(StoreLockTimeout, match="a build is using it"):
            prune(store, timeout=0.2)
        assert store.blobs.has(stray)  # nothing was touched
        # builds share the lock with each other
        with store.build_lock(timeout=0):
            pass
        release.set()
        start = time.monotonic()
        report = prune(store, timeout=10)
        assert time.monotonic() - start < 10
        assert report.blobs_removed == 1
    finally:
        release.set()
        proc.join(10)


def test_build_waits_while_prune_holds_the_lock(store: Store) -> None:
    with (
        store.exclusive_lock(timeout=0),
        pytest.raises(StoreLockTimeout, match="prune"),
        store.build_lock(timeout=0.1),
    ):
        pass
