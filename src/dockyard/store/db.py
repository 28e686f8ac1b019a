"""The local store: blobs on disk, everything else in SQLite.

Layout of ``<root>`` (created by :meth:`Store.open`)::

    lock                 flock file: shared by builds, exclusive for prune (see lock.py)
    dockyard.db          SQLite, WAL mode: images, names, layers, snapshots, cache, history
    statcache.db         SQLite, WAL mode: the context hasher's stat cache
    blobs/sha256/<hex>   content-addressed blobs (see blobs.py)
    tmp/                 blob temp files (emptied by prune)
    snapshots/           snapshot directories, owned by the snapshotter
    cache/               RUN --mount=type=cache directories

The stat cache has its own database file because it is the one table written in bulk on
every build (thousands of rows) and it is disposable: keeping it apart keeps those writes
from holding the main database's write lock while other builds record images and cache
entries, and a lost or corrupt stat cache only costs a rehash (it is dropped and recreated).

Concurrency: each thread gets its own connection (reopened after ``fork``), with a 30 s busy
timeout; every write is one ``BEGIN IMMEDIATE`` transaction, so concurrent writers queue
instead of failing on lock upgrades. The schema version is in the ``meta`` table; a store
written by a newer dockyard is refused rather than misread.

Processes that write blobs must hold :meth:`Store.build_lock` until the rows that reference
those blobs are committed, or ``prune`` could take a blob for garbage in between.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
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
from dockyard.snapshot.topdir import spread_subdirs
from dockyard.store.blobs import BlobStore
from dockyard.store.lock import hold_lock

__all__ = [
    "SCHEMA_VERSION",
    "CacheRecord",
    "HistoryItem",
    "ImageRecord",
    "LayerBlob",
    "LayerRecord",
    "LayerSnapshot",
    "SnapshotRecord",
    "StatKey",
    "Store",
]

SCHEMA_VERSION = 2
BUSY_TIMEOUT = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,                 -- config digest
    manifest_digest TEXT NOT NULL,
    manifest_media_type TEXT NOT NULL,
    manifest_size INTEGER NOT NULL,
    created TEXT,                        -- the config's "created"
    added REAL NOT NULL,                 -- when it entered this store (unix time)
    size INTEGER NOT NULL                -- sum of uncompressed layer sizes
);
CREATE TABLE IF NOT EXISTS names (
    name TEXT PRIMARY KEY,               -- full reference: docker.io/library/x:tag or ...@digest
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS names_by_image ON names(image_id);
CREATE TABLE IF NOT EXISTS layers (
    diff_id TEXT PRIMARY KEY,
    size INTEGER                         -- uncompressed size; NULL if only compressed is known
);
CREATE TABLE IF NOT EXISTS layer_blobs (
    diff_id TEXT NOT NULL REFERENCES layers(diff_id) ON DELETE CASCADE,
    compression TEXT NOT NULL,           -- none | gzip | zstd
    blob TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (diff_id, compression)
);
CREATE TABLE IF NOT EXISTS layer_snapshots (
    diff_id TEXT NOT NULL REFERENCES layers(diff_id) ON DELETE CASCADE,
    snapshotter TEXT NOT NULL,
    chain_id TEXT NOT NULL,              -- committed snapshot whose own diff is this layer
    source_date_epoch INTEGER,           -- the tar writer's mtime clamp when it was made
    PRIMARY KEY (diff_id, snapshotter, chain_id)
);
CREATE INDEX IF NOT EXISTS layer_snapshots_by_chain ON layer_snapshots(chain_id);
CREATE TABLE IF NOT EXISTS snapshots (
    chain_id TEXT NOT NULL,
    snapshotter TEXT NOT NULL,
    key TEXT NOT NULL,                   -- the snapshotter's key (directory below snapshots/)
    parent TEXT,                         -- parent chain id (kept alive with the child)
    size INTEGER,
    created REAL NOT NULL,
    last_used REAL NOT NULL,
    PRIMARY KEY (chain_id, snapshotter)
);
CREATE TABLE IF NOT EXISTS cache_records (
    key TEXT PRIMARY KEY,
    diff_id TEXT,                        -- layer made by the step, NULL if none
    chain_id TEXT,                       -- chain id of the filesystem after the step
    description TEXT NOT NULL,
    result TEXT NOT NULL,                -- JSON, solver-defined (config change, ...)
    explain TEXT NOT NULL,               -- JSON, solver-defined (inputs to explain misses)
    created REAL NOT NULL,
    last_used REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS cache_by_used ON cache_records(last_used);
CREATE TABLE IF NOT EXISTS build_history (
    dockerfile TEXT NOT NULL,
    target TEXT NOT NULL,
    info TEXT NOT NULL,                  -- JSON, solver-defined
    updated REAL NOT NULL,
    PRIMARY KEY (dockerfile, target)
);
"""

