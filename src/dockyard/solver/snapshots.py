"""Layer chains as snapshots: make (lazily) and mount the filesystem of a list of diff ids.

Committed snapshots are named by the OCI chain id of their layers, so every build and every
image shares them; one is made by unpacking the layer blob on its parent the first time it is
needed. Used by the solver, ``dockyard run`` and anything else that needs an image's rootfs.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from dockyard.errors import BuildError
from dockyard.image.oci import chain_ids
from dockyard.store.db import Store


def _unique() -> str:
    """A random hex name for a temporary snapshot or directory."""
    # os.urandom rather than uuid: uuid imports platform, which costs start-up time
    return os.urandom(16).hex()


class LayerSnapshots:
    """Snapshots of layer chains in one store, safe to use from several threads."""

    def __init__(self, store: Store, snapshotter_kind: str = "auto") -> None:
        self.store = store
        self.snapshotter_kind = snapshotter_kind
        self._snap: Any = None
        self._lock = threading.Lock()
        self._chain_locks: dict[str, threading.Lock] = {}

    @property
    def snapshotter(self) -> Any:
        with self._lock:
            if self._snap is None:
                from dockyard.snapshot import open_snapshotter

                self._snap = open_snapshotter(
                    self.store.snapshots_dir, self.snapshotter_kind  # type: ignore[arg-type]
                )
            return self._snap

    def ensure(self, diff_ids: list[str]) -> str | None:
        """The committed snapshot holding ``diff_ids`` applied in order (made if missing)."""
        if not diff_ids:
            return None
        snap = self.snapshotter
        chain = chain_ids(diff_ids)[-1]
        with self._lock:
            lock = self._chain_locks.setdefault(chain, threading.Lock())
        with lock:
            if snap.exists(chain):
                return chain
            parent = self.ensure(diff_ids[:-1])
            key = f"extract-{_unique()}"
            snap.prepare(key, parent)
            try:
                with self.layer_stream(diff_ids[-1]) as stream:
                    snap.apply(key, stream)
                self.commit(key, chain)
            except BaseException:
                with contextlib.suppress(Exception):
                    snap.remove(key)
                raise
            return chain

    @property
    def keeps_diffs(self) -> bool:
        """Whether a committed snapshot holds its own diff (overlay: the upper dir), so a
        layer made from it needs no blob until its bytes are wanted."""
        return getattr(self.snapshotter, "name", "") == "overlay"

    def commit_layer(
        self, key: str, name: str, diff_id: str, size: int, source_date_epoch: int | None
    ) -> None:
        """Commit active ``key`` (whose diff is layer ``diff_id``, ``size`` bytes) as ``name``
        and record the layer as backed by it, writing no blob.

        If another build committed ``name`` first, ours is dropped; the layer is then written
        as a blob from our diff unless the store can already produce it, since the other
        snapshot may have been unpacked from a tar rather than diffed.
        """
        from dockyard.store.db import LayerSnapshot

        snap = self.snapshotter
        committed = False
        if not snap.exists(name):
            try:
                snap.commit(name, key)
                committed = True
            except Exception:
                if not snap.exists(name):
                    raise
        if committed:
            self.store.put_snapshot_layer(
                diff_id, size, LayerSnapshot(snap.name, name, source_date_epoch)
            )
            return
        try:
            if not self.store.layer_present(diff_id):
                with self.store.blobs.writer() as w:
                    snap.diff(key, w, source_date_epoch=source_date_epoch)
                    digest, written = w.commit(diff_id)
                self.store.put_layer(digest, written)
        finally:
            snap.remove(key)

    def commit(self, key: str, name: str) -> None:
        """Commit active snapshot ``key`` as ``name``; if another build did first, drop ours."""
        snap = self.snapshotter
        if snap.exists(name):
            snap.remove(key)
            return
        try:
            snap.commit(name, key)
        except Exception:
            if snap.exists(name):
                snap.remove(key)
            else:
                raise

    @contextlib.contextmanager
    def layer_stream(self, diff_id: str) -> Iterator[BinaryIO]:
        """The layer's tar stream: uncompressed if stored so, else a compressed form, else
        a blob a pull stored (checked against the diff id as it is read: a mismatch raises
        when the block ends, before anything is committed), else written (verified) from
        the snapshot it is the diff of."""
        blobs = self.store.blobs
        if blobs.has(diff_id):
            with blobs.open(diff_id) as f:
                yield f
            return
        rec = self.store.get_layer(diff_id)
        if rec is not None:
            for blob in rec.blobs.values():
                if blobs.has(blob.digest):
                    with blobs.open(blob.digest) as f:
                        yield f
                    return
            if rec.pulled and not rec.snapshots:
                with self.store.layers.open_pulled(diff_id) as f:
                    yield f
                return
            if rec.snapshots or rec.remotes:
                # written from its snapshot, or downloaded from an imported cache (lazily:
                # only now that a step needs it)
                with blobs.open(self.store.ensure_layer_blob(diff_id)) as f:
                    yield f
                return
        raise BuildError(f"layer {diff_id} is missing from the store")

    def layer_available(self, diff_id: str) -> bool:
        """Whether the layer's bytes can be had (a stored form or a snapshot)."""
        return self.store.layer_present(diff_id)

    @contextlib.contextmanager
    def view(self, diff_ids: list[str]) -> Iterator[Path]:
        """A read-only mounted view of the filesystem made of ``diff_ids``."""
        from dockyard.snapshot.base import mounted

        if not diff_ids:
            empty = self.store.root / "tmp" / f"empty-{_unique()}"
            empty.parent.mkdir(parents=True, exist_ok=True)
            empty.mkdir(mode=0o755)
            empty.chmod(0o755)  # "/" of an empty stage, as a bind mount shows it
            try:
                yield empty
            finally:
                empty.rmdir()
            return
        parent = self.ensure(diff_ids)
        key = f"view-{_unique()}"
        mounts = self.snapshotter.view(key, parent)
        try:
            with mounted(mounts, under=self.store.root / "mnt") as root:
                yield root
        finally:
            self.snapshotter.remove(key)

    @contextlib.contextmanager
    def writable(self, diff_ids: list[str]) -> Iterator[Path]:
        """A throw-away writable mount over ``diff_ids`` (``dockyard run``); removed afterwards."""
        from dockyard.snapshot.base import mounted

        parent = self.ensure(diff_ids)
        key = f"run-{_unique()}"
        mounts = self.snapshotter.prepare(key, parent)
        try:
            with mounted(mounts, under=self.store.root / "mnt") as root:
                yield root
        finally:
            self.snapshotter.remove(key)
