"""The snapshot table: ``<root>/snapshots/meta.db``, a small SQLite database (WAL).

Kept apart from the store's database so the snapshot room owns its own consistency: a record
points at ``<root>/snapshots/<id>/``; ids are short integers so overlay option strings stay
short.

Durability: a record that a later write elsewhere depends on is on disk before its method
returns, and so are the files of a snapshot before its commit: ``commit`` first ``syncfs``es
the snapshots' file system. An overlay's unmount syncs its upper file system, but a layer
unpacked into its directory, a COPY written there directly and the native snapshotter's
steps are never mounted through an overlay: without the sync, a power cut could leave a
committed snapshot with empty files (containerd's unpacker has the same failure,
containerd/containerd#8895; its fix, ``sync_fs``, is opt-in), named by cache records and
images, and never re-made. ``commit`` (the store's cache records then name the committed
snapshot),
``remove``, ``forget`` and ``sweep`` run with ``synchronous=FULL`` (the WAL is fsynced at
their commit). ``create`` runs with ``synchronous=NORMAL``: an active snapshot is never named
by anything outside this table, and if a power cut loses its record, its directory is an
unrecorded one, which ``sweep`` removes and ``create`` never reuses. Before this table was
SQLite it was one JSON file rewritten with fsync on every create and commit: 31% of
layers100's busy time (docs/performance.md, section 22); ``meta.json`` is imported once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dockyard._fs import is_no_space, remove_tree, sync_filesystem
from dockyard.errors import NoSpaceError, NotFoundError, StoreError
from dockyard.snapshot.topdir import spread_subdirs

Kind = Literal["active", "view", "committed"]

_BUSY_TIMEOUT = 60.0  # seconds another process may hold the table's write lock

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    key    TEXT PRIMARY KEY,
    id     INTEGER NOT NULL UNIQUE,
    kind   TEXT NOT NULL CHECK (kind IN ('active', 'view', 'committed')),
    parent TEXT
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent);
CREATE TABLE IF NOT EXISTS removing (id INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS props (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# ``name`` and its ancestors, newest first, in one statement (``depth`` orders them).
_CHAIN = """
WITH RECURSIVE chain(key, id, kind, parent, depth) AS (
    SELECT key, id, kind, parent, 0 FROM snapshots WHERE key = ?
    UNION ALL
    SELECT s.key, s.id, s.kind, s.parent, chain.depth + 1
    FROM snapshots s JOIN chain ON s.key = chain.parent
)
SELECT key, id, kind, parent FROM chain ORDER BY depth
"""


@dataclass(frozen=True, slots=True)
class Record:
    """One snapshot: its directory id, kind and committed parent name."""

    id: int
    kind: Kind
    parent: str | None


def _record(row: Any) -> Record:
    sid, kind, parent = row
    return Record(int(sid), kind, parent)


def _disk_full(path: Path) -> bool:
    """Whether the file system of ``path`` has (almost) no space left (SQLite says "disk I/O
    error" when it cannot grow its ``-shm`` file)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < (1 << 20)


class MetaTable:
    """Snapshot records, safe across threads and processes sharing one root."""

    def __init__(self, root: Path, driver: str = "") -> None:
        self.driver = driver
        self.dir = root / "snapshots"
        self.dir.mkdir(parents=True, exist_ok=True)
        spread_subdirs(self.dir)  # each snapshot in a block group of its own (see topdir.py)
        self._path = self.dir / "meta.db"
        self._json_path = self.dir / "meta.json"  # the table before it was SQLite
        self._lock_path = self.dir / "meta.lock"
        self._tlock = threading.RLock()  # one connection, used by one thread at a time
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._inherited: list[sqlite3.Connection] = []  # a forked child's: never closed

    # --- the connection and transactions ---

    def _db(self) -> sqlite3.Connection:
        """This process's connection (call under ``_tlock``); made, with the schema and the
        import of ``meta.json``, on first use."""
        if self._conn is not None:
            if self._pid == os.getpid():
                return self._conn
            # A forked child must not use (or close: SQLite's locks) its parent's connection.
            self._inherited.append(self._conn)
            self._conn = None
        try:
            conn = sqlite3.connect(self._path, timeout=_BUSY_TIMEOUT, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as err:
            raise self._error(err, "open") from None
        try:
            ready = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'props'").fetchone()
            if not ready or conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                with self._file_lock():  # two first opens at once: one switches and creates
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.executescript(_SCHEMA)  # idempotent
            self._import_json(conn)
        except sqlite3.Error as err:
            conn.close()
            raise self._error(err, "open") from None
        self._conn, self._pid = conn, os.getpid()
        return conn

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        with open(self._lock_path, "a+b") as lf:
            fcntl.flock(lf, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lf, fcntl.LOCK_UN)

    def _import_json(self, conn: sqlite3.Connection) -> None:
        """Move the records of a ``meta.json`` (an older dockyard's table) into the database,
        once: in one transaction that also marks the import done, then the file goes (after
        a crash in between, the next open only removes it)."""
        if not self._json_path.exists():
            return
        with self._file_lock():
            if conn.execute("SELECT 1 FROM props WHERE name = 'imported'").fetchone():
                with contextlib.suppress(FileNotFoundError):
                    self._json_path.unlink()
                return
            try:
                data = json.loads(self._json_path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                return  # another process imported it meanwhile
            except ValueError as err:
                raise StoreError(f"corrupt snapshot table {self._json_path}: {err}") from None
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO snapshots(key, id, kind, parent) VALUES (?, ?, ?, ?)",
                    [(key, int(raw["id"]), raw["kind"], raw.get("parent"))
                     for key, raw in data.get("snapshots", {}).items()])
                conn.executemany("INSERT OR IGNORE INTO removing(id) VALUES (?)",
                                 [(int(i),) for i in data.get("removing", [])])
                props = {"driver": data.get("driver") or "", "next": data.get("next") or 1,
                         "imported": 1}
                conn.executemany("INSERT OR REPLACE INTO props(name, value) VALUES (?, ?)",
                                 [(k, str(v)) for k, v in props.items() if v != ""])
            except (KeyError, TypeError, ValueError, AttributeError) as err:
                conn.execute("ROLLBACK")
                raise StoreError(f"corrupt snapshot table {self._json_path}: {err!r}") from None
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            self._json_path.unlink()

    def _error(self, err: sqlite3.Error, what: str) -> Exception:
        if "full" in str(err) or ("disk I/O" in str(err) and _disk_full(self.dir)):
            return NoSpaceError("the snapshot table", str(self._path))
        return StoreError(f"the snapshot table {self._path}: cannot {what}: {err}")

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._tlock:
            conn = self._db()
            try:
                yield conn
            except sqlite3.Error as err:
                raise self._error(err, "read") from None

    @contextlib.contextmanager
    def _write(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction; ``durable``: on disk when it returns (``synchronous=FULL``)."""
        with self._tlock:
            conn = self._db()
            try:
                conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as err:
                raise self._error(err, "write") from None
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._error(exc, "write") from None
                raise

    def close(self) -> None:
        """Close this process's connection (a later use opens a new one)."""
        with self._tlock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    # --- reads ---

    def recorded_driver(self) -> str | None:
        """The snapshotter that made the existing snapshots, if there are any."""
        with self._read() as db:
            if db.execute("SELECT 1 FROM snapshots LIMIT 1").fetchone() is None:
                return None
            row = db.execute("SELECT value FROM props WHERE name = 'driver'").fetchone()
        return str(row[0]) or None if row else None

    def get(self, key: str) -> Record:
        """The record of ``key``; NotFoundError if there is none."""
        rec = self.find(key)
        if rec is None:
            raise NotFoundError(f"snapshot {key} not found")
        return rec

    def find(self, key: str) -> Record | None:
        """The record of ``key`` or None."""
        with self._read() as db:
            row = db.execute("SELECT id, kind, parent FROM snapshots WHERE key = ?",
                             (key,)).fetchone()
        return None if row is None else _record(row)

    def all(self) -> dict[str, Record]:
        """Every record by key."""
        with self._read() as db:
            rows = db.execute("SELECT key, id, kind, parent FROM snapshots").fetchall()
        return {str(r[0]): _record(r[1:]) for r in rows}

    def _chain_rows(self, name: str) -> list[Any]:
        with self._read() as db:
            rows: list[Any] = db.execute(_CHAIN, (name,)).fetchall()
        if not rows:
            raise NotFoundError(f"snapshot {name} not found")
        if rows[-1][3] is not None:  # the oldest one found names a parent that is not there
            raise NotFoundError(f"snapshot {rows[-1][3]} not found")
        return rows

    def chain_ids(self, name: str) -> list[int]:
        """The directory ids of committed ``name`` and its ancestors, newest first (what
        :meth:`chain` gives, without a record per ancestor: a diff of each of 100 stacked
        layers asks for 5,050)."""
        return [int(r[1]) for r in self._chain_rows(name)]

    def chain(self, name: str | None) -> list[Record]:
        """Committed ``name`` and its ancestors, newest first."""
        return [] if name is None else [_record(r[1:]) for r in self._chain_rows(name)]

    # --- writes ---

    def create(self, key: str, kind: Kind, parent: str | None) -> Record:
        """Add ``key`` with a fresh directory id (and make ``<id>/``)."""
        with self._write(durable=False) as db:
            # Overlay snapshots hold diffs, native ones whole trees: never mix them.
            row = db.execute("SELECT value FROM props WHERE name = 'driver'").fetchone()
            used = str(row[0]) if row else ""
            if self.driver and used and used != self.driver:
                raise StoreError(
                    f"the snapshots under {self.dir} were made by the {used} snapshotter, "
                    f"not {self.driver}",
                    )
            if not row and self.driver:
                db.execute("INSERT INTO props(name, value) VALUES ('driver', ?)", (self.driver,))
            if db.execute("SELECT 1 FROM snapshots WHERE key = ?", (key,)).fetchone():
                raise StoreError(f"snapshot {key} already exists")
            if parent is not None:
                prow = db.execute("SELECT kind FROM snapshots WHERE key = ?", (parent,)).fetchone()
                if prow is None or prow[0] != "committed":
                    raise NotFoundError(f"parent snapshot {parent} not found (or not committed)")
            nrow = db.execute("SELECT value FROM props WHERE name = 'next'").fetchone()
            sid = int(nrow[0]) if nrow else 1
            # A directory nothing records (left by a crash) is never reused; ``sweep``
            # removes it.
            while (self.dir / str(sid)).exists():
                sid += 1
            db.execute("INSERT OR REPLACE INTO props(name, value) VALUES ('next', ?)",
                       (str(sid + 1),))
            db.execute("INSERT INTO snapshots(key, id, kind, parent) VALUES (?, ?, ?, ?)",
                       (key, sid, kind, parent))
        # The record first, then the directory: a crash in between leaves a record whose
        # directory is missing (``sweep`` and ``store check`` drop it), never a directory
        # that blocks every later create.
        (self.dir / str(sid)).mkdir(parents=True, exist_ok=True)
        return Record(sid, kind, parent)

    def commit(self, name: str, key: str) -> Record:
        """Rename active ``key`` to committed ``name``, its files on disk first (see the
        module docstring)."""
        try:
            sync_filesystem(self.dir)
        except OSError as err:
            if is_no_space(err):
                raise NoSpaceError("the snapshot", str(self.dir)) from None
            raise StoreError(f"cannot commit snapshot {name}: its files did not reach the "
                             f"disk ({err.strerror})") from None
        with self._write() as db:
            row = db.execute("SELECT id, kind, parent FROM snapshots WHERE key = ?",
                             (key,)).fetchone()
            if row is None or row[1] != "active":
                raise NotFoundError(f"active snapshot {key} not found")
            if db.execute("SELECT 1 FROM snapshots WHERE key = ?", (name,)).fetchone():
                raise StoreError(f"snapshot {name} already exists")
            db.execute("UPDATE snapshots SET key = ?, kind = 'committed' WHERE key = ?",
                       (name, key))
        return Record(int(row[0]), "committed", row[2])

    def remove(self, key: str) -> None:
        """Delete ``key`` and its directory; refuses a snapshot others are built on.

        Mark, then sweep: the record moves to the ``removing`` table (so nothing uses it and
        its id is never given again), the directory goes, then the id leaves the table. A
        crash in between leaves an id that :meth:`sweep` finishes."""
        try:
            sid = self._mark_removed(key)
        except NoSpaceError:
            rec = self.get(key)
            if rec.kind == "committed":
                raise
            # A step that filled the disk cannot even be marked: empty its directory first
            # (nothing else ever uses an uncommitted snapshot), then mark.
            for entry in os.scandir(self.dir / str(rec.id)):
                remove_tree(entry.path, ignore_errors=True)
            sid = self._mark_removed(key)
        self._finish_removal([sid])

    def _mark_removed(self, key: str) -> int:
        with self._write() as db:
            row = db.execute("SELECT id FROM snapshots WHERE key = ?", (key,)).fetchone()
            if row is None:
                raise NotFoundError(f"snapshot {key} not found")
            children = [str(r[0]) for r in db.execute(
                "SELECT key FROM snapshots WHERE parent = ? ORDER BY key", (key,))]
            if children:
                raise StoreError(f"snapshot {key} has children: {', '.join(children)}")
            sid = int(row[0])
            db.execute("DELETE FROM snapshots WHERE key = ?", (key,))
            db.execute("INSERT OR IGNORE INTO removing(id) VALUES (?)", (sid,))
        return sid

    def _finish_removal(self, ids: list[int]) -> int:
        """Delete the directories of ``ids`` (listed as removing), then unlist them; returns
        the bytes freed."""
        freed = 0
        done: list[int] = []
        for sid in ids:
            freed += remove_tree(self.dir / str(sid), ignore_errors=True)
            if not (self.dir / str(sid)).exists():
                done.append(sid)
        if done:
            with self._write() as db:
                db.executemany("DELETE FROM removing WHERE id = ?", [(i,) for i in done])
        return freed

    def removing(self) -> list[int]:
        """Ids marked for removal whose directories may still be there."""
        with self._read() as db:
            return [int(r[0]) for r in db.execute("SELECT id FROM removing ORDER BY id")]

    def forget(self, key: str) -> list[str]:
        """Drop the record of ``key`` and of every snapshot built on it (their content is
        lost: a directory is missing, or a parent is); their directories go as in
        :meth:`remove`. Returns the keys forgotten."""
        with self._write() as db:
            rows = db.execute(
                "WITH RECURSIVE down(key, id) AS ("
                " SELECT key, id FROM snapshots WHERE key = ?"
                " UNION SELECT s.key, s.id FROM snapshots s JOIN down ON s.parent = down.key)"
                " SELECT key, id FROM down", (key,)).fetchall()
            gone = [str(r[0]) for r in rows]
            ids = [int(r[1]) for r in rows]
            db.executemany("DELETE FROM snapshots WHERE key = ?", [(k,) for k in gone])
            db.executemany("INSERT OR IGNORE INTO removing(id) VALUES (?)", [(i,) for i in ids])
        if gone:
            self._finish_removal(ids)
        return gone

    def _unrecorded(self, db: sqlite3.Connection) -> tuple[list[int], list[int]]:
        recorded = {int(r[0]) for r in db.execute("SELECT id FROM snapshots")}
        removing = sorted(int(r[0]) for r in db.execute("SELECT id FROM removing"))
        skip = recorded | set(removing)
        unrecorded = sorted(int(e.name) for e in os.scandir(self.dir)
                            if e.name.isdigit() and int(e.name) not in skip)
        return unrecorded, removing

    def orphans(self) -> tuple[list[int], list[int], list[str]]:
        """What a crash can leave: (directories no record names, ids still listed as
        removing, keys whose directory is missing)."""
        with self._read() as db:
            unrecorded, removing = self._unrecorded(db)
            rows = db.execute("SELECT key, id FROM snapshots ORDER BY key").fetchall()
        missing = [str(k) for k, i in rows if not (self.dir / str(i)).is_dir()]
        return unrecorded, removing, missing

    def sweep(self, *, drop_missing: bool = True) -> tuple[int, int]:
        """Finish what crashes left: remove directories no record names and those still
        listed as removing, and (``drop_missing``) forget uncommitted records whose directory
        is gone. Returns (directories removed, bytes freed). Call with no build running
        (under the store's exclusive lock): an unrecorded directory is then a leftover."""
        with self._write() as db:
            orphans, removing = self._unrecorded(db)
            if drop_missing:
                rows = db.execute(
                    "SELECT key, id FROM snapshots s WHERE kind != 'committed' AND NOT EXISTS"
                    " (SELECT 1 FROM snapshots c WHERE c.parent = s.key)").fetchall()
                db.executemany("DELETE FROM snapshots WHERE key = ?",
                               [(k,) for k, i in rows if not (self.dir / str(i)).is_dir()])
            db.executemany("INSERT OR IGNORE INTO removing(id) VALUES (?)",
                           [(i,) for i in orphans])
        ids = sorted(set(removing) | set(orphans))
        return len(ids), self._finish_removal(ids) if ids else 0


class MetaBacked:
    """What both snapshotters share: snapshots recorded in a :class:`MetaTable`, each in its
    own numbered directory below ``<root>/snapshots``."""

    def __init__(self, root: Path, driver: str) -> None:
        self.root = root
        self._meta = MetaTable(root, driver)

    def _dir(self, rec: Record) -> Path:
        return self._meta.dir / str(rec.id)

    def fs_dir(self, key: str) -> Path:
        """The snapshot's own directory (overlay: its upper or lower dir; native: its rootfs)."""
        return self._dir(self._meta.get(key)) / "fs"

    def exists(self, name: str) -> bool:
        """Whether a snapshot (active, view or committed) is recorded under ``name``."""
        return self._meta.find(name) is not None

    def is_committed(self, name: str) -> bool:
        """Whether ``name`` is a committed snapshot (one row read, not the whole table)."""
        rec = self._meta.find(name)
        return rec is not None and rec.kind == "committed"

    def committed(self) -> list[str]:
        """Names of all committed snapshots."""
        return sorted(k for k, r in self._meta.all().items() if r.kind == "committed")

    def uncommitted(self) -> list[str]:
        """Keys of active snapshots and views (after a crash: leftovers of killed builds)."""
        return sorted(k for k, r in self._meta.all().items() if r.kind != "committed")