_STAT_SCHEMA = """
CREATE TABLE IF NOT EXISTS stat_cache (
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (dev, ino)
) WITHOUT ROWID;
"""

_ID_RE = re.compile(r"(?:sha256:)?([a-f0-9]{1,64})")


def _now() -> float:
    return time.time()


def _i64(n: int) -> int:
    """SQLite integers are signed 64-bit; inode numbers (overlay xino) may use bit 63."""
    return n - (1 << 64) if n >= (1 << 63) else n


def format_time(ts: float) -> str:
    """RFC 3339 UTC with a ``Z``, as Docker prints times."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- records ----------------------------------------------------------------------------


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


@dataclass(frozen=True)
class SnapshotRecord:
    """A committed snapshot: the filesystem after ``chain_id``, in ``snapshots/<key>``."""

    chain_id: str
    snapshotter: str
    key: str
    parent: str | None = None
    size: int | None = None
    created: float = 0.0
    last_used: float = 0.0


@dataclass(frozen=True)
class CacheRecord:
    """A build cache entry: a step's cache key -> what the step produced.

    ``result`` and ``explain`` are opaque JSON owned by the solver. The record is
    self-contained (with :meth:`to_dict`/:meth:`from_dict`) so it can be exported and
    imported as it is, together with the layer blob named by ``diff_id``.
    """

    key: str
    diff_id: str | None
    chain_id: str | None
    result: Mapping[str, Any] = field(default_factory=dict)
    explain: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    created: float = 0.0
    last_used: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON form for export."""
        return {
            "key": self.key,
            "diff_id": self.diff_id,
            "chain_id": self.chain_id,
            "result": dict(self.result),
            "explain": dict(self.explain),
            "description": self.description,
            "created": self.created,
            "last_used": self.last_used,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CacheRecord:
        """Read the JSON form."""
        return cls(
            key=str(data["key"]),
            diff_id=data.get("diff_id"),
            chain_id=data.get("chain_id"),
            result=dict(data.get("result") or {}),
            explain=dict(data.get("explain") or {}),
            description=str(data.get("description") or ""),
            created=float(data.get("created") or 0.0),
            last_used=float(data.get("last_used") or 0.0),
        )


@dataclass(frozen=True)
class StatKey:
    """What identifies an unchanged file: any change to content moves ctime."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def from_stat(cls, st: os.stat_result) -> StatKey:
        """The key of a stat result."""
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


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


# --- the store --------------------------------------------------------------------------


class Store:
    """The local store at ``root``. Thread-safe; several processes may share one root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = BlobStore(root)
        self.db_path = root / "dockyard.db"
        self.stat_db_path = root / "statcache.db"
        self.lock_path = root / "lock"
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._gen_lock = threading.Lock()
        self.generation_bumps = 0  # made by this object (see bump_generation)

    @classmethod
    def open(cls, root: Path | str) -> Store:
        """Open (creating the layout and schema if needed) the store at ``root``."""
        store = cls(Path(root))
        try:
            store.root.mkdir(parents=True, exist_ok=True)
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
        store._init_schema()
        return store

    @property
    def snapshots_dir(self) -> Path:
        """Where snapshot directories live."""
        return self.root / "snapshots"

    @property
    def cache_dir(self) -> Path:
        """Where ``RUN --mount=type=cache`` directories live."""
        return self.root / "cache"

    # --- connections and transactions ---

    def _connect(self, path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        try:
            self._set_wal(conn)
            # NORMAL in WAL mode never corrupts; a power cut may lose the last commits,
            # which leaves blobs unreferenced (pruned later), never references to nothing.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as err:
            conn.close()
            raise StoreError(f"cannot open the store database {path}: {err}") from None
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    @staticmethod
    def _set_wal(conn: sqlite3.Connection) -> None:
        """Switch to WAL. Two processes creating a store at once can make SQLite refuse the
        switch with "database is locked" at once, without its busy handler: retry then."""
        deadline = time.monotonic() + BUSY_TIMEOUT
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)

    def _conn_for(self, attr: str, path: Path) -> sqlite3.Connection:
        pid = os.getpid()
        if getattr(self._local, "pid", None) != pid:
            # A forked child must not use its parent's connections.
            self._local.__dict__.clear()
            self._local.pid = pid
            with self._conns_lock:
                self._conns = []
        conn: sqlite3.Connection | None = getattr(self._local, attr, None)
        if conn is None:
            conn = self._connect(path)
            setattr(self._local, attr, conn)
        return conn

    @property
    def _db(self) -> sqlite3.Connection:
        return self._conn_for("db", self.db_path)

    @property
    def _stat_db(self) -> sqlite3.Connection:
        return self._conn_for("stat", self.stat_db_path)

    @contextlib.contextmanager
    def _write(
        self, conn: sqlite3.Connection | None = None, *, invalidates: bool = False
    ) -> Iterator[sqlite3.Connection]:
        """A write transaction. ``invalidates``: the write can change what a build of
        unchanged inputs gives (names, cache records, deletions), so the store generation
        moves on once it is committed (see :meth:`bump_generation`)."""
        conn = self._db if conn is None else conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as err:
            raise StoreError(f"the store database is busy or unusable: {err}") from None
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            if invalidates:  # a rollback after a partial write: be safe, move on anyway
                self.bump_generation()
            raise
        conn.execute("COMMIT")
        if invalidates:
            self.bump_generation()

    # --- the store generation (the build-level up-to-date check keys on it) ---

    @property
    def generation_path(self) -> Path:
        """``<root>/generation``: a counter moved on by every invalidating write."""
        return self.root / "generation"

    def bump_generation(self) -> None:
        """Move the store generation on (under ``flock``, so concurrent bumps all count).

        Writes that can change the result of a build whose inputs did not change call this
        after committing: tags, image removal, cache records, build history, forgotten
        layers and snapshots, prune. ``dockyard.quick`` records the generation with
        a build's fingerprint and trusts the fingerprint only while it has not moved.
        """
        with self._gen_lock:
            fd = os.open(self.generation_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                raw = os.read(fd, 64)
                try:
                    value = int(raw.decode().strip() or "0") + 1
                except ValueError:  # a torn write: start from a value no record holds
                    value = int.from_bytes(os.urandom(7), "big")
                data = f"{value}\n".encode()
                os.pwrite(fd, data, 0)
                os.ftruncate(fd, len(data))
                self.generation_bumps += 1
            finally:
                os.close(fd)

    def generation(self) -> str:
        """The store generation as stored (``"0"`` before the first bump)."""
        try:
            with open(self.generation_path, "rb") as f:
                return f.read(64).decode("ascii", "replace").strip() or "0"
        except FileNotFoundError:
            return "0"

    def close(self) -> None:
        """Close every connection this object opened (in this process)."""
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local.__dict__.clear()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _init_schema(self) -> None:
        db = self._db
        try:
            has_meta = db.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone()
            got = (
                db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if has_meta
                else None
            )
        except sqlite3.DatabaseError as err:
            raise StoreError(f"the store database {self.db_path} is unusable: {err}") from None
        version = int(got[0]) if got else None
        if version is not None and version > SCHEMA_VERSION:
            raise StoreError(
                f"the store at {self.root} has schema version {version}; this dockyard "
                f"understands up to {SCHEMA_VERSION} (upgrade dockyard)"
            )
        if version != SCHEMA_VERSION:
            # Every statement is idempotent, so concurrent first opens are harmless. An
            # up-to-date store skips this: opening then costs no write (start-up is user time).
            db.executescript(_SCHEMA)
            with self._write() as tx:
                # Upgrades only add tables (a v1 store is a valid v2 store), so the newest
                # version wins; a concurrent first open writes the same value.
                tx.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema_version', ?)"
                    " ON CONFLICT(key) DO UPDATE SET value=excluded.value"
                    " WHERE CAST(value AS INTEGER) < CAST(excluded.value AS INTEGER)",
                    (str(SCHEMA_VERSION),),
                )
        try:
            stat = self._stat_db
            if (
                stat.execute("SELECT 1 FROM sqlite_master WHERE name='stat_cache'").fetchone()
                is None
            ):
                stat.executescript(_STAT_SCHEMA)
        except (sqlite3.DatabaseError, StoreError):
            # The stat cache is disposable: a damaged one is replaced, never fatal.
            self._reset_stat_cache()

    def _reset_stat_cache(self) -> None:
        conn = getattr(self._local, "stat", None)
        if conn is not None:
            conn.close()
            self._local.stat = None
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.stat_db_path}{suffix}")
        self._stat_db.executescript(_STAT_SCHEMA)

    # --- locks ---

    def build_lock(self, timeout: float | None = None) -> contextlib.AbstractContextManager[None]:
        """The shared lock every writer holds (many builds at once; never during a prune)."""
        return hold_lock(self.lock_path, exclusive=False, timeout=timeout, purpose="a build")

    def exclusive_lock(
        self, timeout: float | None = 30.0
    ) -> contextlib.AbstractContextManager[None]:
        """The exclusive lock ``prune`` holds (waits for running builds to finish)."""
        return hold_lock(self.lock_path, exclusive=True, timeout=timeout, purpose="prune")

    # --- images ---

    def put_image(self, manifest: bytes, config: bytes, names: Iterable[str] = ()) -> ImageRecord:
        """Store an image: its manifest and config bytes (layer blobs must be stored already).

        Layers are recorded by diff id: an uncompressed layer blob whose digest is its diff
        id is the ``"none"`` form, a compressed one is a variant. Names (normalized) move to
        this image. Raises StoreError for inconsistent documents or missing layer blobs.
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
                and not self.blobs.has(desc.digest)
                and not (desc.digest == diff_id and self.layer_present(diff_id))
            ):
                raise NotFoundError(f"cannot store image: layer blob {desc.digest} is missing")
            layer_rows.append((diff_id, compression, desc))
        parsed_refs = [str(parse_reference(n)) for n in names]
        manifest_digest = self.blobs.put_bytes(manifest)
        self.blobs.put_bytes(config)
        now = _now()
        with self._write(invalidates=bool(parsed_refs)) as db:
            size = 0
            for diff_id, compression, desc in layer_rows:
                if is_foreign_layer(desc.media_type):
                    size += desc.size
                    continue
                if compression == "none" and desc.digest == diff_id:
                    if self.blobs.has(diff_id):
                        self._put_layer(db, diff_id, desc.size)
                    else:  # snapshot-backed: its row exists, no blob until one is needed
                        db.execute(
                            "UPDATE layers SET size=? WHERE diff_id=?", (desc.size, diff_id)
                        )
                else:
                    self._put_layer_blob(db, diff_id, compression, desc.digest, desc.size)
                row = db.execute("SELECT size FROM layers WHERE diff_id=?", (diff_id,)).fetchone()
                size += row[0] if row and row[0] is not None else desc.size
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
                    now,
                    size,
                ),
            )
            for name in parsed_refs:
                self._set_name(db, name, config_digest, now)
        return self.get_image(config_digest)

    def _set_name(self, db: sqlite3.Connection, name: str, image_id: str, now: float) -> None:
        db.execute(
            "INSERT INTO names(name, image_id, updated) VALUES (?,?,?)"
            " ON CONFLICT(name) DO UPDATE SET image_id=excluded.image_id, updated=excluded.updated",
            (name, image_id, now),
        )

    def _record(self, db: sqlite3.Connection, row: tuple[Any, ...]) -> ImageRecord:
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

    _IMAGE_COLUMNS = "id, manifest_digest, manifest_media_type, manifest_size, created, added, size"

    def find_image(self, ref_or_id: str) -> ImageRecord | None:
        """Like :meth:`get_image`, but None when nothing matches."""
        db = self._db
        select = f"SELECT {self._IMAGE_COLUMNS} FROM images"
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

    def get_image(self, ref_or_id: str) -> ImageRecord:
        """An image by name (``busybox``, ``x:1``, ``x@sha256:...``), id or id prefix.

        Names are looked up first, then id prefixes, as Docker does. NotFoundError if none.
        """
        record = self.find_image(ref_or_id)
        if record is None:
            raise NotFoundError(f"no such image: {ref_or_id}")
        return record

    def list_images(self) -> list[ImageRecord]:
        """Every image, newest first."""
        db = self._db
        rows = db.execute(
            f"SELECT {self._IMAGE_COLUMNS} FROM images ORDER BY created DESC, added DESC"
        ).fetchall()
        return [self._record(db, row) for row in rows]

    def tag(self, image_id: str, name: str) -> None:
        """Point ``name`` (normalized; default tag latest) at ``image_id``."""
        full = str(parse_reference(name))
        with self._write(invalidates=True) as db:
            if db.execute("SELECT 1 FROM images WHERE id=?", (image_id,)).fetchone() is None:
                raise NotFoundError(f"no such image: {image_id}")
            self._set_name(db, full, image_id, _now())

    def untag(self, name: str) -> str:
        """Remove ``name``; returns the image id it pointed at. NotFoundError if unknown."""
        full = str(parse_reference(name))
        with self._write(invalidates=True) as db:
            row = db.execute("SELECT image_id FROM names WHERE name=?", (full,)).fetchone()
            if row is None:
                raise NotFoundError(f"no such image: {name}")
            db.execute("DELETE FROM names WHERE name=?", (full,))
            return str(row[0])

    def remove_image(self, image_id: str) -> list[str]:
        """Delete an image record and all its names; returns the names removed.

        Blobs stay until ``prune``.
        """
        with self._write(invalidates=True) as db:
            names = [
                r[0] for r in db.execute("SELECT name FROM names WHERE image_id=?", (image_id,))
            ]
            cur = db.execute("DELETE FROM images WHERE id=?", (image_id,))
            if cur.rowcount == 0:
                raise NotFoundError(f"no such image: {image_id}")
        return names

    def last_tag_time(self, image: ImageRecord) -> float | None:
        """When a name last moved to this image."""
        row = self._db.execute(
            "SELECT max(updated) FROM names WHERE image_id=?", (image.id,)
        ).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def manifest_bytes(self, image: ImageRecord) -> bytes:
        """The stored manifest."""
        return self.blobs.read_bytes(image.manifest_digest)

    def config_bytes(self, image: ImageRecord) -> bytes:
        """The stored config (its sha256 is the image id)."""
        return self.blobs.read_bytes(image.id)

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
            layer = self.get_layer(diff_id)
            sizes.append(layer.size if layer is not None and layer.size is not None else desc.size)
        return sizes

    def image_size(self, image: ImageRecord) -> int:
        """Sum of the uncompressed layer sizes (compressed size where unknown)."""
        return sum(self._layer_sizes(self.read_manifest(image), self.read_config(image)))

    def inspect_image(self, image: ImageRecord) -> dict[str, Any]:
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

    # --- layers ---

    def _put_layer(self, db: sqlite3.Connection, diff_id: str, size: int) -> None:
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

    def _put_layer_blob(
        self, db: sqlite3.Connection, diff_id: str, compression: str, blob: str, size: int
    ) -> None:
        db.execute("INSERT OR IGNORE INTO layers(diff_id, size) VALUES (?, NULL)", (diff_id,))
        db.execute(
            "INSERT OR REPLACE INTO layer_blobs(diff_id, compression, blob, size) VALUES (?,?,?,?)",
            (diff_id, compression, blob, size),
        )

    def put_layer(self, diff_id: str, size: int) -> None:
        """Record an uncompressed layer: the blob ``diff_id`` (already stored), ``size`` bytes."""
        if not self.blobs.has(diff_id):
            raise NotFoundError(f"layer blob {diff_id} is not in the store")
        with self._write() as db:
            self._put_layer(db, diff_id, size)

    def put_layer_blob(self, diff_id: str, compression: Compression, blob: str, size: int) -> None:
        """Record a compressed form of layer ``diff_id`` (the blob must be stored)."""
        if not self.blobs.has(blob):
            raise NotFoundError(f"layer blob {blob} is not in the store")
        with self._write() as db:
            self._put_layer_blob(db, diff_id, compression, blob, size)

    def get_layer(self, diff_id: str) -> LayerRecord | None:
        """A layer, its stored forms and the snapshots it can be made from, or None."""
        db = self._db
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

    # --- snapshot-backed layers ---

    def put_snapshot_layer(self, diff_id: str, size: int, source: LayerSnapshot) -> None:
        """Record layer ``diff_id`` (``size`` bytes of tar) as the diff of committed snapshot
        ``source``, with no blob: :meth:`ensure_layer_blob` writes it when something needs it."""
        with self._write() as db:
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
        with self._write(invalidates=True) as db:
            if snapshotter is None:
                db.execute("DELETE FROM layer_snapshots WHERE chain_id=?", (chain_id,))
            else:
                db.execute(
                    "DELETE FROM layer_snapshots WHERE chain_id=? AND snapshotter=?",
                    (chain_id, snapshotter),
                )

    def layers_backed_by(self, chain_id: str) -> list[str]:
        """Diff ids recorded as the diff of committed snapshot ``chain_id``."""
        return [
            r[0]
            for r in self._db.execute(
                "SELECT DISTINCT diff_id FROM layer_snapshots WHERE chain_id=? ORDER BY diff_id",
                (chain_id,),
            )
        ]

    def _forget_layer_source(self, diff_id: str, source: LayerSnapshot) -> None:
        with self._write(invalidates=True) as db:
            db.execute(
                "DELETE FROM layer_snapshots WHERE diff_id=? AND snapshotter=? AND chain_id=?",
                (diff_id, source.snapshotter, source.chain_id),
            )

    def _snapshot_source(self, kind: str) -> Any:
        """The snapshotter named ``kind`` over this store's snapshots, if it keeps diffs."""
        cache: dict[str, Any] = self.__dict__.setdefault("_snapshot_sources", {})
        if kind not in cache:
            if kind == "overlay":
                # Imported here: the store sits below the snapshot room, which only this
                # fallback needs (and opening it directly skips the overlay probe).
                from dockyard.snapshot.overlay import OverlaySnapshotter

                cache[kind] = OverlaySnapshotter(self.snapshots_dir)
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

    def layer_present(self, diff_id: str) -> bool:
        """Whether the layer's bytes can be had: a stored form, or a snapshot it is the diff of.

        Snapshot sources are taken from the database without opening the snapshotter (this
        runs for every cached step): prune drops a snapshot's rows before removing it, and
        :meth:`ensure_layer_blob` drops rows whose snapshot turns out to be gone.
        """
        if self.blobs.has(diff_id):
            return True
        layer = self.get_layer(diff_id)
        if layer is None:
            return False
        if any(self.blobs.has(b.digest) for b in layer.blobs.values()):
            return True
        return bool(layer.snapshots)

    def ensure_layer_blob(self, diff_id: str) -> str:
        """Make sure the uncompressed tar of layer ``diff_id`` is a blob; returns its digest.

        The one way to the bytes of a snapshot-backed layer: the tar is written again from
        the snapshot's diff and verified against ``diff_id`` while it is written, so changed
        snapshot content raises StoreError naming the layer and never yields other bytes.
        NotFoundError if the layer has neither a blob nor a snapshot to make it from.
        """
        if self.blobs.has(diff_id):
            return diff_id
        # Shared with builds, so no prune removes the snapshot or the new blob meanwhile.
        with self.build_lock():
            if self.blobs.has(diff_id):  # written by someone else while we waited
                return diff_id
            return self._regenerate(diff_id)

    def _regenerate(self, diff_id: str) -> str:
        layer = self.get_layer(diff_id)
        sources = self._live_sources(layer) if layer is not None else []
        if layer is not None:
            live = {s.chain_id for s, _ in sources}
            for gone in layer.snapshots:
                if gone.chain_id not in live:  # removed behind our back: stop claiming it
                    self._forget_layer_source(diff_id, gone)
        if not sources:
            raise NotFoundError(f"layer {diff_id} is missing from the store")
        errors: list[str] = []
        for source, snap in sources:
            with self.blobs.writer() as w:
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
            with self._write() as db:
                self._put_layer(db, diff_id, size)
            return str(digest)
        raise StoreError(
            f"layer {diff_id} cannot be regenerated (no blob is stored): " + "; ".join(errors)
        )

    def list_layer_ids(self) -> list[str]:
        """Every recorded diff id."""
        return [r[0] for r in self._db.execute("SELECT diff_id FROM layers ORDER BY diff_id")]

    def delete_layer(self, diff_id: str) -> None:
        """Forget a layer and its forms (blobs stay until prune)."""
        with self._write(invalidates=True) as db:
            db.execute("DELETE FROM layers WHERE diff_id=?", (diff_id,))

    # --- snapshots ---

    def put_snapshot(self, record: SnapshotRecord) -> None:
        """Record (or replace) a committed snapshot."""
        now = _now()
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO snapshots(chain_id, snapshotter, key, parent, size,"
                " created, last_used) VALUES (?,?,?,?,?,?,?)",
                (
                    record.chain_id,
                    record.snapshotter,
                    record.key,
                    record.parent,
                    record.size,
                    record.created or now,
                    record.last_used or now,
                ),
            )

    def get_snapshot(self, chain_id: str, snapshotter: str) -> SnapshotRecord | None:
        """The snapshot of ``chain_id`` made by ``snapshotter``, or None."""
        row = self._db.execute(
            "SELECT chain_id, snapshotter, key, parent, size, created, last_used"
            " FROM snapshots WHERE chain_id=? AND snapshotter=?",
            (chain_id, snapshotter),
        ).fetchone()
        return SnapshotRecord(*row) if row else None

    def touch_snapshot(self, chain_id: str, snapshotter: str, when: float | None = None) -> None:
        """Mark a snapshot used now."""
        with self._write() as db:
            db.execute(
                "UPDATE snapshots SET last_used=? WHERE chain_id=? AND snapshotter=?",
                (when or _now(), chain_id, snapshotter),
            )

    def list_snapshots(self, snapshotter: str | None = None) -> list[SnapshotRecord]:
        """Every snapshot record (of one snapshotter, if given)."""
        sql = "SELECT chain_id, snapshotter, key, parent, size, created, last_used FROM snapshots"
        rows = (
            self._db.execute(sql + " WHERE snapshotter=?", (snapshotter,))
            if snapshotter is not None
            else self._db.execute(sql)
        )
        return [SnapshotRecord(*r) for r in rows]

    def delete_snapshot(self, chain_id: str, snapshotter: str) -> None:
        """Forget a snapshot record (the directory is the snapshotter's to remove)."""
        with self._write(invalidates=True) as db:
            db.execute(
                "DELETE FROM snapshots WHERE chain_id=? AND snapshotter=?", (chain_id, snapshotter)
            )

    # --- build cache ---

    _CACHE_COLUMNS = "key, diff_id, chain_id, result, explain, description, created, last_used"

    @staticmethod
    def _cache_record(row: tuple[Any, ...]) -> CacheRecord:
        return CacheRecord(
            key=row[0],
            diff_id=row[1],
            chain_id=row[2],
            result=json.loads(row[3]),
            explain=json.loads(row[4]),
            description=row[5],
            created=row[6],
            last_used=row[7],
        )

    def put_cache_record(self, record: CacheRecord) -> None:
        """Record (or replace) a cache entry; zero times become now."""
        now = _now()
        with self._write(invalidates=True) as db:
            db.execute(
                f"INSERT OR REPLACE INTO cache_records({self._CACHE_COLUMNS})"
                " VALUES (?,?,?,?,?,?,?,?)",
                (
                    record.key,
                    record.diff_id,
                    record.chain_id,
                    json.dumps(dict(record.result), sort_keys=True),
                    json.dumps(dict(record.explain), sort_keys=True),
                    record.description,
                    record.created or now,
                    record.last_used or now,
                ),
            )

    def get_cache_record(self, key: str) -> CacheRecord | None:
        """The cache entry for ``key``, or None."""
        row = self._db.execute(
            f"SELECT {self._CACHE_COLUMNS} FROM cache_records WHERE key=?", (key,)
        ).fetchone()
        return self._cache_record(row) if row else None

    def touch_cache_record(self, key: str, when: float | None = None) -> None:
        """Mark a cache entry used (for ``cache prune --older-than``)."""
        with self._write() as db:
            db.execute("UPDATE cache_records SET last_used=? WHERE key=?", (when or _now(), key))

    def list_cache_records(self) -> list[CacheRecord]:
        """Every cache entry, least recently used first."""
        rows = self._db.execute(
            f"SELECT {self._CACHE_COLUMNS} FROM cache_records ORDER BY last_used, key"
        )
        return [self._cache_record(r) for r in rows]

    def delete_cache_records(self, keys: Iterable[str]) -> int:
        """Delete the entries with these keys; returns how many existed."""
        with self._write(invalidates=True) as db:
            return sum(
                db.execute("DELETE FROM cache_records WHERE key=?", (k,)).rowcount for k in keys
            )

    def delete_all_cache_records(self) -> int:
        """Drop the whole build cache index (layers go at the next prune)."""
        with self._write(invalidates=True) as db:
            return db.execute("DELETE FROM cache_records").rowcount

    # --- build history (explaining misses) ---

    def get_build_history(self, dockerfile: str, target: str) -> dict[str, Any] | None:
        """What the last build of ``dockerfile`` (a path string) and ``target`` recorded."""
        row = self._db.execute(
            "SELECT info FROM build_history WHERE dockerfile=? AND target=?", (dockerfile, target)
        ).fetchone()
        if row is None:
            return None
        info: dict[str, Any] = json.loads(row[0])
        _map_steps(info, _unpack_step)
        return info

    def put_build_history(self, dockerfile: str, target: str, info: Mapping[str, Any]) -> None:
        """Replace the last-build record of ``dockerfile`` and ``target``.

        A step's ``"files"`` (a COPY's per-file manifest, the bulk of a record) is stored
        compressed and read back as a :class:`PackedManifest`, which is only decoded when
        used: a no-op rebuild reads the record without parsing thousands of entries.
        """
        packed = dict(info)
        _map_steps(packed, _pack_step)
        with self._write(invalidates=True) as db:
            db.execute(
                "INSERT OR REPLACE INTO build_history(dockerfile, target, info, updated)"
                " VALUES (?,?,?,?)",
                (dockerfile, target, json.dumps(packed, sort_keys=True), _now()),
            )

    # --- stat cache ---

    def stat_get_many(self, keys: Iterable[StatKey]) -> dict[StatKey, str]:
        """Digests of the files whose stat is unchanged since they were hashed."""
        wanted: dict[tuple[int, int], StatKey] = {(_i64(k.dev), _i64(k.ino)): k for k in keys}
        if not wanted:
            return {}
        found: dict[StatKey, str] = {}
        db = self._stat_db
        items = list(wanted)
        # SQLite limits bound parameters; query in chunks by inode.
        for start in range(0, len(items), 500):
            chunk = items[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for dev, ino, size, mtime_ns, ctime_ns, digest in db.execute(
                "SELECT dev, ino, size, mtime_ns, ctime_ns, digest FROM stat_cache"
                f" WHERE ino IN ({marks})",
                [ino for _, ino in chunk],
            ):
                key = wanted.get((dev, ino))
                if key is not None and (size, mtime_ns, ctime_ns) == (
                    key.size,
                    key.mtime_ns,
                    key.ctime_ns,
                ):
                    found[key] = digest
        return found

    def stat_get(self, key: StatKey) -> str | None:
        """The digest for one unchanged file, or None."""
        return self.stat_get_many([key]).get(key)

    def stat_put_many(self, entries: Iterable[tuple[StatKey, str]]) -> None:
        """Remember (stat key -> sha256 digest) for files just hashed."""
        rows = [
            (_i64(k.dev), _i64(k.ino), k.size, k.mtime_ns, k.ctime_ns, digest)
            for k, digest in entries
        ]
        if not rows:
            return
        with self._write(self._stat_db) as db:
            db.executemany("INSERT OR REPLACE INTO stat_cache VALUES (?,?,?,?,?,?)", rows)

    def stat_clear(self) -> None:
        """Forget the whole stat cache."""
        with self._write(self._stat_db) as db:
            db.execute("DELETE FROM stat_cache")


class PackedManifest(Mapping[str, Any]):
    """A build-history file manifest kept as stored (zlib'd JSON, base64) until first read."""

    __slots__ = ("_data", "packed")

    def __init__(self, packed: str) -> None:
        self.packed = packed
        self._data: dict[str, Any] | None = None

    @classmethod
    def pack(cls, files: Mapping[str, Any]) -> PackedManifest:
        """Pack a manifest (``path -> JSON value``)."""
        import base64

        text = json.dumps(dict(files), sort_keys=True, separators=(",", ":"))
        return cls(base64.b64encode(zlib.compress(text.encode(), 1)).decode("ascii"))

    def _load(self) -> dict[str, Any]:
        if self._data is None:
            import base64

            data: dict[str, Any] = json.loads(zlib.decompress(base64.b64decode(self.packed)))
            self._data = data
        return self._data

    def __getitem__(self, key: str) -> Any:
        return self._load()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


def _map_steps(info: dict[str, Any], fn: Callable[[Any], Any]) -> None:
    """Apply ``fn`` to every step of a history record (a dict or list of steps), in place."""
    steps = info.get("steps")
    if isinstance(steps, dict):
        info["steps"] = {vid: fn(step) for vid, step in steps.items()}
    elif isinstance(steps, list):
        info["steps"] = [fn(step) for step in steps]


def _pack_step(step: Any) -> Any:
    if not isinstance(step, Mapping) or "files" not in step:
        return step
    out = dict(step)
    files = out.pop("files")
    if not isinstance(files, Mapping):
        return step
    if not isinstance(files, PackedManifest):
        files = PackedManifest.pack(files)
    out["files_z"] = files.packed
    return out


def _unpack_step(step: Any) -> Any:
    if isinstance(step, dict) and isinstance(step.get("files_z"), str):
        step["files"] = PackedManifest(step.pop("files_z"))
    return step
