"""The local store: blobs on disk, everything else in SQLite.

Layout of ``<root>`` (created by :meth:`Store.open`)::

    lock                 flock file: shared by builds, exclusive for prune (see lock.py)
    dockyard.db          SQLite, WAL mode: images, names, layers, snapshots, cache, history
    statcache.db         SQLite, WAL mode: the context hasher's stat cache
    blobs/sha256/<hex>   content-addressed blobs (see blobs.py)
    tmp/                 blob temp files (emptied by prune)
    snapshots/           snapshot directories, owned by the snapshotter
    cache/               RUN --mount=type=cache directories

:class:`Store` composes one service per concern, as containerd splits content, images,
snapshots and leases, over one :class:`~dockyard.store.database.Database` (connections,
transactions, schema, the store generation):

==================  ==========================  =============================================
attribute           module                      tables
==================  ==========================  =============================================
``blobs``           ``blobs.py``                ``blobs/sha256/<hex>`` on disk
``images``          ``images.py``               ``images``, ``names``
``layers``          ``layers.py``               ``layers``, ``layer_blobs``, ``layer_snapshots``,
                                                ``layer_remotes``, ``layer_pulled``
``snapshots``       ``snapshots.py``            ``snapshots``
``cache``           ``cache.py``                ``cache_records``
``build_history``   ``history.py``              ``build_history``
``indexes``         ``indexes.py``              ``index_names`` (multi-platform names)
``stat_cache``      ``stats.py``                ``stat_cache`` (in ``statcache.db``)
==================  ==========================  =============================================

The methods of :class:`Store` itself (``get_image``, ``put_cache_record``, ...) are the
original flat API and stay: each delegates to its concern.

Processes that write blobs must hold :meth:`Store.build_lock` until the rows that reference
those blobs are committed, or ``prune`` could take a blob for garbage in between.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dockyard.errors import NotFoundError, StoreError
from dockyard.image.oci import Compression, ImageConfig, Index, Manifest
from dockyard.snapshot.topdir import spread_subdirs
from dockyard.store.blobs import BlobStore
from dockyard.store.cache import CacheRecord, CacheRecords
from dockyard.store.database import BUSY_TIMEOUT, SCHEMA_VERSION, Database, format_time
from dockyard.store.history import BuildHistory, PackedManifest
from dockyard.store.images import HistoryItem, ImageRecord, Images
from dockyard.store.indexes import Indexes
from dockyard.store.layers import LayerBlob, LayerRecord, Layers, LayerSnapshot, RemoteBlob
from dockyard.store.lock import hold_lock
from dockyard.store.perms import secure_root
from dockyard.store.reserve import ensure_reserve
from dockyard.store.snapshots import SnapshotRecord, Snapshots
from dockyard.store.stats import StatCache, StatKey

__all__ = [
    "BUSY_TIMEOUT",
    "SCHEMA_VERSION",
    "CacheRecord",
    "HistoryItem",
    "ImageRecord",
    "LayerBlob",
    "LayerRecord",
    "LayerSnapshot",
    "PackedManifest",
    "RemoteBlob",
    "SnapshotRecord",
    "StatKey",
    "Store",
    "format_time",
]


class Store:
    """The local store at ``root``. Thread-safe; several processes may share one root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = BlobStore(root)
        self.lock_path = root / "lock"
        self.database = Database(root)
        self.layers = Layers(self.database, self.blobs, self.snapshots_dir, self.build_lock)
        self.images = Images(self.database, self.blobs, self.layers)
        self.indexes = Indexes(self.database, self.blobs, self.images)
        self.snapshots = Snapshots(self.database)
        self.cache = CacheRecords(self.database)
        self.build_history = BuildHistory(self.database)
        self.stat_cache = StatCache(self.database)

    @classmethod
    def open(cls, root: Path | str) -> Store:
        """Open (creating the layout and schema if needed) the store at ``root``."""
        store = cls(Path(root))
        try:
            store.root.mkdir(parents=True, exist_ok=True)
            secure_root(store.root)  # 0700: no other user reads layers, bundles, snapshots
            store.blobs.ensure()
            store.snapshots_dir.mkdir(exist_ok=True)
            store.cache_dir.mkdir(exist_ok=True)
            (store.root / "tmp").mkdir(exist_ok=True)
            # many files are made (and deleted) below these: see dockyard/snapshot/topdir.py
            for spread in (store.snapshots_dir, store.cache_dir, store.root / "tmp"):
                spread_subdirs(spread)
            store.lock_path.touch(exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot create the store at {store.root}: {err}") from None
        store.database.init_schema()
        ensure_reserve(store.root)  # space kept back so a full disk can be freed (reserve.py)
        return store

    @property
    def snapshots_dir(self) -> Path:
        """Where snapshot directories live."""
        return self.root / "snapshots"

    @property
    def cache_dir(self) -> Path:
        """Where ``RUN --mount=type=cache`` directories live."""
        return self.root / "cache"

    @property
    def db_path(self) -> Path:
        """``<root>/dockyard.db``."""
        return self.database.path

    @property
    def stat_db_path(self) -> Path:
        """``<root>/statcache.db``."""
        return self.database.stat_path

    # --- connections, transactions, the store generation (see database.py) ---

    @property
    def _db(self) -> sqlite3.Connection:
        return self.database.conn

    @property
    def _stat_db(self) -> sqlite3.Connection:
        return self.database.stat_conn

    def _write(
        self, conn: sqlite3.Connection | None = None, *, invalidates: bool = False
    ) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self.database.write(conn, invalidates=invalidates)

    @property
    def generation_path(self) -> Path:
        """``<root>/generation``: a counter moved on by every invalidating write."""
        return self.database.generation_path

    @property
    def generation_bumps(self) -> int:
        """How many times this object moved the store generation on."""
        return self.database.generation_bumps

    def bump_generation(self) -> None:
        """Move the store generation on (see :meth:`Database.bump_generation`)."""
        self.database.bump_generation()

    def generation(self) -> str:
        """The store generation as stored (``"0"`` before the first bump)."""
        return self.database.generation()

    def close(self) -> None:
        """Close every connection this object opened (in this process)."""
        self.database.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- locks ---

    def build_lock(self, timeout: float | None = None) -> contextlib.AbstractContextManager[None]:
        """The shared lock every writer holds (many builds at once; never during a prune)."""
        return hold_lock(self.lock_path, exclusive=False, timeout=timeout, purpose="a build")

    def exclusive_lock(
        self, timeout: float | None = 30.0
    ) -> contextlib.AbstractContextManager[None]:
        """The exclusive lock ``prune`` holds (waits for running builds to finish)."""
        return hold_lock(self.lock_path, exclusive=True, timeout=timeout, purpose="prune")

    # --- images (images.py) ---

    def put_image(self, manifest: bytes, config: bytes, names: Iterable[str] = ()) -> ImageRecord:
        """Store an image (see :meth:`Images.put`)."""
        return self.images.put(manifest, config, names)

    def find_image(self, ref_or_id: str, platform: str | None = None) -> ImageRecord | None:
        """An image by name, id or id prefix, or None (see :meth:`Images.find`); with
        ``platform``, that platform's (:meth:`Indexes.find_for_platform`)."""
        if platform is not None:
            return self.indexes.find_for_platform(ref_or_id, platform)
        return self.images.find(ref_or_id)

    def get_image(self, ref_or_id: str, platform: str | None = None) -> ImageRecord:
        """An image by name, id or id prefix; NotFoundError if none (:meth:`Images.get`).

        A multi-platform name gives its default image (the host's platform, else its first),
        or with ``platform`` (``os/arch[/variant]``) that platform's; a single-platform image
        answers ``platform`` only if it is for that platform.
        """
        if platform is None:
            return self.images.get(ref_or_id)
        record = self.indexes.find_for_platform(ref_or_id, platform)
        if record is None:
            if self.images.find(ref_or_id) is not None:
                have = ", ".join(self.image_platforms(ref_or_id)) or "other platforms"
                raise NotFoundError(f"no image for {platform} in {ref_or_id} (it has {have})")
            raise NotFoundError(f"no such image: {ref_or_id}")
        return record

    # --- multi-platform names (indexes.py) ---

    def put_index(self, index: bytes, names: Iterable[str] = ()) -> str:
        """Store an image index under ``names``; returns its digest (:meth:`Indexes.put`)."""
        return self.indexes.put(index, tuple(names))

    def put_platform_images(
        self, images: Iterable[tuple[str, str]], names: Iterable[str] = ()
    ) -> str:
        """An index of stored ``(platform, image id)`` pairs under ``names``; its digest."""
        return self.indexes.put_images(list(images), tuple(names))

    def get_index(self, name: str) -> tuple[str, Index] | None:
        """``(digest, index)`` when ``name`` is a multi-platform image, else None."""
        return self.indexes.get(name)

    def index_images(self, name: str) -> list[tuple[str, ImageRecord]]:
        """``(platform, image)`` of each platform of ``name`` in the store."""
        return self.indexes.images_of(name)

    def image_platforms(self, name: str) -> list[str]:
        """The platforms ``name`` has in the store."""
        return [plat for plat, _ in self.indexes.images_of(name)]

    def list_index_names(self) -> list[tuple[str, str]]:
        """Every ``(name, index digest)`` of a multi-platform image."""
        return self.indexes.names()

    def indexed_image_ids(self) -> set[str]:
        """The ids of every image a multi-platform name holds."""
        return self.indexes.held_image_ids()

    def list_images(self) -> list[ImageRecord]:
        """Every image, newest first."""
        return self.images.all()

    def tag(self, image_id: str, name: str) -> None:
        """Point ``name`` (normalized; default tag latest) at ``image_id``."""
        self.images.tag(image_id, name)

    def untag(self, name: str) -> str:
        """Remove ``name``; returns the image id it pointed at. NotFoundError if unknown."""
        return self.images.untag(name)

    def remove_image(self, image_id: str) -> list[str]:
        """Delete an image record and all its names; returns the names removed."""
        return self.images.remove(image_id)

    def last_tag_time(self, image: ImageRecord) -> float | None:
        """When a name last moved to this image."""
        return self.images.last_tag_time(image)

    def manifest_bytes(self, image: ImageRecord) -> bytes:
        """The stored manifest."""
        return self.images.manifest_bytes(image)

    def config_bytes(self, image: ImageRecord) -> bytes:
        """The stored config (its sha256 is the image id)."""
        return self.images.config_bytes(image)

    def read_manifest(self, image: ImageRecord) -> Manifest:
        """The image's manifest, parsed."""
        return self.images.read_manifest(image)

    def read_config(self, image: ImageRecord) -> ImageConfig:
        """The image's config, parsed."""
        return self.images.read_config(image)

    def image_size(self, image: ImageRecord) -> int:
        """Sum of the uncompressed layer sizes (compressed size where unknown)."""
        return self.images.size(image)

    def inspect_image(self, image: ImageRecord) -> dict[str, Any]:
        """A Docker-style ``inspect`` object, plus ``Manifest`` and ``Descriptor``."""
        return self.images.inspect(image)

    def history(self, image: ImageRecord) -> list[HistoryItem]:
        """The image's history, newest first, with each layer's (uncompressed) size."""
        return self.images.history(image)

    # --- layers (layers.py) ---

    def put_layer(self, diff_id: str, size: int) -> None:
        """Record an uncompressed layer: the blob ``diff_id`` (already stored), ``size`` bytes."""
        self.layers.put(diff_id, size)

    def put_layer_blob(self, diff_id: str, compression: Compression, blob: str, size: int) -> None:
        """Record a compressed form of layer ``diff_id`` (the blob must be stored)."""
        self.layers.put_blob(diff_id, compression, blob, size)

    def put_layer_blobs(self, forms: Sequence[tuple[str, Compression, str, int]]) -> None:
        """:meth:`put_layer_blob` for each ``(diff_id, compression, blob, size)``, in one
        transaction."""
        self.layers.put_blobs(forms)

    def get_layer(self, diff_id: str) -> LayerRecord | None:
        """A layer, its stored forms and the snapshots it can be made from, or None."""
        return self.layers.get(diff_id)

    def put_snapshot_layer(self, diff_id: str, size: int, source: LayerSnapshot) -> None:
        """Record layer ``diff_id`` as the diff of committed snapshot ``source``, no blob."""
        self.layers.put_snapshot_layer(diff_id, size, source)

    def forget_snapshot_layers(self, chain_id: str, snapshotter: str | None = None) -> None:
        """The committed snapshot ``chain_id`` is gone: no layer can be made from it."""
        self.layers.forget_snapshot_layers(chain_id, snapshotter)

    def layers_backed_by(self, chain_id: str) -> list[str]:
        """Diff ids recorded as the diff of committed snapshot ``chain_id``."""
        return self.layers.backed_by(chain_id)

    def layer_present(self, diff_id: str) -> bool:
        """Whether the layer's bytes can be had (see :meth:`Layers.present`)."""
        return self.layers.present(diff_id)

    def ensure_layer_blob(self, diff_id: str) -> str:
        """Make sure the uncompressed tar of ``diff_id`` is a blob (:meth:`Layers.ensure_blob`)."""
        return self.layers.ensure_blob(diff_id)

    def list_layer_ids(self) -> list[str]:
        """Every recorded diff id."""
        return self.layers.list_ids()

    def delete_layer(self, diff_id: str) -> None:
        """Forget a layer and its forms (blobs stay until prune)."""
        self.layers.delete(diff_id)

    # --- snapshots (snapshots.py) ---

    def put_snapshot(self, record: SnapshotRecord) -> None:
        """Record (or replace) a committed snapshot."""
        self.snapshots.put(record)

    def get_snapshot(self, chain_id: str, snapshotter: str) -> SnapshotRecord | None:
        """The snapshot of ``chain_id`` made by ``snapshotter``, or None."""
        return self.snapshots.get(chain_id, snapshotter)

    def touch_snapshot(self, chain_id: str, snapshotter: str, when: float | None = None) -> None:
        """Mark a snapshot used now."""
        self.snapshots.touch(chain_id, snapshotter, when)

    def list_snapshots(self, snapshotter: str | None = None) -> list[SnapshotRecord]:
        """Every snapshot record (of one snapshotter, if given)."""
        return self.snapshots.all(snapshotter)

    def delete_snapshot(self, chain_id: str, snapshotter: str) -> None:
        """Forget a snapshot record (the directory is the snapshotter's to remove)."""
        self.snapshots.delete(chain_id, snapshotter)

    # --- build cache (cache.py) ---

    def put_cache_record(self, record: CacheRecord) -> None:
        """Record (or replace) a cache entry; zero times become now."""
        self.cache.put(record)

    def get_cache_record(self, key: str) -> CacheRecord | None:
        """The cache entry for ``key``, or None."""
        return self.cache.get(key)

    def touch_cache_record(self, key: str, when: float | None = None) -> None:
        """Mark a cache entry used (for ``cache prune --older-than``)."""
        self.cache.touch(key, when)

    def list_cache_records(self) -> list[CacheRecord]:
        """Every cache entry, least recently used first."""
        return self.cache.all()

    def delete_cache_records(self, keys: Iterable[str]) -> int:
        """Delete the entries with these keys; returns how many existed."""
        return self.cache.delete(keys)

    def delete_all_cache_records(self) -> int:
        """Drop the whole build cache index (layers go at the next prune)."""
        return self.cache.delete_all()

    # --- build history (history.py) ---

    def get_build_history(self, dockerfile: str, target: str) -> dict[str, Any] | None:
        """What the last build of ``dockerfile`` (a path string) and ``target`` recorded."""
        return self.build_history.get(dockerfile, target)

    def put_build_history(self, dockerfile: str, target: str, info: Mapping[str, Any]) -> None:
        """Replace the last-build record of ``dockerfile`` and ``target``."""
        self.build_history.put(dockerfile, target, info)

    # --- stat cache (stats.py) ---

    def stat_get_many(self, keys: Iterable[StatKey]) -> dict[StatKey, str]:
        """Digests of the files whose stat is unchanged since they were hashed."""
        return self.stat_cache.get_many(keys)

    def stat_get(self, key: StatKey) -> str | None:
        """The digest for one unchanged file, or None."""
        return self.stat_cache.get(key)

    def stat_put_many(self, entries: Iterable[tuple[StatKey, str]]) -> None:
        """Remember (stat key -> sha256 digest) for files just hashed."""
        self.stat_cache.put_many(entries)

    def stat_clear(self) -> None:
        """Forget the whole stat cache."""
        self.stat_cache.clear()
