"""Layers by diff id: their stored forms (``layers``, ``layer_blobs``) and the committed
snapshots a layer's tar can be written again from (``layer_snapshots``).

A layer's ``"none"`` form is the uncompressed tar, stored as the blob whose digest is the diff
id; compressed forms are variants. With the overlay snapshotter a build step stores no tar at
all: the layer is recorded as the diff of a committed snapshot, and :meth:`Layers.ensure_blob`
writes the tar (verified against the diff id) when something needs the bytes.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockyard.errors import NotFoundError, StoreError
from dockyard.image.oci import Compression
from dockyard.store.blobs import BlobStore
from dockyard.store.database import Database

__all__ = ["LayerBlob", "LayerRecord", "LayerSnapshot", "Layers"]


@dataclass(frozen=True)
class LayerBlob:
    """One stored form of a layer."""

    compression: Compression
    digest: str
    size: int


@dataclass(frozen=True)
class LayerSnapshot:
    """A committed snapshot whose own diff *is* a layer: the tar can be made again from it.

    Only the overlay snapshotter keeps a snapshot's diff on its own (its upper dir);
    ``source_date_epoch`` is the clamp the tar writer used, needed to make the same bytes.
    """

    snapshotter: str
    chain_id: str
    source_date_epoch: int | None = None


@dataclass(frozen=True)
class LayerRecord:
    """A layer by diff id, with every stored form of it (``"none"`` is the tar itself) and
    the snapshots it can be regenerated from when no uncompressed blob is stored."""

    diff_id: str
    size: int | None
    blobs: Mapping[str, LayerBlob]
    snapshots: tuple[LayerSnapshot, ...] = ()


class Layers:
    """The layer tables. ``build_lock`` is the store's shared lock (held while a tar is
    written again from a snapshot, so no prune removes either meanwhile)."""

    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        snapshots_dir: Path,
        build_lock: Callable[[], contextlib.AbstractContextManager[None]],
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._snapshots_dir = snapshots_dir
        self._build_lock = build_lock
        self._snapshot_sources: dict[str, Any] = {}

    # --- rows written inside another concern's transaction (images.put) ---

    @staticmethod
    def record_tar(db: sqlite3.Connection, diff_id: str, size: int) -> None:
        """In transaction ``db``: layer ``diff_id`` has its uncompressed tar stored."""
        db.execute(
            "INSERT INTO layers(diff_id, size) VALUES (?,?)"
            " ON CONFLICT(diff_id) DO UPDATE SET size=excluded.size",
            (diff_id, size),
        )
        db.execute(
            "INSERT OR REPLACE INTO layer_blobs(diff_id, compression, blob, size)"
            " VALUES (?, 'none', ?, ?)",
            (diff_id, diff_id, size),
        )

    @staticmethod
    def record_form(
        db: sqlite3.Connection, diff_id: str, compression: str, blob: str, size: int
    ) -> None:
        """In transaction ``db``: ``blob`` is a ``compression`` form of layer ``diff_id``."""
        db.execute("INSERT OR IGNORE INTO layers(diff_id, size) VALUES (?, NULL)", (diff_id,))
        db.execute(
            "INSERT OR REPLACE INTO layer_blobs(diff_id, compression, blob, size) VALUES (?,?,?,?)",
            (diff_id, compression, blob, size),
        )

    # --- stored forms ---

    def put(self, diff_id: str, size: int) -> None:
        """Record an uncompressed layer: the blob ``diff_id`` (already stored), ``size`` bytes."""
        if not self._blobs.has(diff_id):
            raise NotFoundError(f"layer blob {diff_id} is not in the store")
        with self._db.write() as db:
            self.record_tar(db, diff_id, size)

    def put_blob(self, diff_id: str, compression: Compression, blob: str, size: int) -> None:
        """Record a compressed form of layer ``diff_id`` (the blob must be stored)."""
        if not self._blobs.has(blob):
            raise NotFoundError(f"layer blob {blob} is not in the store")
        with self._db.write() as db:
            self.record_form(db, diff_id, compression, blob, size)

    def get(self, diff_id: str) -> LayerRecord | None:
        """A layer, its stored forms and the snapshots it can be made from, or None."""
        db = self._db.conn
        row = db.execute("SELECT size FROM layers WHERE diff_id=?", (diff_id,)).fetchone()
        if row is None:
            return None
        blobs = {
            r[0]: LayerBlob(r[0], r[1], r[2])
            for r in db.execute(
                "SELECT compression, blob, size FROM layer_blobs WHERE diff_id=?", (diff_id,)
            )
        }
        snapshots = tuple(
            LayerSnapshot(r[0], r[1], r[2])
            for r in db.execute(
                "SELECT snapshotter, chain_id, source_date_epoch FROM layer_snapshots"
                " WHERE diff_id=? ORDER BY snapshotter, chain_id",
                (diff_id,),
            )
        )
        return LayerRecord(diff_id, row[0], blobs, snapshots)

    def list_ids(self) -> list[str]:
        """Every recorded diff id."""
        return [r[0] for r in self._db.conn.execute("SELECT diff_id FROM layers ORDER BY diff_id")]

    def delete(self, diff_id: str) -> None:
        """Forget a layer and its forms (blobs stay until prune)."""
        with self._db.write(invalidates=True) as db:
            db.execute("DELETE FROM layers WHERE diff_id=?", (diff_id,))

    # --- snapshot-backed layers ---

    def forget_blob(self, diff_id: str, compression: str) -> None:
        """Drop one stored form of a layer from the record (its blob is gone or corrupt)."""
        with self._db.write(invalidates=True) as db:
            db.execute("DELETE FROM layer_blobs WHERE diff_id=? AND compression=?",
                       (diff_id, compression))

    def put_snapshot_layer(self, diff_id: str, size: int, source: LayerSnapshot) -> None:
        """Record layer ``diff_id`` (``size`` bytes of tar) as the diff of committed snapshot
        ``source``, with no blob: :meth:`ensure_blob` writes it when something needs it."""
        with self._db.write() as db:
            db.execute(
                "INSERT INTO layers(diff_id, size) VALUES (?,?)"
                " ON CONFLICT(diff_id) DO UPDATE SET size=excluded.size",
                (diff_id, size),
            )
            db.execute(
                "INSERT OR REPLACE INTO layer_snapshots(diff_id, snapshotter, chain_id,"
                " source_date_epoch) VALUES (?,?,?,?)",
                (diff_id, source.snapshotter, source.chain_id, source.source_date_epoch),
            )

    def forget_snapshot_layers(self, chain_id: str, snapshotter: str | None = None) -> None:
        """The committed snapshot ``chain_id`` (of ``snapshotter``, or of any) is gone: no
        layer can be made from it any more."""
        with self._db.write(invalidates=True) as db:
            if snapshotter is None:
                db.execute("DELETE FROM layer_snapshots WHERE chain_id=?", (chain_id,))
            else:
                db.execute(
                    "DELETE FROM layer_snapshots WHERE chain_id=? AND snapshotter=?",
                    (chain_id, snapshotter),
                )

    def backed_by(self, chain_id: str) -> list[str]:
        """Diff ids recorded as the diff of committed snapshot ``chain_id``."""
        return [
            r[0]
            for r in self._db.conn.execute(
                "SELECT DISTINCT diff_id FROM layer_snapshots WHERE chain_id=? ORDER BY diff_id",
                (chain_id,),
            )
        ]

    def _forget_source(self, diff_id: str, source: LayerSnapshot) -> None:
        with self._db.write(invalidates=True) as db:
            db.execute(
                "DELETE FROM layer_snapshots WHERE diff_id=? AND snapshotter=? AND chain_id=?",
                (diff_id, source.snapshotter, source.chain_id),
            )

    def _snapshot_source(self, kind: str) -> Any:
        """The snapshotter named ``kind`` over this store's snapshots, if it keeps diffs."""
        cache = self._snapshot_sources
        if kind not in cache:
            if kind == "overlay":
                # Imported here: the store sits below the snapshot room, which only this
                # fallback needs (and opening it directly skips the overlay probe).
                from dockyard.snapshot.overlay import OverlaySnapshotter

                cache[kind] = OverlaySnapshotter(self._snapshots_dir)
            else:
                cache[kind] = None
        return cache[kind]

    def _live_sources(self, layer: LayerRecord) -> list[tuple[LayerSnapshot, Any]]:
        out = []
        for source in layer.snapshots:
            snap = self._snapshot_source(source.snapshotter)
            if snap is not None and source.chain_id in snap.committed():
                out.append((source, snap))
        return out

    def present(self, diff_id: str) -> bool:
        """Whether the layer's bytes can be had: a stored form, or a snapshot it is the diff of.

        Snapshot sources are taken from the database without opening the snapshotter (this
        runs for every cached step): prune drops a snapshot's rows before removing it, and
        :meth:`ensure_blob` drops rows whose snapshot turns out to be gone.
        """
        if self._blobs.has(diff_id):
            return True
        layer = self.get(diff_id)
        if layer is None:
            return False
        if any(self._blobs.has(b.digest) for b in layer.blobs.values()):
            return True
        return bool(layer.snapshots)

    def ensure_blob(self, diff_id: str) -> str:
        """Make sure the uncompressed tar of layer ``diff_id`` is a blob; returns its digest.

        The one way to the bytes of a snapshot-backed layer: the tar is written again from
        the snapshot's diff and verified against ``diff_id`` while it is written, so changed
        snapshot content raises StoreError naming the layer and never yields other bytes.
        NotFoundError if the layer has neither a blob nor a snapshot to make it from.
        """
        if self._blobs.has(diff_id):
            return diff_id
        # Shared with builds, so no prune removes the snapshot or the new blob meanwhile.
        with self._build_lock():
            if self._blobs.has(diff_id):  # written by someone else while we waited
                return diff_id
            return self._regenerate(diff_id)

    def _regenerate(self, diff_id: str) -> str:
        layer = self.get(diff_id)
        sources = self._live_sources(layer) if layer is not None else []
        if layer is not None:
            live = {s.chain_id for s, _ in sources}
            for gone in layer.snapshots:
                if gone.chain_id not in live:  # removed behind our back: stop claiming it
                    self._forget_source(diff_id, gone)
        if not sources:
            raise NotFoundError(f"layer {diff_id} is missing from the store")
        errors: list[str] = []
        for source, snap in sources:
            with self._blobs.writer() as w:
                try:
                    snap.diff(source.chain_id, w, source_date_epoch=source.source_date_epoch)
                except (OSError, StoreError) as err:
                    w.abort()
                    errors.append(f"snapshot {source.chain_id}: {err}")
                    continue
                if w.digest != diff_id:
                    errors.append(
                        f"snapshot {source.chain_id} now gives {w.digest}: its files changed"
                    )
                    w.abort()
                    continue
                digest, size = w.commit(diff_id)
            with self._db.write() as db:
                self.record_tar(db, diff_id, size)
            return str(digest)
        raise StoreError(
            f"layer {diff_id} cannot be regenerated (no blob is stored): " + "; ".join(errors)
        )
