"""The store's SQLite databases: connections, transactions, schema and the store generation.

Every concern of the store (``images.py``, ``layers.py``, ``snapshots.py``, ``cache.py``,
``history.py``, ``stats.py``) works through one :class:`Database`, as containerd's content,
image, snapshot and lease services share one metadata database.

``dockyard.db`` holds every table but the stat cache, which has its own file,
``statcache.db``: it is the one table written in bulk on every build (thousands of rows) and
it is disposable. Keeping it apart keeps those writes from holding the main database's write
lock while other builds record images and cache entries, and a lost or corrupt stat cache
only costs a rehash (it is dropped and recreated).

Concurrency: each thread gets its own connection (reopened after ``fork``), with a 30 s busy
timeout; every write is one ``BEGIN IMMEDIATE`` transaction, so concurrent writers queue
instead of failing on lock upgrades. The schema version is in the ``meta`` table; a store
written by a newer dockyard is refused rather than misread.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from dockyard.errors import NoSpaceError, StoreError

__all__ = ["BUSY_TIMEOUT", "SCHEMA_VERSION", "Database", "format_time", "i64", "now"]

SCHEMA_VERSION = 7  # 4: layer_remotes (lazily imported build cache layers); 5: layer_pulled;
# 6: the snapshot table is snapshots/snapshots/meta.db (SQLite), no longer meta.json: an older
# dockyard would see no snapshots there and sweep their directories, so it must refuse the store;
# 7: layer_snapshots.tar_format (an overlay opaque directory is written as whiteouts since
# format 2; rows of older stores keep format 1, the ``.wh..wh..opq`` marker their diff ids hold,
# and an older dockyard would write a format 2 layer's tar again as format 1)
BUSY_TIMEOUT = 30.0

SCHEMA = """
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
    tar_format INTEGER NOT NULL DEFAULT 1, -- how it writes opaque dirs (store/layers.py)
    PRIMARY KEY (diff_id, snapshotter, chain_id)
);
CREATE INDEX IF NOT EXISTS layer_snapshots_by_chain ON layer_snapshots(chain_id);
CREATE TABLE IF NOT EXISTS layer_remotes (
    diff_id TEXT NOT NULL REFERENCES layers(diff_id) ON DELETE CASCADE,
    blob TEXT NOT NULL,                  -- the blob's digest where it is kept
    media_type TEXT NOT NULL,            -- its layer media type (compression)
    size INTEGER NOT NULL,
    source TEXT NOT NULL,                -- registry://DOMAIN/REPO or oci-layout:///DIR
    added REAL NOT NULL,
    PRIMARY KEY (diff_id, blob, source)
);
CREATE TABLE IF NOT EXISTS layer_pulled (
    diff_id TEXT NOT NULL REFERENCES layers(diff_id) ON DELETE CASCADE,
    blob TEXT NOT NULL,                  -- a compressed blob a pull stored, checked against
                                         -- its manifest's digest, not yet against diff_id
    compression TEXT NOT NULL,           -- from its media type: gzip | zstd | none
    size INTEGER NOT NULL,
    tar_size INTEGER,                    -- what a gzip trailer says the tar's size is: shown
                                         -- until it is checked, never used as its size
    added REAL NOT NULL,
    PRIMARY KEY (diff_id, blob)
);
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
CREATE TABLE IF NOT EXISTS index_names (
    name TEXT PRIMARY KEY,               -- a name (or name@digest) that is a multi-platform image
    index_digest TEXT NOT NULL,          -- the image index blob; its images are found by
                                         -- images.manifest_digest (a pull may hold only some)
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS build_history (
    dockerfile TEXT NOT NULL,
    target TEXT NOT NULL,
    info TEXT NOT NULL,                  -- JSON, solver-defined
    updated REAL NOT NULL,
    PRIMARY KEY (dockerfile, target)
);
"""

STAT_SCHEMA = """
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


def _disk_full(path: Path) -> bool:
    """Whether the file system of ``path`` has (almost) no space left."""
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < (1 << 20)


def now() -> float:
    """The time rows record (unix time)."""
    return time.time()


def i64(n: int) -> int:
    """SQLite integers are signed 64-bit; inode numbers (overlay xino) may use bit 63."""
    return n - (1 << 64) if n >= (1 << 63) else n


def format_time(ts: float) -> str:
    """RFC 3339 UTC with a ``Z``, as Docker prints times."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Database:
    """The connections to ``<root>/dockyard.db`` and ``<root>/statcache.db``, one per thread,
    and the store generation in ``<root>/generation``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "dockyard.db"
        self.stat_path = root / "statcache.db"
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._gen_lock = threading.Lock()
        self.generation_bumps = 0  # made by this object (see bump_generation)

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
            if _disk_full(path):  # SQLite says "disk I/O error" when it cannot map its -shm
                raise NoSpaceError("the store database", str(path)) from None
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
    def conn(self) -> sqlite3.Connection:
        """This thread's connection to ``dockyard.db``."""
        return self._conn_for("db", self.path)

    @property
    def stat_conn(self) -> sqlite3.Connection:
        """This thread's connection to ``statcache.db``."""
        return self._conn_for("stat", self.stat_path)

    @contextlib.contextmanager
    def write(
        self, conn: sqlite3.Connection | None = None, *, invalidates: bool = False
    ) -> Iterator[sqlite3.Connection]:
        """A write transaction. ``invalidates``: the write can change what a build of
        unchanged inputs gives (names, cache records, deletions), so the store generation
        moves on once it is committed (see :meth:`bump_generation`)."""
        conn = self.conn if conn is None else conn
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

    def close(self) -> None:
        """Close every connection this object opened (in this process)."""
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local.__dict__.clear()

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

    # --- schema ---

    def init_schema(self) -> None:
        """Create or upgrade the schema; refuse a store written by a newer dockyard."""
        db = self.conn
        try:
            has_meta = db.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone()
            got = (
                db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if has_meta
                else None
            )
        except sqlite3.DatabaseError as err:
            raise StoreError(f"the store database {self.path} is unusable: {err}") from None
        version = int(got[0]) if got else None
        if version is not None and version > SCHEMA_VERSION:
            raise StoreError(
                f"the store at {self.root} has schema version {version}; this dockyard "
                f"understands up to {SCHEMA_VERSION} (upgrade dockyard)"
            )
        if version != SCHEMA_VERSION:
            # Every statement is idempotent, so concurrent first opens are harmless. An
            # up-to-date store skips this: opening then costs no write (start-up is user time).
            db.executescript(SCHEMA)
            self._add_column("layer_snapshots", "tar_format",
                             "INTEGER NOT NULL DEFAULT 1")  # schema 7, on a table made earlier
            with self.write() as tx:
                # Upgrades only add tables (a v1 store is a valid v2 store), so the newest
                # version wins; a concurrent first open writes the same value.
                tx.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema_version', ?)"
                    " ON CONFLICT(key) DO UPDATE SET value=excluded.value"
                    " WHERE CAST(value AS INTEGER) < CAST(excluded.value AS INTEGER)",
                    (str(SCHEMA_VERSION),),
                )
        try:
            stat = self.stat_conn
            if (
                stat.execute("SELECT 1 FROM sqlite_master WHERE name='stat_cache'").fetchone()
                is None
            ):
                stat.executescript(STAT_SCHEMA)
        except (sqlite3.DatabaseError, StoreError):
            # The stat cache is disposable: a damaged one is replaced, never fatal.
            self.reset_stat_cache()

    def _add_column(self, table: str, column: str, decl: str) -> None:
        """Add ``column`` to ``table`` unless it is there (a concurrent first open may have
        added it a moment ago: that is not an error)."""
        db = self.conn
        if any(r[1] == column for r in db.execute(f"PRAGMA table_info({table})")):
            return
        try:
            with self.write() as tx:
                tx.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        except sqlite3.OperationalError as err:
            if "duplicate column" not in str(err):
                raise

    def reset_stat_cache(self) -> None:
        """Throw the stat cache database away and make an empty one."""
        conn = getattr(self._local, "stat", None)
        if conn is not None:
            conn.close()
            self._local.stat = None
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.stat_path}{suffix}")
        self.stat_conn.executescript(STAT_SCHEMA)
