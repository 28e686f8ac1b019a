"""Layers by diff id: their stored forms (``layers``, ``layer_blobs``) and the committed
snapshots a layer's tar can be written again from (``layer_snapshots``).

A layer's ``"none"`` form is the uncompressed tar, stored as the blob whose digest is the diff
id; compressed forms are variants. With the overlay snapshotter a build step stores no tar at
all: the layer is recorded as the diff of a committed snapshot, and :meth:`Layers.ensure_blob`
writes the tar (verified against the diff id) when something needs the bytes.

A layer found in an imported build cache (``--cache-from``) is recorded by where its blob is
kept (``layer_remotes``: a registry repository or an OCI layout directory) and downloaded
only when its bytes are needed, again through :meth:`Layers.ensure_blob` (lazy import).

A pulled layer keeps only the registry's compressed blob (``layer_pulled``), its diff id
checked on first use (``pulled.py``).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from dockyard.errors import DockyardError, NotFoundError, StoreError
from dockyard.image.oci import Compression
from dockyard.store.blobs import BlobStore
from dockyard.store.database import Database, now
from dockyard.store.pulled import PulledForms, gzip_size_hint, joined

__all__ = ["TAR_FORMAT", "LayerBlob", "LayerRecord", "LayerSnapshot", "Layers", "PulledBlob", "RemoteBlob",
           "SnapshotTar", "gzip_size_hint"]

TAR_FORMAT = 2
"""How a snapshot's diff is written as a tar. 1 (layers recorded until 2026-12): an overlay
opaque directory (``rm -rf d && mkdir d``) is a ``.wh..wh..opq`` marker; 2: it is a whiteout
for each name it hides, as BuildKit and the native snapshotter write it. A layer is always
written again in the form its diff id was computed in."""
_IN_BATCH = 500  # diff ids per ``IN (...)`` (SQLite allows 999 variables before 3.32)


@dataclass(frozen=True)
class LayerBlob:
    """One stored form of a layer."""

    compression: Compression
    digest: str
    size: int


@dataclass(frozen=True)
class PulledBlob(LayerBlob):
    """A compressed blob a pull stored for a layer, its diff id not checked yet.
    ``tar_size_hint``: what its gzip trailer says the tar's size is (``gzip -l``: exact for
    one member under 4 GiB), for listings only; None when it has none."""

    tar_size_hint: int | None = None


@dataclass(frozen=True)
class LayerSnapshot:
    """A committed snapshot whose own diff *is* a layer: the tar can be made again from it.

    Only the overlay snapshotter keeps a snapshot's diff on its own (its upper dir);
    ``source_date_epoch`` is the clamp the tar writer used, needed to make the same bytes,
    and ``tar_format`` the form it wrote (:data:`TAR_FORMAT`).
    """

    snapshotter: str
    chain_id: str
    source_date_epoch: int | None = None
    tar_format: int = TAR_FORMAT


@dataclass(frozen=True)
class RemoteBlob:
    """A form of a layer that is kept elsewhere and downloaded when its bytes are needed.

    ``source`` is ``registry://DOMAIN/REPO`` (a registry repository) or
    ``oci-layout:///DIR`` (an OCI layout directory, as ``--cache-to type=local`` writes)."""

    digest: str
    media_type: str
    size: int
    source: str


