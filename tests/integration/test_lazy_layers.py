"""Snapshot-backed layers ("copy once"): a build only hashes a step's diff; the layer tar is
written from the committed overlay snapshot when an export, save or push needs it, verified
against the diff id, and prune keeps the snapshot while it is a layer's only copy.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
from pathlib import Path

import pytest
from test_build_support import dockyard_cli, fresh_store, needs_runtime, write_tree
from test_registry_support import Registry, needs_registry, registry

import dockyard
from dockyard.errors import StoreError
from dockyard.exporter import export as export_image
from dockyard.exporter import parse_output
from dockyard.image.oci import chain_ids
from dockyard.registry import pull, push
from dockyard.snapshot import overlay_supported
from dockyard.snapshot.overlay import OverlaySnapshotter
from dockyard.store.db import Store

__all__ = ["registry"]  # fixture

pytestmark = needs_runtime

PAYLOAD = bytes(range(256)) * 64
DOCKERFILE = (
    "FROM busybox\n"
    "COPY payload.bin /data/payload.bin\n"
    "RUN mkdir -p /made && echo made > /made/by-run && rm /data/payload.bin\n"
    "CMD [\"cat\", \"/made/by-run\"]\n"
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    store_root = fresh_store(tmp_path / "store")
    ok, reason = overlay_supported(store_root / "snapshots")
    if not ok:
        pytest.skip(f"snapshot-backed layers need overlayfs: {reason}")
    return store_root


def _build(root: Path, tmp: Path, tag: str = "lazy:1") -> str:
    ctx = write_tree(tmp / "ctx", {"Dockerfile": DOCKERFILE, "payload.bin": PAYLOAD})
    result = dockyard.build(str(ctx), tags=[tag], root=str(root))
    return result.image_id


def _cli(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([*dockyard_cli(), "--root", str(root), *args],
                         capture_output=True, text=True, timeout=300)
    if check:
        assert res.returncode == 0, res.stderr
    return res


def _built_layers(store: Store, image_id: str) -> list[str]:
    """The layers the build made (the ones on top of busybox's)."""
    base = store.read_config(store.get_image("busybox")).diff_ids
    return list(store.read_config(store.get_image(image_id)).diff_ids[len(base):])


def _drop_blobs(store: Store, diff_ids: list[str]) -> None:
    """Forget every stored form of ``diff_ids`` (as a store that never wrote them)."""
    for diff_id in diff_ids:
        layer = store.get_layer(diff_id)
        assert layer is not None
        for blob in layer.blobs.values():
            store.blobs.delete(blob.digest)
        store.blobs.delete(diff_id)
    with sqlite3.connect(store.db_path) as db:
        db.executemany("DELETE FROM layer_blobs WHERE diff_id=?", [(d,) for d in diff_ids])


def _oci_layer_digests(dest: Path) -> tuple[str, list[str]]:
    """(manifest digest, layer digests) of a one-image OCI archive."""
    with tarfile.open(dest) as tar:
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        digest = index["manifests"][0]["digest"]
        member = tar.extractfile("blobs/sha256/" + digest.removeprefix("sha256:"))
        assert member is not None
        manifest = json.loads(member.read())
    return digest, [layer["digest"] for layer in manifest["layers"]]


def test_build_writes_no_layer_tar(root: Path, tmp_path: Path) -> None:
    image_id = _build(root, tmp_path)
    store = Store.open(root)
    layers = _built_layers(store, image_id)
    assert len(layers) == 2
    snap = OverlaySnapshotter(store.snapshots_dir)
    diff_ids = list(store.read_config(store.get_image(image_id)).diff_ids)
    chains = chain_ids(diff_ids)[-2:]
    for diff_id, chain in zip(layers, chains, strict=True):
        assert not store.blobs.has(diff_id)  # the tar was only hashed
        layer = store.get_layer(diff_id)
        assert layer is not None and layer.size and not layer.blobs
        assert [s.chain_id for s in layer.snapshots] == [chain]
        assert chain in snap.committed()
        assert store.layer_present(diff_id)
    # the layers are usable: a rebuild is fully cached and the image runs
    again = dockyard.build(str(tmp_path / "ctx"), tags=["lazy:1"], root=str(root))
    assert again.image_id == image_id
    assert all(step.cached for step in again.steps)
    assert _cli(root, "run", "lazy:1").stdout == "made\n"
    store.close()


def test_export_prune_export_gives_the_same_bytes(root: Path, tmp_path: Path) -> None:
    image_id = _build(root, tmp_path)
    _cli(root, "prune")
    store = Store.open(root)
    layers = _built_layers(store, image_id)
    assert all(store.layer_present(d) and not store.blobs.has(d) for d in layers)

    first = tmp_path / "one.tar"
    export_image(store, image_id, parse_output(f"type=oci,dest={first}"), ["lazy:1"])
    # the tars went from the snapshots straight into the compressor: no tar blob is kept,
    # and each gzip form decompresses to its diff id
    assert not any(store.blobs.has(d) for d in layers)
    for diff_id in layers:
        layer = store.get_layer(diff_id)
        assert layer is not None
        data = gzip.decompress(store.blobs.read_bytes(layer.blobs["gzip"].digest))
        assert "sha256:" + hashlib.sha256(data).hexdigest() == diff_id
    layer0 = store.get_layer(layers[0])
    assert layer0 is not None
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(
            store.blobs.read_bytes(layer0.blobs["gzip"].digest))), mode="r|") as tar:
        names = {m.name: m for m in tar}
    assert "data/payload.bin" in names and names["data/payload.bin"].size == len(PAYLOAD)
    # prune keeps the snapshots: a compressed form cannot give the tar back
    _cli(root, "prune")
    assert all(store.layer_present(d) for d in layers)
    assert store.ensure_layer_blob(layers[0]) == layers[0]

    _drop_blobs(store, layers)  # as if never exported: the tars come from the snapshots again
    assert not any(store.blobs.has(d) for d in layers)
    second = tmp_path / "two.tar"
    export_image(store, image_id, parse_output(f"type=oci,dest={second}"), ["lazy:1"])
    assert _oci_layer_digests(first) == _oci_layer_digests(second)
    assert first.read_bytes() == second.read_bytes()
    # compressed from stored tars (the path before streaming): the same bytes again
    _drop_blobs(store, layers)
    for diff_id in layers:
        store.ensure_layer_blob(diff_id)
    third = tmp_path / "three.tar"
    export_image(store, image_id, parse_output(f"type=oci,dest={third}"), ["lazy:1"])
    assert third.read_bytes() == first.read_bytes()

    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    res = subprocess.run(["skopeo", "inspect", "--config", f"oci-archive:{second}:1"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    config = json.loads(res.stdout)
    assert config["rootfs"]["diff_ids"] == list(
        store.read_config(store.get_image(image_id)).diff_ids)
    store.close()


def test_save_load_round_trip(root: Path, tmp_path: Path) -> None:
    image_id = _build(root, tmp_path)
    archive = tmp_path / "saved.tar"
    _cli(root, "save", "-o", str(archive), "lazy:1")
    other = tmp_path / "other"
    _cli(other, "load", "-i", str(archive))
    loaded = Store.open(other)
    record = loaded.get_image("lazy:1")
    assert record.id == image_id
    for diff_id in loaded.read_config(record).diff_ids:
        assert loaded.blobs.has(diff_id)  # load verified each layer against its diff id
    assert _cli(other, "run", "lazy:1").stdout == "made\n"
    loaded.close()


@needs_registry
def test_push_of_a_never_exported_image(root: Path, tmp_path: Path,
                                        registry: Registry) -> None:
    image_id = _build(root, tmp_path)
    store = Store.open(root)
    assert not any(store.blobs.has(d) for d in _built_layers(store, image_id))
    dest = f"{registry.host}/lazy/app:1"
    result = push(store, "lazy:1", dest)
    assert result.uploaded >= 3  # the two built layers and the config at least
    fresh = Store.open(tmp_path / "fresh")
    pulled = pull(fresh, dest)
    assert pulled.image_id == image_id
    assert pulled.digest == result.digest
    store.close()
    fresh.close()


def test_changed_snapshot_fails_with_the_layer_named(root: Path, tmp_path: Path) -> None:
    image_id = _build(root, tmp_path)
    store = Store.open(root)
    copy_layer = _built_layers(store, image_id)[0]
    layer = store.get_layer(copy_layer)
    assert layer is not None and len(layer.snapshots) == 1
    fs = OverlaySnapshotter(store.snapshots_dir).fs_dir(layer.snapshots[0].chain_id)
    target = fs / "data" / "payload.bin"
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF  # same size, same mtime kept: only the content differs
    st = target.stat()
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))

    dest = tmp_path / "bad.tar"
    with pytest.raises(StoreError) as info:
        export_image(store, image_id, parse_output(f"type=oci,dest={dest}"), ["lazy:1"])
    assert copy_layer in str(info.value)
    assert not dest.exists()
    assert not store.blobs.has(copy_layer)
    # nothing with the changed content became a blob either
    changed = [d for d in store.blobs.iter_digests() if d not in _known_blobs(store)]
    assert changed == []
    res = _cli(root, "save", "-o", str(tmp_path / "bad-save.tar"), "lazy:1", check=False)
    assert res.returncode == 1
    assert copy_layer in res.stderr and "Traceback" not in res.stderr
    store.close()


