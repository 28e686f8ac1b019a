"""Content digests of what a COPY/ADD selects, through a persistent stat cache.

The stat cache maps ``(dev, ino, size, mtime_ns, ctime_ns, path)`` to a file's sha256, so a
no-op rebuild never rereads a file. ``touch -r`` can put an mtime back but never a ctime, so
a content change is always seen. An entry whose ctime is too close to the moment it was
hashed is "racy" (the file could change again within the same clock tick without changing
its stat) and is rehashed once more before it is trusted, as git does with its index.

The selection digest covers each entry's relative path, type, mode (permission and special
bits), uid/gid, size, content sha256, link target and xattrs, and never a time. The per-file
manifest it returns lets the solver explain a miss (:func:`explain_diff`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from dockyard.context._paths import (
    SelectedEntry,
    select_sources,
)
from dockyard.context.dockerignore import PatternMatcher
from dockyard.errors import ContextError

__all__ = [
    "DIGEST_VERSION",
    "FileMeta",
    "SelectionDigest",
    "StatCache",
    "digest_selection",
    "explain_diff",
    "hash_file",
]

#: Bumped whenever the serialisation below changes; part of every selection digest.
DIGEST_VERSION = "dockyard.selection.v1"

_CHUNK = 1 << 20
_PARALLEL_MIN_FILES = 8
_PARALLEL_MIN_BYTES = 8 << 20
_SQL_BATCH = 500


def hash_file(path: Path) -> str:
    """sha256 of a file's content, streamed (``"sha256:<hex>"``)."""
    with open(path, "rb", buffering=0) as f:
        digest = hashlib.file_digest(f, "sha256")
    return "sha256:" + digest.hexdigest()


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class StatCache:
    """Persistent ``(dev, ino, size, mtime_ns, ctime_ns, path) -> sha256`` cache.

    ``db_path`` is a SQLite file (WAL), e.g. ``<store>/statcache.db``; ``None`` keeps it in
    memory. Use :meth:`digests` for many files at once: one batched lookup, misses hashed on
    a thread pool (hashlib releases the GIL), one write-back transaction for new entries.
    ``on_read`` is called with each path actually read (tests count rereads with it).
    """

    def __init__(
        self,
        db_path: Path | None = None,
        *,
        racy_window_ns: int = 20_000_000,
        workers: int | None = None,
        on_read: Callable[[Path], None] | None = None,
    ) -> None:
        self.racy_window_ns = racy_window_ns
        self.workers = workers if workers is not None else min(4, os.cpu_count() or 1)
        self.on_read = on_read
        self.reads = 0
        target = str(db_path) if db_path is not None else ":memory:"
        try:
            # shared by the solver's stage threads; every use holds self._db_lock
            self._db_lock = threading.Lock()
            self._db = sqlite3.connect(
                target, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS statcache ("
                " path TEXT PRIMARY KEY, dev INTEGER, ino INTEGER, size INTEGER,"
                " mtime_ns INTEGER, ctime_ns INTEGER, hashed_ns INTEGER, digest TEXT)"
            )
        except sqlite3.Error as err:
            raise ContextError(f"cannot open the stat cache {target}: {err}") from None

    def close(self) -> None:
        """Close the database."""
        with self._db_lock:
            self._db.close()

    def __enter__(self) -> StatCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def file_digest(self, path: Path, st: os.stat_result) -> str:
        """The sha256 of one regular file whose ``os.lstat`` result is ``st``."""
        return self.digests([(path, st)])[0]

    def digests(self, items: Sequence[tuple[Path, os.stat_result]]) -> list[str]:
        """Digests of many regular files (in the order given), reading only the misses."""
        keys = [str(os.path.abspath(p)) for p, _ in items]
        known = self._lookup(keys)
        results: list[str | None] = [None] * len(items)
        todo: list[int] = []
        for i, (key, (_, st)) in enumerate(zip(keys, items, strict=True)):
            row = known.get(key)
            if row is not None and row[0] == _stat_key(st):
                hashed_ns = row[1]
                if st.st_ctime_ns + self.racy_window_ns < hashed_ns:
                    results[i] = row[2]
                    continue
            todo.append(i)
        if todo:
            fresh = self._hash_many([items[i][0] for i in todo], [items[i][1] for i in todo])
            rows = []
            for i, (digest, hashed_ns) in zip(todo, fresh, strict=True):
                results[i] = digest
                st = items[i][1]
                rows.append((keys[i], *_stat_key(st), hashed_ns, digest))
            self._store(rows)
        return [r for r in results if r is not None]

    def _lookup(
        self, keys: list[str]
    ) -> dict[str, tuple[tuple[int, int, int, int, int], int, str]]:
        found: dict[str, tuple[tuple[int, int, int, int, int], int, str]] = {}
        unique = list(dict.fromkeys(keys))
        with self._db_lock:
            self._lookup_into(unique, found)
        return found

    def _lookup_into(
        self, unique: list[str], found: dict[str, tuple[tuple[int, int, int, int, int], int, str]]
    ) -> None:
        for start in range(0, len(unique), _SQL_BATCH):
            chunk = unique[start : start + _SQL_BATCH]
            marks = ",".join("?" * len(chunk))
            cursor = self._db.execute(
                "SELECT path, dev, ino, size, mtime_ns, ctime_ns, hashed_ns, digest"
                f" FROM statcache WHERE path IN ({marks})",
                chunk,
            )
            for path, dev, ino, size, mtime, ctime, hashed_ns, digest in cursor:
                found[path] = ((dev, ino, size, mtime, ctime), hashed_ns, digest)

    def _store(self, rows: list[tuple[str, int, int, int, int, int, int, str]]) -> None:
        try:
            with self._db_lock, self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT OR REPLACE INTO statcache"
                    " (path, dev, ino, size, mtime_ns, ctime_ns, hashed_ns, digest)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
        except sqlite3.Error:
            # The cache is an optimisation: a locked or read-only database only costs rereads.
            pass

    def _hash_one(self, path: Path, st: os.stat_result) -> tuple[str, int]:
        # The time is taken before reading so that a write racing the read is seen as racy.
        hashed_ns = time.time_ns()
        if self.on_read is not None:
            self.on_read(path)
        try:
            digest = hash_file(path)
        except OSError as err:
            raise ContextError(f"cannot read {path}: {err.strerror}") from None
        return digest, hashed_ns

    def _hash_many(self, paths: list[Path], stats: list[os.stat_result]) -> list[tuple[str, int]]:
        self.reads += len(paths)
        total = sum(st.st_size for st in stats)
        if self.workers > 1 and (len(paths) >= _PARALLEL_MIN_FILES or total >= _PARALLEL_MIN_BYTES):
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                return list(pool.map(self._hash_one, paths, stats))
        return [self._hash_one(p, st) for p, st in zip(paths, stats, strict=True)]


@dataclass(frozen=True, slots=True)
class FileMeta:
    """What the digest covers for one entry (never a time)."""

    type: str  # "file", "dir", "symlink", "char", "block", "fifo"
    mode: int  # permission and special bits (st_mode & 0o7777)
    uid: int
    gid: int
    size: int
    sha256: str  # "" for anything but a regular file
    linkname: str = ""  # symlink target
    xattrs: tuple[tuple[str, str], ...] = ()  # (name, hex value), sorted
    rdev: tuple[int, int] = (0, 0)

    def to_json(self) -> list[object]:
        """A compact, stable JSON form (used in the digest and for storage)."""
        return [
            self.type,
            self.mode,
            self.uid,
            self.gid,
            self.size,
            self.sha256,
            self.linkname,
            [list(x) for x in self.xattrs],
            list(self.rdev),
        ]

    @classmethod
    def from_json(cls, data: Sequence[object]) -> FileMeta:
        """Inverse of :meth:`to_json`."""
        kind, mode, uid, gid, size, sha, link, xattrs, rdev = data
        assert isinstance(xattrs, list) and isinstance(rdev, list)
        return cls(
            str(kind),
            int(str(mode)),
            int(str(uid)),
            int(str(gid)),
            int(str(size)),
            str(sha),
            str(link),
            tuple((str(k), str(v)) for k, v in xattrs),
            (int(rdev[0]), int(rdev[1])),
        )


@dataclass(frozen=True, slots=True)
class SelectionDigest:
    """The digest of a selection and its per-path manifest (paths relative to the root)."""

    digest: str
    files: dict[str, FileMeta]


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISCHR(mode):
        return "char"
    if stat.S_ISBLK(mode):
        return "block"
    if stat.S_ISFIFO(mode):
        return "fifo"
    return "socket"


def _xattrs(path: Path) -> tuple[tuple[str, str], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    out = []
    for name in sorted(names):
        # The SELinux label is host policy, not content (BuildKit drops it as well).
        if name == "security.selinux":
            continue
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        out.append((name, value.hex()))
    return tuple(out)


def _manifest(
    entries: Iterable[SelectedEntry], stat_cache: StatCache, zero_owner: bool
) -> dict[str, FileMeta]:
    listed = list(entries)
    regular = [e for e in listed if stat.S_ISREG(e.st.st_mode)]
    shas = dict(
        zip(
            (e.rel for e in regular),
            stat_cache.digests([(e.path, e.st) for e in regular]),
            strict=True,
        )
    )
    files: dict[str, FileMeta] = {}
    for entry in listed:
        st = entry.st
        kind = _kind(st.st_mode)
        if kind == "socket":
            continue
        files[entry.rel] = FileMeta(
            type=kind,
            mode=stat.S_IMODE(st.st_mode),
            uid=0 if zero_owner else st.st_uid,
            gid=0 if zero_owner else st.st_gid,
            size=st.st_size if kind == "file" else 0,
            sha256=shas.get(entry.rel, ""),
            linkname=os.readlink(entry.path) if kind == "symlink" else "",
            xattrs=_xattrs(entry.path),
            rdev=(os.major(st.st_rdev), os.minor(st.st_rdev))
            if kind in ("char", "block")
            else (0, 0),
        )
    return files


def _digest_of(files: dict[str, FileMeta]) -> str:
    h = hashlib.sha256()
    h.update(DIGEST_VERSION.encode() + b"\n")
    for rel in sorted(files):
        line = json.dumps([rel, *files[rel].to_json()], separators=(",", ":"), ensure_ascii=False)
        h.update(line.encode("utf-8", errors="surrogateescape") + b"\n")
    return "sha256:" + h.hexdigest()


def digest_selection(
    ctx_root: Path,
    sources: Sequence[str],
    excludes: Sequence[str],
    stat_cache: StatCache,
    *,
    follow_root_symlinks: bool = True,
    ignore: PatternMatcher | None = None,
    zero_owner: bool = True,
    allow_empty_wildcard: bool = True,
) -> SelectionDigest:
    """Digest the entries ``sources`` select below ``ctx_root``, as COPY would see them.

    ``sources`` are COPY source words relative to ``ctx_root`` (wildcards allowed, with
    Go's ``filepath.Match`` rules); ``excludes`` are ``--exclude`` patterns; ``ignore`` is the
    context's .dockerignore matcher (excluded paths do not exist for COPY). ``zero_owner``
    reports uid/gid 0 for every entry, as BuildKit's client does for the local context; pass
    False for another stage's rootfs. A top-level source that is a symlink is followed within
    the root when ``follow_root_symlinks``. Raises ContextError for a missing source.
    """
    entries = select_sources(
        ctx_root,
        sources,
        excludes=excludes,
        ignore=ignore,
        follow_root_symlinks=follow_root_symlinks,
        allow_empty_wildcard=allow_empty_wildcard,
    )
    files = _manifest(entries, stat_cache, zero_owner)
    return SelectionDigest(_digest_of(files), files)


def _what_changed(old: FileMeta, new: FileMeta) -> str:
    if old.type != new.type:
        return f"type {old.type} -> {new.type}"
    parts = []
    if old.sha256 != new.sha256 or old.size != new.size:
        parts.append("content")
    if old.mode != new.mode:
        parts.append(f"mode {old.mode:o} -> {new.mode:o}")
    if (old.uid, old.gid) != (new.uid, new.gid):
        parts.append(f"owner {old.uid}:{old.gid} -> {new.uid}:{new.gid}")
    if old.linkname != new.linkname:
        parts.append("link target")
    if old.xattrs != new.xattrs:
        parts.append("xattrs")
    if old.rdev != new.rdev:
        parts.append("device")
    return ", ".join(parts) or "metadata"


def explain_diff(old_files: dict[str, FileMeta], new_files: dict[str, FileMeta]) -> list[str]:
    """Human lines for what differs, sorted by path: ``"src/main.c (content)"``,
    ``"src/util.h (added)"``, ``"old.txt (removed)"``. Directories that only changed because
    of their children are left out."""
    lines: list[str] = []
    for rel in sorted(set(old_files) | set(new_files)):
        old = old_files.get(rel)
        new = new_files.get(rel)
        if old == new:
            continue
        if old is None:
            lines.append(f"{rel} (added)")
        elif new is None:
            lines.append(f"{rel} (removed)")
        else:
            lines.append(f"{rel} ({_what_changed(old, new)})")
    return lines


def iter_manifest_json(files: dict[str, FileMeta]) -> Iterator[tuple[str, list[object]]]:
    """(path, json) pairs of a manifest, for storing it with a cache record."""
    for rel in sorted(files):
        yield rel, files[rel].to_json()
