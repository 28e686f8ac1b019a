"""The compressed blobs a pull stored, checked against their layer's diff id on first use.

A pull keeps each layer as the registry's compressed blob only (``layer_pulled``), verified
against the manifest's digest and size but not against the config's diff id, as containerd
keeps it. The diff id is checked the first time the layer is needed uncompressed: while it
is unpacked (:meth:`PulledForms.open_pulled`, the stream checked when it ends, before the
snapshot is committed), when its tar is written (:meth:`~dockyard.store.layers.Layers.
ensure_blob`, which inflates stored compressed blobs through :meth:`PulledForms.inflate`),
or before a push or an export takes the blob as the layer's compressed form
(:meth:`PulledForms.checked_form`) or a build's manifest needs the layer's size
(:meth:`PulledForms.check_pulled`). Until then the blob is no form of the layer for anyone
else; once it matched it becomes one (``layer_blobs``) and the layer's size is known. A blob
that does not match raises StoreError naming the layer, the blob and the images that use it,
and nothing is kept from it: no tar blob, no committed snapshot, the rows as they were.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, BinaryIO

from dockyard.errors import DockyardError, LayerError, StoreError
from dockyard.store.blobs import BlobStore
from dockyard.store.database import Database

if TYPE_CHECKING:
    from dockyard.store.layers import LayerBlob, LayerRecord, Layers

__all__ = ["CheckedTar", "PulledForms", "gzip_size_hint", "joined"]


class PulledForms:
    """Inflating and checking the compressed blobs of the layers of ``layers``."""

    def __init__(self, db: Database, blobs: BlobStore, layers: Layers) -> None:
        self._db = db
        self._blobs = blobs
        self._layers = layers

    def compressed(self, layer: LayerRecord) -> list[tuple[LayerBlob, bool]]:
        """The stored compressed blobs of ``layer`` to inflate, each with whether it is a
        pulled blob still to be checked: the layer's forms first."""
        out = [(b, False) for k, b in sorted(layer.blobs.items())
               if k != "none" and self._blobs.has(b.digest)]
        out += [(b, True) for b in layer.pulled if self._blobs.has(b.digest)]
        return out

    def inflate(self, diff_id: str, form: LayerBlob, pulled: bool) -> str:
        """Write the tar of ``diff_id`` from compressed blob ``form``, verified; record it
        (and a pulled blob that matched as a form of the layer)."""
        with self._blobs.writer() as w, self._blobs.open(form.digest) as raw:
            try:
                tar = CheckedTar(raw)
                while chunk := tar.read(_CHUNK):
                    w.write(chunk)
            except (LayerError, OSError) as err:
                w.abort()
                raise self.broken(diff_id, form, pulled, str(err)) from None
            if tar.digest != diff_id:
                w.abort()
                raise self.broken(diff_id, form, pulled, f"it decompresses to {tar.digest}")
            digest, size = w.commit(diff_id, tar.size)
        with self._db.write() as db:
            self._layers.record_tar(db, diff_id, size)
            if pulled:
                self.matched(db, diff_id, form, size)
        return str(digest)

    def matched(self, db: sqlite3.Connection, diff_id: str, form: LayerBlob,
                 size: int) -> None:
        """In transaction ``db``: pulled blob ``form`` matched ``diff_id`` (``size`` bytes of
        tar): it is a form of the layer from now on."""
        db.execute("UPDATE layers SET size=? WHERE diff_id=?", (size, diff_id))
        db.execute(
            "INSERT OR REPLACE INTO layer_blobs(diff_id, compression, blob, size)"
            " VALUES (?,?,?,?)",
            (diff_id, form.compression, form.digest, form.size),
        )
        db.execute("DELETE FROM layer_pulled WHERE diff_id=? AND blob=?", (diff_id, form.digest))

    def broken(self, diff_id: str, form: LayerBlob, pulled: bool, why: str) -> StoreError:
        """The error for compressed blob ``form`` that does not give layer ``diff_id``:
        ``why`` is "it decompresses to sha256:..." or the decompressor's complaint."""
        if not pulled:
            return StoreError(f"layer {diff_id}: its stored {form.compression} blob "
                              f"{form.digest} is damaged: {why}")
        users = self._images_with(form.digest)
        of = f" of {', '.join(users)}" if users else ""
        what = (f"{why.removeprefix('it ')}, not to this diff_id"
                if why.startswith("it decompresses") else f"is not a layer ({why})")
        return StoreError(
            f"layer {diff_id}{of} does not match its diff_id: the blob {form.digest}, as "
            f"pulled, {what}. The image is corrupt or was tampered with where it was pulled "
            "from; nothing of this layer was unpacked or kept. Remove the image (dockyard "
            "rmi) and pull it again from a source you trust")

    def _images_with(self, blob: str) -> list[str]:
        """Names (else short ids) of the images whose manifest lists layer blob ``blob``."""
        import json

        db = self._db.conn
        found: list[str] = []
        for image_id, manifest_digest in db.execute(
                "SELECT id, manifest_digest FROM images ORDER BY added").fetchall():
            try:
                layers = json.loads(self._blobs.read_bytes(manifest_digest)).get("layers", [])
            except (DockyardError, OSError, ValueError, AttributeError):
                continue
            if not any(isinstance(d, dict) and d.get("digest") == blob for d in layers):
                continue
            names = [r[0] for r in db.execute(
                "SELECT name FROM names WHERE image_id=? ORDER BY name", (image_id,))]
            found += [n for n in names if "@" not in n] or names or [image_id[7:19]]
        return found

    def check_pulled(self, diff_id: str) -> LayerRecord | None:
        """Check the blobs pulls stored for layer ``diff_id`` against it now, when it has no
        stored form that tells its size: inflated and hashed, nothing written. The first that
        matches becomes a form of the layer (and gives its size); the others stay as they
        are. Returns the layer as it is afterwards; raises StoreError (see
        :meth:`ensure_blob`) when none matches and the layer has no other source."""
        layer = self._layers.get(diff_id)
        if layer is None or not layer.pulled:
            return layer
        failed: list[StoreError] = []
        for form in layer.pulled:
            if not self._blobs.has(form.digest):
                continue
            try:
                with self._blobs.open(form.digest) as raw:
                    tar = CheckedTar(raw)
                    tar.drain()
            except (LayerError, OSError) as err:
                failed.append(self.broken(diff_id, form, True, str(err)))
                continue
            if tar.digest != diff_id:
                failed.append(self.broken(diff_id, form, True,
                                           f"it decompresses to {tar.digest}"))
                continue
            with self._db.write() as db:
                self.matched(db, diff_id, form, tar.size)
            return self._layers.get(diff_id)
        if failed and not (self._blobs.has(diff_id) or layer.snapshots or layer.remotes
                           or any(self._blobs.has(b.digest) for b in layer.blobs.values())):
            raise joined(failed)
        return layer

    def checked_form(self, diff_id: str, compression: str,
                     layer: LayerRecord | None = None) -> LayerBlob | None:
        """The stored ``compression`` form of layer ``diff_id``, or None. A blob a pull
        stored counts only once it matched the diff id: checked now if it is the only one
        (inflated and hashed, nothing written), and None when it does not match (a push or
        an export then makes the form from the layer's tar, which fails with that error if
        there is no other way to it). ``layer``: its record, when the caller has it."""
        layer = layer or self._layers.get(diff_id)
        if layer is None:
            return None
        form = layer.blobs.get(compression)
        if form is not None and self._blobs.has(form.digest):
            return form
        if any(p.compression == compression for p in layer.pulled):
            with contextlib.suppress(StoreError):
                layer = self.check_pulled(diff_id)
            form = layer.blobs.get(compression) if layer is not None else None
            if form is not None and self._blobs.has(form.digest):
                return form
        return None

    @contextlib.contextmanager
    def open_pulled(self, diff_id: str) -> Iterator[BinaryIO]:
        """The tar of a layer that only a pulled blob holds, decompressed as it is read, for
        an unpack: the whole stream is checked against ``diff_id`` when the block ends, and a
        mismatch raises StoreError (see :meth:`ensure_blob`) *after* the caller consumed it,
        so the caller must undo its work when the block raises (an unpacked snapshot is
        never committed). On a match the blob becomes a form of the layer. Several pulled
        blobs to choose from (or none) go through :meth:`ensure_blob`, which tries each."""
        layer = self._layers.get(diff_id)
        candidates = [p for p in layer.pulled if self._blobs.has(p.digest)] if layer else []
        if len(candidates) != 1:
            with self._blobs.open(self._layers.ensure_blob(diff_id)) as f:
                yield f
            return
        form = candidates[0]
        with self._blobs.open(form.digest) as raw:
            try:
                tar = CheckedTar(raw)
            except LayerError as err:
                raise self.broken(diff_id, form, True, str(err)) from None
            try:
                yield tar  # type: ignore[misc]
                tar.drain()
            except LayerError as err:
                # an unsafe or corrupt tar: say so, unless the bytes were not the layer's
                with contextlib.suppress(LayerError, OSError):
                    tar.drain()
                    if tar.digest != diff_id:
                        raise self.broken(diff_id, form, True,
                                           f"it decompresses to {tar.digest}") from err
                if tar.error is not None:
                    raise self.broken(diff_id, form, True, str(err)) from err
                raise
        if tar.digest != diff_id:
            raise self.broken(diff_id, form, True, f"it decompresses to {tar.digest}")
        with self._db.write() as db:
            self.matched(db, diff_id, form, tar.size)