def _known_blobs(store: Store) -> set[str]:
    known: set[str] = set()
    for image in store.list_images():
        known.update((image.id, image.manifest_digest))
        config = store.read_config(image)
        known.update(d.digest for d in store.read_manifest(image).layers)
        for diff_id in config.diff_ids:
            layer = store.get_layer(diff_id)
            if layer is not None:
                known.update(b.digest for b in layer.blobs.values())
    return known


def test_prune_keeps_the_only_copy_until_the_image_is_gone(root: Path, tmp_path: Path) -> None:
    image_id = _build(root, tmp_path)
    store = Store.open(root)
    layers = _built_layers(store, image_id)
    backing = {d: store.get_layer(d).snapshots[0].chain_id for d in layers}  # type: ignore[union-attr]
    snap = OverlaySnapshotter(store.snapshots_dir)

    # --all drops every cache record: only the tagged image still needs the layers
    _cli(root, "prune", "--all")
    assert store.list_cache_records() == []
    assert set(backing.values()) <= set(snap.committed())
    assert all(store.layer_present(d) for d in layers)
    assert _cli(root, "run", "lazy:1").stdout == "made\n"
    dest = tmp_path / "kept.tar"
    export_image(store, image_id, parse_output(f"type=oci,dest={dest}"), ["lazy:1"])
    _drop_blobs(store, layers)  # back to snapshot-only before the image goes

    _cli(root, "rmi", "lazy:1")
    _cli(root, "prune", "--all")
    assert set(backing.values()).isdisjoint(snap.committed())
    for diff_id in layers:
        assert store.get_layer(diff_id) is None
        assert not store.layer_present(diff_id)
    with sqlite3.connect(store.db_path) as db:
        assert db.execute("SELECT COUNT(*) FROM layer_snapshots").fetchone()[0] == 0
    store.close()


def test_cache_prune_keeps_a_tagged_images_snapshot_backed_layers(
    root: Path, tmp_path: Path
) -> None:
    image_id = _build(root, tmp_path)
    store = Store.open(root)
    layers = _built_layers(store, image_id)
    _cli(root, "cache", "prune", "--all")
    assert all(store.layer_present(d) for d in layers)
    dest = tmp_path / "after-cache-prune.tar"
    export_image(store, image_id, parse_output(f"type=oci,dest={dest}"), ["lazy:1"])
    for diff_id in layers:  # compressed from the snapshots, which the prune kept
        layer = store.get_layer(diff_id)
        assert layer is not None
        data = gzip.decompress(store.blobs.read_bytes(layer.blobs["gzip"].digest))
        assert "sha256:" + hashlib.sha256(data).hexdigest() == diff_id
        assert store.ensure_layer_blob(diff_id) == diff_id
    store.close()
