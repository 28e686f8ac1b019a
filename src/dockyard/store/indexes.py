"""Multi-platform names (``index_names``): a name that stands for an image index.

An index (manifest list) is a blob; its platform images are ordinary images of
:mod:`dockyard.store.images`, found by their manifest digest, so a pulled index may hold only
the platforms that were pulled. A name in ``index_names`` also names the index's *default*
image in ``names`` (the host's platform when present, else the first present one), so every
single-platform reader (``run``, ``cp``, ``history``) sees one image; readers that know the
platform they want ask :meth:`Indexes.find_for_platform`. Moving a name to a single image
(``Images.tag``, ``put``) or removing it drops its index entry.
"""

from __future__ import annotations

import contextlib

from dockyard.errors import NotFoundError, StoreError, UsageError
from dockyard.image.oci import Descriptor, Index, InvalidDocument, Platform, is_manifest
from dockyard.image.reference import parse_reference
from dockyard.store.blobs import BlobStore
from dockyard.store.database import Database, now
from dockyard.store.images import ImageRecord, Images, is_image_id

__all__ = ["Indexes"]


class Indexes:
    """The ``index_names`` table: multi-platform names over :class:`Images`."""

    def __init__(self, db: Database, blobs: BlobStore, images: Images) -> None:
        self.db = db
        self.blobs = blobs
        self.images = images

    def put(self, index: bytes, names: list[str] | tuple[str, ...] = ()) -> str:
        """Store an image index (manifest list) and point ``names`` at it; returns its digest.

        The platform images must be stored already (``Images.put`` without names), at least
        one of them. Each name also names the index's default image (see the module doc).
        """
        try:
            parsed = Index.from_json(index)
        except InvalidDocument as err:
            raise StoreError(f"cannot store index: {err}") from None
        refs = [str(parse_reference(n)) for n in names]
        present = self._present(parsed)
        if not present:
            raise NotFoundError("cannot store index: none of its images is in the store")
        host = str(Platform.host())
        default = next((img for plat, img in present if plat == host), present[0][1])
        digest = self.blobs.put_bytes(index)
        with self.db.write(invalidates=bool(refs)) as conn:
            for name in refs:
                self.images.set_name(conn, name, default, now())
                conn.execute(
                    "INSERT INTO index_names(name, index_digest, updated) VALUES (?,?,?)"
                    " ON CONFLICT(name) DO UPDATE SET index_digest=excluded.index_digest,"
                    " updated=excluded.updated", (name, digest, now()))
        return digest

    def put_images(self, images: list[tuple[str, str]], names: list[str] | tuple[str, ...] = ()
                   ) -> str:
        """An OCI index of stored images (``(os/arch[/variant], image id)`` pairs, in order),
        stored under ``names`` (:meth:`put`); returns its digest."""
        descs = []
        for platform, image_id in images:
            record = self.images.get(image_id)
            descs.append(Descriptor(record.manifest_media_type, record.manifest_digest,
                                    record.manifest_size,
                                    platform=Platform.parse(platform).normalized()))
        if not descs:
            raise UsageError("an image index needs at least one image")
        return self.put(Index(tuple(descs)).to_json(), names)

    def _present(self, index: Index) -> list[tuple[str, str]]:
        """``(platform, image id)`` of the index's images that are in the store, in order."""
        out: list[tuple[str, str]] = []
        conn = self.db.conn
        for desc in index.manifests:
            if desc.platform is None or not is_manifest(desc.media_type):
                continue
            row = conn.execute(
                "SELECT id FROM images WHERE manifest_digest=? ORDER BY added DESC",
                (desc.digest,)).fetchone()
            if row is not None:
                out.append((str(desc.platform.normalized()), str(row[0])))
        return out

    def get(self, name: str) -> tuple[str, Index] | None:
        """``(digest, index)`` when ``name`` (or ``name@digest``) is a multi-platform image."""
        try:
            full = str(parse_reference(name.strip()))
        except UsageError:
            return None
        row = self.db.conn.execute(
            "SELECT index_digest FROM index_names WHERE name=?", (full,)).fetchone()
        if row is None:
            return None
        try:
            return str(row[0]), Index.from_json(self.blobs.read_bytes(str(row[0])))
        except (InvalidDocument, OSError, StoreError) as err:
            raise StoreError(f"stored index of {name} is unreadable: {err}") from None

    def images_of(self, name: str) -> list[tuple[str, ImageRecord]]:
        """``(platform, image)`` of each platform of ``name`` in the store, in index order;
        for a single-platform name, its one image with its config's platform."""
        found = self.get(name)
        if found is None:
            image = self.images.find(name)
            if image is None:
                return []
            return [(str(self.images.read_config(image).platform.normalized()), image)]
        return [(plat, self.images.get(image_id)) for plat, image_id in self._present(found[1])]

    def names(self) -> list[tuple[str, str]]:
        """Every ``(name, index digest)``."""
        return [(str(r[0]), str(r[1])) for r in self.db.conn.execute(
            "SELECT name, index_digest FROM index_names ORDER BY name")]

    def held_image_ids(self) -> set[str]:
        """The ids of every image a multi-platform name holds."""
        out: set[str] = set()
        for name, _digest in self.names():
            with contextlib.suppress(StoreError, NotFoundError):
                out.update(image.id for _plat, image in self.images_of(name))
        return out

    def find_for_platform(self, ref_or_id: str, platform: str) -> ImageRecord | None:
        """``ref_or_id``'s image for ``platform``: that entry of a multi-platform name, else
        the named image if its config is for that platform, else None."""
        want = str(Platform.parse(platform))
        found = None if is_image_id(ref_or_id) else self.get(ref_or_id)
        if found is not None:
            for plat, image_id in self._present(found[1]):
                if plat == want:
                    return self.images.get(image_id)
            return None
        image = self.images.find(ref_or_id)
        if image is None:
            return None
        try:
            have = str(self.images.read_config(image).platform.normalized())
        except StoreError:
            return None
        return image if have == want else None