_CHUNK = 1 << 20


def gzip_size_hint(f: BinaryIO) -> int | None:
    """The uncompressed size a gzip file's trailer states (ISIZE, the size modulo 2**32 of
    its last member, as ``gzip -l`` shows), or None if ``f`` is no gzip file."""
    try:
        if f.read(2) != b"\x1f\x8b":
            return None
        f.seek(-4, 2)
        tail = f.read(4)
    except OSError:
        return None
    return int.from_bytes(tail, "little") if len(tail) == 4 else None


def joined(errors: Sequence[StoreError]) -> StoreError:
    if len(errors) == 1:
        return errors[0]
    return StoreError("; ".join(str(e) for e in errors))


class CheckedTar:
    """The uncompressed bytes of a stored compressed blob (any compression, by its magic),
    hashed and counted as they are read: the diff id to check once the stream is done.
    ``error`` is the decompressor's failure, if it failed."""

    def __init__(self, raw: BinaryIO) -> None:
        # Imported here: only a pulled layer's first use decompresses in the store room.
        from dockyard.layers.compress import open_decompressed

        self.error: LayerError | None = None
        try:
            self._inner = open_decompressed(raw)
        except LayerError as err:
            self.error = err
            raise
        self._sha = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        try:
            data = self._inner.read(n)
        except LayerError as err:
            self.error = err
            raise
        self._sha.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self._sha.hexdigest()