@dataclass(frozen=True)
class LayerRecord:
    """A layer by diff id, with every stored form of it (``"none"`` is the tar itself), the
    snapshots it can be regenerated from when no uncompressed blob is stored, where it can be
    downloaded from (``remotes``) and the compressed blobs pulls stored for it whose diff id
    is not checked yet (``pulled``: no form of the layer until they match)."""

    diff_id: str
    size: int | None
    blobs: Mapping[str, LayerBlob]
    snapshots: tuple[LayerSnapshot, ...] = ()
    remotes: tuple[RemoteBlob, ...] = ()
    pulled: tuple[PulledBlob, ...] = ()


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
        self.pulled = PulledForms(db, blobs, self)

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

    @staticmethod
    def record_pulled(
        db: sqlite3.Connection, diff_id: str, compression: str, blob: str, size: int,
        tar_size_hint: int | None = None,
    ) -> None:
        """In transaction ``db``: a pull stored ``blob`` for layer ``diff_id`` (verified
        against the manifest's digest only). Nothing when it is a form of the layer already."""
        db.execute("INSERT OR IGNORE INTO layers(diff_id, size) VALUES (?, NULL)", (diff_id,))
        if db.execute("SELECT 1 FROM layer_blobs WHERE diff_id=? AND blob=?",
                      (diff_id, blob)).fetchone():
            return
        db.execute(
            "INSERT OR IGNORE INTO layer_pulled(diff_id, blob, compression, size, tar_size,"
            " added) VALUES (?,?,?,?,?,?)",
            (diff_id, blob, compression, size, tar_size_hint, now()),
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

    def put_blobs(self, forms: Sequence[tuple[str, Compression, str, int]]) -> None:
        """:meth:`put_blob` for each ``(diff_id, compression, blob, size)``, in one
        transaction (an export of 100 fresh layers records 100 forms)."""
        for _, _, blob, _ in forms:
            if not self._blobs.has(blob):
                raise NotFoundError(f"layer blob {blob} is not in the store")
        with self._db.write() as db:
            for diff_id, compression, blob, size in forms:
                self.record_form(db, diff_id, compression, blob, size)

    def get(self, diff_id: str) -> LayerRecord | None:
        """A layer, its stored forms and the snapshots it can be made from, or None."""
        return self.get_many((diff_id,)).get(diff_id)

    def get_many(self, diff_ids: Sequence[str]) -> dict[str, LayerRecord]:
        """:meth:`get` of several layers, in five queries however many there are (an
        export of 100 layers made 500 queries, and the same again per lookup); a layer
        that is not recorded is not in the result."""
        wanted = list(dict.fromkeys(diff_ids))
        if not wanted:
            return {}
        db = self._db.conn
        sizes: dict[str, int | None] = {}
        blobs: dict[str, dict[str, LayerBlob]] = {}
        snapshots: dict[str, list[LayerSnapshot]] = {}
        remotes: dict[str, list[RemoteBlob]] = {}
        pulled: dict[str, list[PulledBlob]] = {}
        for start in range(0, len(wanted), _IN_BATCH):
            part = wanted[start:start + _IN_BATCH]
            marks = ",".join("?" * len(part))
            for r in db.execute(f"SELECT diff_id, size FROM layers WHERE diff_id IN ({marks})",
                                part):
                sizes[r[0]] = r[1]
            for r in db.execute("SELECT diff_id, compression, blob, size FROM layer_blobs"
                                f" WHERE diff_id IN ({marks})", part):
                blobs.setdefault(r[0], {})[r[1]] = LayerBlob(r[1], r[2], r[3])
            for r in db.execute(
                    "SELECT diff_id, snapshotter, chain_id, source_date_epoch, tar_format FROM"
                    f" layer_snapshots WHERE diff_id IN ({marks})"
                    " ORDER BY diff_id, snapshotter, chain_id", part):
                snapshots.setdefault(r[0], []).append(LayerSnapshot(r[1], r[2], r[3], r[4]))
            for r in db.execute(
                    "SELECT diff_id, blob, media_type, size, source FROM layer_remotes"
                    f" WHERE diff_id IN ({marks}) ORDER BY diff_id, added DESC, source", part):
                remotes.setdefault(r[0], []).append(RemoteBlob(r[1], r[2], r[3], r[4]))
            for r in db.execute(
                    "SELECT diff_id, compression, blob, size, tar_size FROM layer_pulled"
                    f" WHERE diff_id IN ({marks}) ORDER BY diff_id, added DESC, blob", part):
                pulled.setdefault(r[0], []).append(PulledBlob(r[1], r[2], r[3], r[4]))
        return {
            d: LayerRecord(d, size, blobs.get(d, {}), tuple(snapshots.get(d, ())),
                           tuple(remotes.get(d, ())), tuple(pulled.get(d, ())))
            for d, size in sizes.items()
        }

    def list_ids(self) -> list[str]:
        """Every recorded diff id."""
        return [r[0] for r in self._db.conn.execute("SELECT diff_id FROM layers ORDER BY diff_id")]

    def delete(self, diff_id: str) -> None:
        """Forget a layer and its forms (blobs stay until prune)."""
        with self._db.write(invalidates=True) as db:
            db.execute("DELETE FROM layers WHERE diff_id=?", (diff_id,))

    # --- remote-backed layers (lazy import of a build cache) ---

    def put_remote(self, diff_id: str, size: int | None, remote: RemoteBlob) -> None:
        """Record that layer ``diff_id`` (``size`` bytes of tar, if known) can be downloaded
        as ``remote``; nothing is downloaded now (:meth:`ensure_blob` does, when needed)."""
        with self._db.write() as db:
            db.execute(
                "INSERT INTO layers(diff_id, size) VALUES (?,?)"
                " ON CONFLICT(diff_id) DO UPDATE SET size=coalesce(layers.size, excluded.size)",
                (diff_id, size),
            )
            db.execute(
                "INSERT OR REPLACE INTO layer_remotes(diff_id, blob, media_type, size, source,"
                " added) VALUES (?,?,?,?,?,?)",
                (diff_id, remote.digest, remote.media_type, remote.size, remote.source, now()),
            )

    def local(self, diff_id: str) -> bool:
        """Whether the layer's bytes are on this machine (a stored form or a snapshot), not
        only somewhere to download them from."""
        if self._blobs.has(diff_id):
            return True
        layer = self.get(diff_id)
        if layer is None:
            return False
        return self._stored(layer) or bool(layer.snapshots)

    def _stored(self, layer: LayerRecord) -> bool:
        """Whether a stored form of ``layer``, or a blob a pull stored for it, is here."""
        return any(self._blobs.has(b.digest)
                   for b in (*layer.blobs.values(), *layer.pulled))

    def fetch_remote(self, diff_id: str, compression: str | None = None) -> bool:
        """Download layer ``diff_id`` from a remote form (one of ``compression`` first),
        storing its compressed blob as a form of the layer and its tar under the diff id,
        both verified. False when it has no remote form; StoreError when none can be had."""
        layer = self.get(diff_id)
        if layer is None or not layer.remotes:
            return False
        from dockyard.image.oci import InvalidDocument, layer_compression

        def rank(remote: RemoteBlob) -> int:
            try:
                return 0 if layer_compression(remote.media_type) == compression else 1
            except InvalidDocument:
                return 2

        # Imported here, as the overlay snapshotter above: downloading is the registry
        # room's (and reading an OCI layout directory the exporter's), needed only now.
        from dockyard.registry.remote import download_layer

        errors: list[str] = []
        with self._build_lock():
            for remote in sorted(layer.remotes, key=rank):
                try:
                    forms = download_layer(self._blobs, diff_id, remote)
                except DockyardError as err:
                    errors.append(str(err))
                    continue
                with self._db.write() as db:
                    for kind, digest, size in forms:
                        if kind == "none":
                            self.record_tar(db, diff_id, size)
                        else:
                            self.record_form(db, diff_id, kind, digest, size)
                return True
        raise StoreError(f"layer {diff_id} cannot be downloaded: " + "; ".join(errors))

    # --- snapshot-backed layers ---

    def forget_pulled(self, diff_id: str, blob: str) -> None:
        """Drop a blob a pull stored from the layer's record (it is gone or corrupt)."""
        with self._db.write(invalidates=True) as db:
            db.execute("DELETE FROM layer_pulled WHERE diff_id=? AND blob=?", (diff_id, blob))

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
                " source_date_epoch, tar_format) VALUES (?,?,?,?,?)",
                (diff_id, source.snapshotter, source.chain_id, source.source_date_epoch,
                 source.tar_format),
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
            if snap is not None and snap.is_committed(source.chain_id):
                out.append((source, snap))
        return out

    def present(self, diff_id: str) -> bool:
        """Whether the layer's bytes can be had: a stored form, a snapshot it is the diff of,
        or a remote form to download (an imported build cache's).

        Snapshot sources are taken from the database without opening the snapshotter (this
        runs for every cached step): prune drops a snapshot's rows before removing it, and
        :meth:`ensure_blob` drops rows whose snapshot turns out to be gone.
        """
        if self._blobs.has(diff_id):
            return True
        layer = self.get(diff_id)
        if layer is None:
            return False
        if self._stored(layer):
            return True
        return bool(layer.snapshots) or bool(layer.remotes)

    def ensure_blob(self, diff_id: str) -> str:
        """Make sure the uncompressed tar of layer ``diff_id`` is a blob; returns its digest.

        A stored compressed form is inflated, and so is a blob a pull stored (checked now:
        see the module docstring); else the tar is written again from the snapshot the
        layer is the diff of. Either way the tar is verified against ``diff_id`` while it
        is written, so other bytes raise StoreError naming the layer and are never kept.
        A layer known only by a remote form (an imported build cache's) is downloaded.
        NotFoundError if the layer has neither a blob nor a snapshot to make it from.
        """
        if self._blobs.has(diff_id):
            return diff_id
        layer = self.get(diff_id)
        failed: list[StoreError] = []
        if layer is not None and self._stored(layer):
            # Shared with builds, so no prune removes the source or the new blob meanwhile.
            with self._build_lock():
                if self._blobs.has(diff_id):
                    return diff_id
                for form, pulled in self.pulled.compressed(layer):
                    try:
                        return self.pulled.inflate(diff_id, form, pulled)
                    except StoreError as err:
                        failed.append(err)
            if failed and not layer.snapshots and not layer.remotes:
                raise joined(failed)
        try:
            return self._ensure_elsewhere(diff_id, layer)
        except StoreError as err:
            if failed:  # what the pulled blob did wrong says more than "missing"
                raise joined([*failed, err]) from None
            raise

    def _ensure_elsewhere(self, diff_id: str, layer: LayerRecord | None) -> str:
        """:meth:`ensure_blob` from a remote form or a snapshot."""
        if layer is not None and not layer.snapshots and layer.remotes:
            self.fetch_remote(diff_id)
            if self._blobs.has(diff_id):
                return diff_id
        # Shared with builds, so no prune removes the snapshot or the new blob meanwhile.
        with self._build_lock():
            if self._blobs.has(diff_id):  # written by someone else while we waited
                return diff_id
            return self._regenerate(diff_id)

    # --- pulled blobs, checked on first use (pulled.py) ---

    def check_pulled(self, diff_id: str) -> LayerRecord | None:
        """Check the blobs pulls stored for the layer now (:meth:`PulledForms.check_pulled`)."""
        return self.pulled.check_pulled(diff_id)

    def checked_form(self, diff_id: str, compression: str,
                     layer: LayerRecord | None = None) -> LayerBlob | None:
        """The layer's checked ``compression`` form, or None
        (:meth:`PulledForms.checked_form`)."""
        return self.pulled.checked_form(diff_id, compression, layer)

    def open_pulled(self, diff_id: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """The tar of a layer only a pulled blob holds, checked when the block ends
        (:meth:`PulledForms.open_pulled`)."""
        return self.pulled.open_pulled(diff_id)

    def snapshot_tars(self, diff_id: str,
                      layer: LayerRecord | None = None) -> list[SnapshotTar]:
        """The committed snapshots layer ``diff_id``'s tar can be written from (rows whose
        snapshot is gone are dropped). Use them under the build lock; their
        :meth:`SnapshotTar.write` touches no database, so it may run on another thread.
        ``layer``: its record, when the caller has it."""
        layer = layer or self.get(diff_id)
        sources = self._live_sources(layer) if layer is not None else []
        if layer is not None:
            live = {s.chain_id for s, _ in sources}
            for gone in layer.snapshots:
                if gone.chain_id not in live:  # removed behind our back: stop claiming it
                    self._forget_source(diff_id, gone)
        return [SnapshotTar(diff_id, source, snap) for source, snap in sources]

    def _regenerate(self, diff_id: str) -> str:
        sources = self.snapshot_tars(diff_id)
        if not sources:
            raise NotFoundError(f"layer {diff_id} is missing from the store")
        errors: list[str] = []
        for source in sources:
            with self._blobs.writer() as w:
                try:
                    source.write(w)
                except (OSError, StoreError) as err:
                    w.abort()
                    errors.append(str(err))
                    continue
                digest, size = w.commit(diff_id)
            with self._db.write() as db:
                self.record_tar(db, diff_id, size)
            return str(digest)
        raise StoreError(
            f"layer {diff_id} cannot be regenerated (no blob is stored): " + "; ".join(errors)
        )


@dataclass(frozen=True)
class SnapshotTar:
    """Layer ``diff_id``'s tar, to be written again from committed snapshot ``source``."""

    diff_id: str
    source: LayerSnapshot
    snapshotter: Any

    def write(self, out: BinaryIO) -> int:
        """Write the tar to ``out``; returns its size. StoreError (naming the snapshot) when
        the snapshot no longer gives ``diff_id``: the caller must then drop what it wrote."""
        chain_id = self.source.chain_id
        try:
            stats = self.snapshotter.diff(
                chain_id, out, source_date_epoch=self.source.source_date_epoch,
                opaque_markers=self.source.tar_format < 2)
        except (OSError, StoreError) as err:
            raise StoreError(f"snapshot {chain_id}: {err}") from err
        if stats.diff_id != self.diff_id:
            raise StoreError(f"snapshot {chain_id} now gives {stats.diff_id}: its files changed")
        return int(stats.size)
