"""Images and their names (``images``, ``names``): store, find, tag, untag, remove, and the
Docker-style views of an image (``inspect``, ``history``).

An image is its config digest (the id) and its manifest; the manifest and config are blobs,
its layers are recorded by diff id in :mod:`dockyard.store.layers`. A name is a full
reference (``docker.io/library/x:tag`` or ``...@sha256:``) and points at one image.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dockyard.errors import NotFoundError, StoreError, UsageError
from dockyard.image.oci import (
    MEDIA_TYPE_OCI_MANIFEST,
    Compression,
    Descriptor,
    ImageConfig,
    InvalidDocument,
    Manifest,
    digest_bytes,
    is_foreign_layer,
    layer_compression,
)
from dockyard.image.reference import Reference, parse_reference
from dockyard.store.blobs import BlobStore
from dockyard.store.database import Database, format_time, now
from dockyard.store.layers import Layers

__all__ = ["HistoryItem", "ImageRecord", "Images", "is_image_id"]

_ID_RE = re.compile(r"(?:sha256:)?([a-f0-9]{1,64})")


def is_image_id(text: str) -> bool:
    """Whether ``text`` looks like an image id or id prefix rather than a name."""
    return _ID_RE.fullmatch(text.strip()) is not None
_IMAGE_COLUMNS = "id, manifest_digest, manifest_media_type, manifest_size, created, added, size"


@dataclass(frozen=True)
class ImageRecord:
    """An image in the store: its id (config digest), manifest, and names."""

    id: str
    manifest_digest: str
    manifest_media_type: str
    manifest_size: int
    created: str | None
    added: float
    size: int
    names: tuple[str, ...] = ()

    @property
    def short_id(self) -> str:
        """The 12-hex-digit id Docker shows."""
        return self.id.removeprefix("sha256:")[:12]

    @property
    def descriptor(self) -> Descriptor:
        """Descriptor of the image's manifest."""
        return Descriptor(self.manifest_media_type, self.manifest_digest, self.manifest_size)

    @property
    def references(self) -> tuple[Reference, ...]:
        """The names, parsed."""
        return tuple(parse_reference(n) for n in self.names)

    @property
    def tags(self) -> tuple[Reference, ...]:
        """Names with a tag and no digest (Docker's RepoTags)."""
        return tuple(r for r in self.references if r.digest is None)

    @property
    def digests(self) -> tuple[Reference, ...]:
        """Names pinned by digest (Docker's RepoDigests)."""
        return tuple(r for r in self.references if r.digest is not None)


@dataclass(frozen=True)
class HistoryItem:
    """One row of ``history``: newest first, as ``docker history``."""

    id: str  # the image id on the top row, "<missing>" below it
    created: str | None
    created_by: str
    size: int
    comment: str
    empty_layer: bool
    author: str = ""


