"""Garbage collection: remove what nothing references.

What is alive (computed under the store's exclusive lock, so no build is running):

* every image record (tagged or not; ``all_cache`` also drops untagged ones that no
  multi-platform name holds) and, through its manifest and config, the manifest blob, the
  config blob and its layers; the index blob of every multi-platform name;
* every build cache record (``all_cache`` drops them all first), and its layer;
* a layer alive by either of those keeps every stored form of it (uncompressed and
  compressed) and every blob a pull stored for it (its diff id not checked yet); a layer
  record nothing uses is forgotten;
* snapshots whose chain id is a prefix chain of a live image or a cache record's chain,
  together with their parents (the overlay snapshots are swept by
  ``cache_gc.sweep_snapshots``, which also keeps the snapshot a blob-less live layer is
  written from); a forgotten layer's snapshot-backing rows go with its record.

Everything else goes: blobs on disk, layer and snapshot records, snapshot directories (via
the snapshotter's ``remove_snapshot`` hook), leftovers in ``tmp/``, and, with ``all_cache``,
the ``RUN --mount=type=cache`` directories. Tagged images always stay.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from dockyard._fs import remove_tree
from dockyard.errors import DockyardError
from dockyard.image.oci import chain_ids
from dockyard.store.db import Store

__all__ = ["PruneReport", "prune"]


@dataclass(frozen=True)
class PruneReport:
    """What a prune removed."""

    blobs_removed: int = 0
    bytes_freed: int = 0
    layers_forgotten: int = 0
    snapshots_removed: int = 0
    cache_records_removed: int = 0
    images_removed: int = 0
    cache_mounts_removed: int = 0


def _rmtree(path: Path) -> int:
    """Remove a file or tree of any depth; returns the bytes freed (best effort)."""
    return remove_tree(path, ignore_errors=True)


def prune(
    store: Store,
    all_cache: bool = False,
    *,
    remove_snapshot: Callable[[str], None] | None = None,
    list_snapshot_keys: Callable[[], Iterable[str]] | None = None,
    timeout: float | None = 30.0,
) -> PruneReport:
    """Delete everything no image or cache record references; see the module docstring.

    ``remove_snapshot(key)`` removes one snapshot directory (default: ``rmtree`` of
    ``<root>/snapshots/<key>``). If ``list_snapshot_keys`` is given, snapshot keys it lists
    that no record names are removed too (leftovers of crashed builds); without it only
    recorded snapshots are considered, since only the snapshotter knows its layout.
    Waits up to ``timeout`` seconds for running builds (StoreError after that).
    """
    remover = remove_snapshot or (
        lambda key: remove_tree(store.snapshots_dir / key, ignore_errors=True)
    )
    with store.exclusive_lock(timeout):
        store.bump_generation()  # blobs and snapshots may go: no fingerprint survives this
        images_removed = 0
        cache_removed = 0
        # A multi-platform image keeps its index and every platform image it has here.
        live_blobs = {digest for _name, digest in store.list_index_names()}
        indexed = store.indexed_image_ids()
        if all_cache:
            cache_removed = store.delete_all_cache_records()
            for image in store.list_images():
                if not image.names and image.id not in indexed:
                    store.remove_image(image.id)
                    images_removed += 1

        live_layers: set[str] = set()
        live_chains: set[str] = set()
        for image in store.list_images():
            live_blobs.update((image.id, image.manifest_digest))
            try:
                manifest = store.read_manifest(image)
                config = store.read_config(image)
            except DockyardError:
                continue  # a damaged image keeps what we can name; never guess more
            live_blobs.update(layer.digest for layer in manifest.layers)
            live_blobs.add(manifest.config.digest)
            live_layers.update(config.diff_ids)
            live_chains.update(chain_ids(config.diff_ids))
        for record in store.list_cache_records():
            if record.diff_id:
                live_layers.add(record.diff_id)
            if record.chain_id:
                live_chains.add(record.chain_id)

        dead_layers: list[str] = []
        for diff_id in store.list_layer_ids():
            layer = store.get_layer(diff_id)
            if layer is None:
                continue
            if diff_id in live_layers:
                live_blobs.update(b.digest for b in layer.blobs.values())
                # a pulled blob not checked yet may be the only copy of a live layer
                live_blobs.update(b.digest for b in layer.pulled)
            else:
                dead_layers.append(diff_id)

        # Files first, records after: on a full disk deleting rows needs room, and a crash in
        # between leaves dead layers' rows naming blobs that are gone (the next prune, or
        # ``store check --repair``, forgets them), never a live blob deleted.
        blobs_removed = 0
        freed = 0
        for digest in list(store.blobs.iter_digests()):
            if digest in live_blobs:
                continue
            with contextlib.suppress(OSError):
                size = store.blobs.size(digest)
                if store.blobs.delete(digest):
                    blobs_removed += 1
                    freed += size

        for diff_id in dead_layers:
            store.delete_layer(diff_id)
        layers_forgotten = len(dead_layers)

        snapshots = store.list_snapshots()
        by_chain: dict[str, list[str]] = {}
        for snap in snapshots:
            if snap.parent:
                by_chain.setdefault(snap.chain_id, []).append(snap.parent)
        pending = list(live_chains)
        while pending:
            for parent in by_chain.get(pending.pop(), ()):
                if parent not in live_chains:
                    live_chains.add(parent)
                    pending.append(parent)
        live_keys: set[str] = set()
        removed_keys: set[str] = set()
        for snap in snapshots:
            if snap.chain_id in live_chains:
                live_keys.add(snap.key)
                continue
            remover(snap.key)
            removed_keys.add(snap.key)
            store.delete_snapshot(snap.chain_id, snap.snapshotter)
        if list_snapshot_keys is not None:
            for key in list(list_snapshot_keys()):
                if key not in live_keys and key not in removed_keys:
                    remover(key)
                    removed_keys.add(key)
        snapshots_removed = len(removed_keys)

        # No writer runs under the exclusive lock, so anything in tmp/ is a leftover.
        for entry in list(store.blobs.tmp.iterdir()) if store.blobs.tmp.is_dir() else []:
            freed += _rmtree(entry)

        cache_mounts = 0
        if all_cache and store.cache_dir.is_dir():
            for entry in list(store.cache_dir.iterdir()):
                freed += _rmtree(entry)
                cache_mounts += 1

    return PruneReport(
        blobs_removed=blobs_removed,
        bytes_freed=freed,
        layers_forgotten=layers_forgotten,
        snapshots_removed=snapshots_removed,
        cache_records_removed=cache_removed,
        images_removed=images_removed,
        cache_mounts_removed=cache_mounts,
    )