class Images:
    """The image and name tables, over the layer records."""

    def __init__(self, db: Database, blobs: BlobStore, layers: Layers) -> None:
        self._db = db
        self._blobs = blobs
        self._layers = layers

    def put(self, manifest: bytes, config: bytes, names: Iterable[str] = (), *,
            pulled: bool = False) -> ImageRecord:
        """Store an image: its manifest and config bytes (layer blobs must be stored already).

        Layers are recorded by diff id: an uncompressed layer blob whose digest is its diff
        id is the ``"none"`` form, a compressed one is a variant. ``pulled``: the compressed
        blobs were checked against the manifest only, not against the diff ids (a pull), so
        they are recorded as pulled blobs, to be checked on first use (``layers.py``).
        Names (normalized) move to this image. Raises StoreError for inconsistent documents
        or missing layer blobs.
        """
        try:
            parsed = Manifest.from_json(manifest)
            image_config = ImageConfig.from_json(config)
        except InvalidDocument as err:
            raise StoreError(f"cannot store image: {err}") from None
        config_digest = digest_bytes(config)
        if parsed.config.digest != config_digest or parsed.config.size != len(config):
            raise StoreError(
                f"cannot store image: the manifest names config {parsed.config.digest} "
                f"({parsed.config.size} bytes), got {config_digest} ({len(config)} bytes)"
            )
        diff_ids = image_config.diff_ids
        if len(diff_ids) != len(parsed.layers):
            raise StoreError(
                f"cannot store image: {len(parsed.layers)} layers in the manifest but "
                f"{len(diff_ids)} diff ids in the config"
            )
        layer_rows: list[tuple[str, Compression, Descriptor]] = []
        for diff_id, desc in zip(diff_ids, parsed.layers, strict=True):
            try:
                compression = layer_compression(desc.media_type)
            except InvalidDocument as err:
                raise StoreError(f"cannot store image: {err}") from None
            if (
                not is_foreign_layer(desc.media_type)
                and not self._blobs.has(desc.digest)
                and not (desc.digest == diff_id and self._layers.present(diff_id))
            ):
                raise NotFoundError(f"cannot store image: layer blob {desc.digest} is missing")
            layer_rows.append((diff_id, compression, desc))
        parsed_refs = [str(parse_reference(n)) for n in names]
        manifest_digest = self._blobs.put_bytes(manifest)
        self._blobs.put_bytes(config)
        added = now()
        with self._db.write(invalidates=bool(parsed_refs)) as db:
            size = 0
            for diff_id, compression, desc in layer_rows:
                if is_foreign_layer(desc.media_type):
                    size += desc.size
                    continue
                if compression == "none" and desc.digest == diff_id:
                    if self._blobs.has(diff_id):
                        self._layers.record_tar(db, diff_id, desc.size)
                    else:  # snapshot-backed: its row exists, no blob until one is needed
                        db.execute(
                            "UPDATE layers SET size=? WHERE diff_id=?", (desc.size, diff_id)
                        )
                elif pulled:
                    hint = self._size_hint(desc.digest) if compression == "gzip" else None
                    self._layers.record_pulled(db, diff_id, compression, desc.digest,
                                               desc.size, hint)
                else:
                    self._layers.record_form(db, diff_id, compression, desc.digest, desc.size)
                row = db.execute("SELECT size FROM layers WHERE diff_id=?", (diff_id,)).fetchone()
                if row and row[0] is not None:
                    size += row[0]
                elif self._blobs.has(diff_id):  # a pull stored the uncompressed tar already
                    size += self._blobs.size(diff_id)
                else:  # compressed only, for now: its gzip trailer's word, else its own size
                    size += self._pulled_size(db, diff_id, desc)
            db.execute(
                "INSERT INTO images(id, manifest_digest, manifest_media_type, manifest_size,"
                " created, added, size) VALUES (?,?,?,?,?,?,?)"
                " ON CONFLICT(id) DO UPDATE SET manifest_digest=excluded.manifest_digest,"
                " manifest_media_type=excluded.manifest_media_type,"
                " manifest_size=excluded.manifest_size, created=excluded.created,"
                " size=excluded.size",
                (
                    config_digest,
                    manifest_digest,
                    parsed.media_type or MEDIA_TYPE_OCI_MANIFEST,
                    len(manifest),
                    image_config.created,
                    added,
                    size,
                ),
            )
            for name in parsed_refs:
                self.set_name(db, name, config_digest, added)
        return self.get(config_digest)

    @staticmethod
    def set_name(db: sqlite3.Connection, name: str, image_id: str, when: float) -> None:
        """Point ``name`` at one image (in the caller's transaction); a multi-platform name
        stops being one (``indexes.py`` sets its entry again when it stays one)."""
        db.execute("DELETE FROM index_names WHERE name=?", (name,))
        db.execute(
            "INSERT INTO names(name, image_id, updated) VALUES (?,?,?)"
            " ON CONFLICT(name) DO UPDATE SET image_id=excluded.image_id, updated=excluded.updated",
            (name, image_id, when),
        )

    @staticmethod
    def _record(db: sqlite3.Connection, row: tuple[Any, ...]) -> ImageRecord:
        names = tuple(
            r[0]
            for r in db.execute("SELECT name FROM names WHERE image_id=? ORDER BY name", (row[0],))
        )
        return ImageRecord(
            id=row[0],
            manifest_digest=row[1],
            manifest_media_type=row[2],
            manifest_size=row[3],
            created=row[4],
            added=row[5],
            size=row[6],
            names=names,
        )

    def find(self, ref_or_id: str) -> ImageRecord | None:
        """Like :meth:`get`, but None when nothing matches."""
        db = self._db.conn
        select = f"SELECT {_IMAGE_COLUMNS} FROM images"
        text = ref_or_id.strip()
        id_match = _ID_RE.fullmatch(text)
        if id_match and len(id_match.group(1)) == 64:
            row = db.execute(f"{select} WHERE id=?", ("sha256:" + id_match.group(1),)).fetchone()
            return self._record(db, row) if row else None
        if not text.startswith("sha256:"):
            try:
                ref: Reference | None = parse_reference(text)
            except UsageError:
                ref = None
            if ref is not None:
                row = db.execute(
                    f"{select} WHERE id=(SELECT image_id FROM names WHERE name=?)", (str(ref),)
                ).fetchone()
                if row is None and ref.digest is not None:
                    row = db.execute(
                        f"{select} WHERE manifest_digest=? ORDER BY added DESC", (ref.digest,)
                    ).fetchone()
                if row is not None:
                    return self._record(db, row)
        if id_match:
            prefix = "sha256:" + id_match.group(1)
            rows = db.execute(
                f"{select} WHERE id >= ? AND id < ? LIMIT 2", (prefix, prefix + "g")
            ).fetchall()
            if len(rows) > 1:
                raise StoreError(f"image id prefix {ref_or_id!r} is ambiguous; give more digits")
            if rows:
                return self._record(db, rows[0])
        return None

    def get(self, ref_or_id: str) -> ImageRecord:
        """An image by name (``busybox``, ``x:1``, ``x@sha256:...``), id or id prefix.

        Names are looked up first, then id prefixes, as Docker does. NotFoundError if none.
        """
        record = self.find(ref_or_id)
        if record is None:
            raise NotFoundError(f"no such image: {ref_or_id}")
        return record

    def all(self) -> list[ImageRecord]:
        """Every image, newest first."""
        db = self._db.conn
        rows = db.execute(
            f"SELECT {_IMAGE_COLUMNS} FROM images ORDER BY created DESC, added DESC"
        ).fetchall()
        return [self._record(db, row) for row in rows]

    def tag(self, image_id: str, name: str) -> None:
        """Point ``name`` (normalized; default tag latest) at ``image_id``."""
        full = str(parse_reference(name))
        with self._db.write(invalidates=True) as db:
            if db.execute("SELECT 1 FROM images WHERE id=?", (image_id,)).fetchone() is None:
                raise NotFoundError(f"no such image: {image_id}")
            self.set_name(db, full, image_id, now())

    def untag(self, name: str) -> str:
        """Remove ``name``; returns the image id it pointed at. NotFoundError if unknown."""
        full = str(parse_reference(name))
        with self._db.write(invalidates=True) as db:
            row = db.execute("SELECT image_id FROM names WHERE name=?", (full,)).fetchone()
            if row is None:
                raise NotFoundError(f"no such image: {name}")
            db.execute("DELETE FROM names WHERE name=?", (full,))
            db.execute("DELETE FROM index_names WHERE name=?", (full,))
            return str(row[0])

    def remove(self, image_id: str) -> list[str]:
        """Delete an image record and all its names; returns the names removed.

        Blobs stay until ``prune``.
        """
        with self._db.write(invalidates=True) as db:
            names = [
                r[0] for r in db.execute("SELECT name FROM names WHERE image_id=?", (image_id,))
            ]
            cur = db.execute("DELETE FROM images WHERE id=?", (image_id,))
            if cur.rowcount == 0:
                raise NotFoundError(f"no such image: {image_id}")
            db.executemany("DELETE FROM index_names WHERE name=?", [(n,) for n in names])
        return names

    def last_tag_time(self, image: ImageRecord) -> float | None:
        """When a name last moved to this image."""
        row = self._db.conn.execute(
            "SELECT max(updated) FROM names WHERE image_id=?", (image.id,)
        ).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    # --- documents ---

    def manifest_bytes(self, image: ImageRecord) -> bytes:
        """The stored manifest."""
        return self._blobs.read_bytes(image.manifest_digest)

    def config_bytes(self, image: ImageRecord) -> bytes:
        """The stored config (its sha256 is the image id)."""
        return self._blobs.read_bytes(image.id)

    def read_manifest(self, image: ImageRecord) -> Manifest:
        """The image's manifest, parsed."""
        try:
            return Manifest.from_json(self.manifest_bytes(image))
        except InvalidDocument as err:
            raise StoreError(f"stored manifest of {image.short_id} is corrupt: {err}") from None

    def read_config(self, image: ImageRecord) -> ImageConfig:
        """The image's config, parsed."""
        try:
            return ImageConfig.from_json(self.config_bytes(image))
        except InvalidDocument as err:
            raise StoreError(f"stored config of {image.short_id} is corrupt: {err}") from None

    def _layer_sizes(self, manifest: Manifest, config: ImageConfig) -> list[int]:
        sizes: list[int] = []
        for diff_id, desc in zip(config.diff_ids, manifest.layers, strict=False):
            layer = self._layers.get(diff_id)
            if layer is not None and layer.size is not None:
                sizes.append(layer.size)
                continue
            hints = [p.tar_size_hint for p in layer.pulled
                     if p.digest == desc.digest] if layer is not None else []
            sizes.append(hints[0] if hints and hints[0] is not None else desc.size)
        return sizes

    def _size_hint(self, blob: str) -> int | None:
        """What a pulled gzip blob's trailer says its tar's size is (for listings)."""
        from dockyard.store.layers import gzip_size_hint

        try:
            with self._blobs.open(blob) as f:
                return gzip_size_hint(f)
        except (OSError, StoreError):
            return None

    @staticmethod
    def _pulled_size(db: sqlite3.Connection, diff_id: str, desc: Descriptor) -> int:
        """The size shown for a pulled layer not checked yet: its gzip trailer's word, else
        the compressed size."""
        row = db.execute("SELECT tar_size FROM layer_pulled WHERE diff_id=? AND blob=?",
                         (diff_id, desc.digest)).fetchone()
        return int(row[0]) if row and row[0] is not None else desc.size

    def size(self, image: ImageRecord) -> int:
        """Sum of the uncompressed layer sizes (compressed size where unknown)."""
        return sum(self._layer_sizes(self.read_manifest(image), self.read_config(image)))

    # --- Docker's views ---

    def inspect(self, image: ImageRecord) -> dict[str, Any]:
        """A Docker-style ``inspect`` object, plus ``Manifest`` and ``Descriptor``."""
        manifest_raw = self.manifest_bytes(image)
        config_raw = self.config_bytes(image)
        config = ImageConfig.from_json(config_raw)
        raw = json.loads(config_raw)
        run = config.config
        docker_config: dict[str, Any] = dict(run.extra)
        docker_config.update(
            {
                "User": run.user,
                "Env": list(run.env) or None,
                "Cmd": list(run.cmd) if run.cmd is not None else None,
                "WorkingDir": run.working_dir,
                "Entrypoint": list(run.entrypoint) if run.entrypoint is not None else None,
                "OnBuild": list(run.on_build) or None,
                "Labels": dict(run.labels) or None,
            }
        )
        if run.exposed_ports:
            docker_config["ExposedPorts"] = {p: {} for p in run.exposed_ports}
        if run.volumes:
            docker_config["Volumes"] = {v: {} for v in run.volumes}
        if run.stop_signal:
            docker_config["StopSignal"] = run.stop_signal
        if run.healthcheck is not None:
            docker_config["Healthcheck"] = run.healthcheck.to_dict()
        if run.shell is not None:
            docker_config["Shell"] = list(run.shell)
        if run.args_escaped:
            docker_config["ArgsEscaped"] = True
        comment = raw.get("comment") if isinstance(raw.get("comment"), str) else ""
        if not comment and config.history:
            comment = config.history[-1].comment
        tag_time = self.last_tag_time(image)
        out: dict[str, Any] = {
            "Id": image.id,
            "RepoTags": [r.familiar for r in image.tags],
            "RepoDigests": [r.familiar for r in image.digests],
            "Parent": "",
            "Comment": comment,
            "Created": config.created or "",
            "DockerVersion": raw.get("docker_version", "") or "",
            "Author": config.author,
            "Config": docker_config,
            "Architecture": config.architecture,
            "Os": config.os,
            "Size": image.size,
            "RootFS": {"Type": config.rootfs.type, "Layers": list(config.diff_ids)},
            "Metadata": {
                "LastTagTime": format_time(tag_time) if tag_time else "0001-01-01T00:00:00Z"
            },
            "Descriptor": image.descriptor.to_dict(),
            "Manifest": json.loads(manifest_raw),
        }
        if config.variant:
            out["Variant"] = config.variant
        if config.os_version:
            out["OsVersion"] = config.os_version
        return out

    def history(self, image: ImageRecord) -> list[HistoryItem]:
        """The image's history, newest first, with each layer's (uncompressed) size."""
        config = self.read_config(image)
        manifest = self.read_manifest(image)
        sizes = dict(zip(config.diff_ids, self._layer_sizes(manifest, config), strict=False))
        items: list[HistoryItem] = []
        for entry, diff_id in config.layer_history():
            items.append(
                HistoryItem(
                    id="<missing>",
                    created=entry.created,
                    created_by=entry.created_by,
                    size=sizes.get(diff_id, 0) if diff_id is not None else 0,
                    comment=entry.comment,
                    empty_layer=diff_id is None,
                    author=entry.author,
                )
            )
        items.reverse()
        if items:
            top = items[0]
            items[0] = HistoryItem(
                image.id,
                top.created,
                top.created_by,
                top.size,
                top.comment,
                top.empty_layer,
                top.author,
            )
        return items
