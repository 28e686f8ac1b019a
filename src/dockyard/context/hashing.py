"""Content digests of what a COPY/ADD selects, through a persistent stat cache.

The stat cache maps ``(dev, ino, size, mtime_ns, ctime_ns, path)`` to a file's sha256 and
xattrs, so a no-op rebuild never rereads a file (nor lists its xattrs: setting one changes
the ctime). ``touch -r`` can put an mtime back but never a ctime, so
a content change is always seen. An entry whose ctime is too close to the moment it was
hashed is "racy" (the file could change again within the same clock tick without changing
its stat) and is rehashed once more before it is trusted, as git does with its index. "Too
close" is the file system's timestamp granularity plus :attr:`StatCache.racy_window_ns`: on
a file system with 1-second times, a file hashed in the second its ctime names stays racy
(see ``dockyard/_timestamps.py``).

The selection digest covers each entry's relative path, type, mode (permission and special
bits), uid/gid, size, content sha256, link target, xattrs and which regular files of the
selection are hard links of one another (a COPY keeps them linked), and never a time. The
per-file manifest it returns lets the solver explain a miss (:func:`explain_diff`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dockyard._timestamps import settled_after
from dockyard._xattrs import keep_xattr
from dockyard.context._paths import (
    StatLike,
    Walk,
    parent_dirs,
    select_sources,
    split_pivot,
)
from dockyard.context.dockerignore import PatternMatcher
from dockyard.errors import ContextError

__all__ = [
    "CONTEXT_ROOT",
    "DIGEST_VERSION",
    "FileMeta",
    "SelectionDigest",
    "StatCache",
    "StatKey",
    "digest_selection",
    "explain_diff",
    "hardlink_groups",
    "hash_file",
    "stat_key",
]

#: Bumped whenever the serialisation below changes; part of every selection digest.
DIGEST_VERSION = "dockyard.selection.v4"
# v2 -> v3: each record ends with the entry's hard-link group (see hardlink_groups)
# v3 -> v4: COPY --parents digests the parent directories it recreates (parent_meta)

_CHUNK = 1 << 20
_PARALLEL_MIN_FILES = 8
_PARALLEL_MIN_BYTES = 8 << 20
_SQL_BATCH = 500
#: Files hashed (and written back to the stat cache) at a time: a pool's futures and the
#: new rows of 100,000 files at once took ~90 MB (issue 18).
_HASH_BATCH = 1024

_Xattrs = tuple[tuple[str, str], ...]
#: (dev, ino, size, mtime_ns, ctime_ns, hashed_ns, digest, xattrs JSON or "")
_Row = tuple[int, int, int, int, int, int, str, str]
_NO_XATTRS: _Xattrs = ()
_NO_RDEV = (0, 0)
#: What follows the sha256 in the record of a regular file without xattrs or hard links: an
#: empty link target, device 0 0, no xattrs, no hard-link group (see _record).
_FILE_TAIL = "\0\0" + "0\0" * 3 + "\0"
_KINDS = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
    stat.S_IFIFO: "fifo",
}


def hash_file(path: Path) -> str:
    """sha256 of a file's content, streamed (``"sha256:<hex>"``)."""
    with open(path, "rb", buffering=0) as f:
        digest = hashlib.file_digest(f, "sha256")
    return "sha256:" + digest.hexdigest()


def _stat_key(st: StatLike) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class StatCache:
    """Persistent ``(dev, ino, size, mtime_ns, ctime_ns, path) -> (sha256, xattrs)`` cache.

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
            # v2 adds the xattrs; the v1 table ("statcache") is dropped once, when seen.
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS statcache2 ("
                " path TEXT PRIMARY KEY, dev INTEGER, ino INTEGER, size INTEGER,"
                " mtime_ns INTEGER, ctime_ns INTEGER, hashed_ns INTEGER, digest TEXT,"
                " xattrs TEXT) WITHOUT ROWID"
            )
            old = "SELECT 1 FROM sqlite_master WHERE type='table' AND name='statcache'"
            if self._db.execute(old).fetchone() is not None:
                self._drop_v1()
        except sqlite3.Error as err:
            raise ContextError(f"cannot open the stat cache {target}: {err}") from None

    def _drop_v1(self) -> None:
        # Disposable: a busy database keeps it until the next open.
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("DROP TABLE IF EXISTS statcache")

    def close(self) -> None:
        """Close the database."""
        with self._db_lock:
            self._db.close()

    def __enter__(self) -> StatCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def file_digest(self, path: Path, st: StatLike) -> str:
        """The sha256 of one regular file whose ``os.lstat`` result is ``st``."""
        return self.digests([(path, st)])[0]

    def digests(self, items: Sequence[tuple[Path, StatLike]]) -> list[str]:
        """Digests of many regular files (in the order given), reading only the misses."""
        paths = [os.path.abspath(p) for p, _ in items]
        found = self.lookup(paths, [st for _, st in items])
        return [digest for digest, _ in found]

    def lookup(
        self,
        paths: Sequence[str],
        stats: Sequence[StatLike],
        prefixes: Sequence[str] = (),
    ) -> list[tuple[str, _Xattrs]]:
        """``(digest, xattrs)`` of regular files given by absolute path and ``os.lstat``.

        Every path under one of the directory ``prefixes`` (each ending in "/") is looked
        up with one range query per prefix; the rest one by one, in batches.
        """
        return [(digest, xattrs) for digest, xattrs, _ in self.lookup_timed(
            paths, stats, prefixes)]

    def lookup_timed(
        self,
        paths: Sequence[str],
        stats: Sequence[StatLike],
        prefixes: Sequence[str] = (),
    ) -> list[tuple[str, _Xattrs, int]]:
        """:meth:`lookup`, each answer with the time (ns) just before the bytes it digests
        were read (this build's read, or the one the trusted entry comes from).

        The stored rows are matched as they are read (never all held at once: 100,000 rows
        took ~57 MB), and the misses are hashed and written back in batches."""
        results: list[tuple[str, _Xattrs, int] | None] = [None] * len(paths)
        racy = self.racy_window_ns
        for i, row in self._matching_rows(paths, prefixes):
            st = stats[i]
            if (
                row[4] == st.st_ctime_ns
                and row[3] == st.st_mtime_ns
                and row[2] == st.st_size
                and row[1] == st.st_ino
                and row[0] == st.st_dev
                # a fine-grained ctime needs only the window; a coarse one its whole tick
                and (
                    st.st_ctime_ns + racy < row[5]
                    if st.st_ctime_ns % 10_000_000
                    else settled_after(st.st_ctime_ns, racy) < row[5]
                )
            ):
                results[i] = (row[6], _decode_xattrs(row[7]) if row[7] else _NO_XATTRS, row[5])
        todo = [i for i, found in enumerate(results) if found is None]
        if todo:
            with self._hashing_pool(todo, stats) as pool:
                for start in range(0, len(todo), _HASH_BATCH):
                    batch = todo[start:start + _HASH_BATCH]
                    fresh = self._hash_many([paths[i] for i in batch],
                                            [stats[i] for i in batch], pool)
                    rows = []
                    for i, (digest, xattrs, hashed_ns) in zip(batch, fresh, strict=True):
                        results[i] = (digest, xattrs, hashed_ns)
                        rows.append((paths[i], *_stat_key(stats[i]), hashed_ns, digest,
                                     _encode_xattrs(xattrs)))
                    self._store(rows)
        return [r for r in results if r is not None]

    def _matching_rows(
        self, paths: Sequence[str], prefixes: Sequence[str]
    ) -> Iterator[tuple[int, _Row]]:
        """``(index in paths, stored row)`` for every path the cache has a row for. Paths
        under one of the directory ``prefixes`` are matched against one range query per
        prefix, both sides in path order (SQLite's BINARY order of UTF-8 text is Python's
        code point order); the rest are looked up in batches."""
        from bisect import bisect_left

        select = (
            "SELECT path, dev, ino, size, mtime_ns, ctime_ns, hashed_ns, digest, xattrs"
            " FROM statcache2 WHERE "
        )
        unique = tuple(dict.fromkeys(prefixes))
        with self._db_lock:
            if unique:
                order = sorted(range(len(paths)), key=paths.__getitem__)
                ordered = [paths[i] for i in order]
                for prefix in unique:
                    # every path starting with "<dir>/" sorts in ["<dir>/", "<dir>0")
                    end = prefix[:-1] + "0"
                    j, stop = bisect_left(ordered, prefix), bisect_left(ordered, end)
                    if j == stop:
                        continue
                    cursor = self._db.execute(
                        select + "path > ? AND path < ? ORDER BY path", (prefix, end))
                    for row in cursor:
                        path = row[0]
                        while j < stop and ordered[j] < path:
                            j += 1
                        if j == stop:
                            break
                        while j < stop and ordered[j] == path:
                            yield order[j], row[1:]
                            j += 1
                    cursor.close()
                del order, ordered
            # A name that is not UTF-8 cannot be a key (it is hashed each time instead).
            rest: dict[str, list[int]] = {}
            for i, path in enumerate(paths):
                if not (unique and path.startswith(unique)) and _utf8(path):
                    rest.setdefault(path, []).append(i)
            names = list(rest)
            for start in range(0, len(names), _SQL_BATCH):
                chunk = names[start : start + _SQL_BATCH]
                marks = ",".join("?" * len(chunk))
                for row in self._db.execute(select + f"path IN ({marks})", chunk):
                    for i in rest[row[0]]:
                        yield i, row[1:]

    def _store(self, rows: list[tuple[str, int, int, int, int, int, int, str, str]]) -> None:
        rows = [r for r in rows if _utf8(r[0])]
        try:
            with self._db_lock, self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT OR REPLACE INTO statcache2"
                    " (path, dev, ino, size, mtime_ns, ctime_ns, hashed_ns, digest, xattrs)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
        except sqlite3.Error:
            # The cache is an optimisation: a locked or read-only database only costs rereads.
            pass

    def _hash_one(self, path: str, st: StatLike) -> tuple[str, _Xattrs, int]:
        # The time is taken before reading so that a write racing the read is seen as racy.
        hashed_ns = time.time_ns()
        if self.on_read is not None:
            self.on_read(Path(path))
        try:
            digest = hash_file(Path(path))
        except OSError as err:
            raise ContextError(f"cannot read {path}: {err.strerror}") from None
        return digest, _xattrs(path), hashed_ns

    @contextlib.contextmanager
    def _hashing_pool(self, todo: Sequence[int], stats: Sequence[StatLike]) -> Iterator[Any]:
        """A thread pool for hashing ``todo`` when it is worth one (hashlib releases the
        GIL), else None."""
        if self.workers > 1 and (len(todo) >= _PARALLEL_MIN_FILES or sum(
                stats[i].st_size for i in todo) >= _PARALLEL_MIN_BYTES):
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                yield pool
            return
        yield None

    def _hash_many(
        self, paths: list[str], stats: list[StatLike], pool: Any = None,
    ) -> list[tuple[str, _Xattrs, int]]:
        self.reads += len(paths)
        if pool is not None:
            return list(pool.map(self._hash_one, paths, stats))
        return [self._hash_one(p, st) for p, st in zip(paths, stats, strict=True)]


def _utf8(path: str) -> bool:
    """Whether ``path`` is valid UTF-8 text (a file name that is not holds surrogates)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _encode_xattrs(xattrs: _Xattrs) -> str:
    return json.dumps(xattrs, separators=(",", ":")) if xattrs else ""


def _decode_xattrs(text: str) -> _Xattrs:
    # a row of an older version may hold an attribute no layer keeps
    return tuple((str(k), str(v)) for k, v in json.loads(text) if keep_xattr(str(k)))


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
    #: for a regular file that is a hard link of other selected files: the first path of its
    #: group (sorted; :func:`hardlink_groups`), else ""
    hardlink: str = ""

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
            self.hardlink,
        ]

    @classmethod
    def from_json(cls, data: Sequence[object]) -> FileMeta:
        """Inverse of :meth:`to_json` (a manifest stored before hard links were recorded has
        9 fields)."""
        kind, mode, uid, gid, size, sha, link, xattrs, rdev = data[:9]
        hardlink = data[9] if len(data) > 9 else ""
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
            str(hardlink),
        )


#: What identifies one state of an entry: ``(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)``
StatKey = tuple[int, int, int, int, int]


def stat_key(st: StatLike) -> StatKey:
    """The :data:`StatKey` of an ``os.lstat`` / ``os.fstat`` result."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True, slots=True)
class SelectionDigest:
    """The digest of a selection and its per-path manifest (paths relative to the root).

    ``walk`` is the selection the digest was made of (:class:`~dockyard.context._paths.
    Walk`): the COPY copies from it, so the context is walked once per build. ``proven``
    marks (one byte per entry of the walk) the entries whose state at digest time is proven
    by their stat: the entry's ctime was settled (its clock tick over) before it was
    observed, so any later change to it - content, mode, owner, xattrs - moves its ctime.
    An entry whose stat still equals the walk's is exactly what was digested (the copy checks
    this, :func:`dockyard.context.copy.copy_into`'s ``expect``); an entry without a proof
    changed just before the build and is checked by content."""

    digest: str
    files: Mapping[str, FileMeta]
    #: ``COPY --parents``: the directories between each source's pivot and its match, which
    #: the copy recreates with their metadata (path relative to the root -> what it applies)
    parents: dict[str, FileMeta] = field(default_factory=dict)
    walk: Walk | None = field(default=None, compare=False, repr=False)
    proven: bytearray = field(default_factory=bytearray)

    @property
    def proofs(self) -> dict[str, StatKey]:
        """Path -> the :data:`StatKey` that proves it, for the proven entries (made on
        demand: the copy reads :attr:`proven` and the walk)."""
        walk = self.walk
        if walk is None:
            return {}
        return {walk.rels[i]: walk.stat_key(i) for i, flag in enumerate(self.proven) if flag}


#: How a build context's root directory is recorded when a source selects it (``COPY .``,
#: a bind mount of the context): BuildKit's client never sends the root's own metadata (its
#: content hash fakes the root's header with a constant), so a chmod of the context
#: directory changes no key. Nothing copies it either: a directory source's own metadata
#: never reaches the destination (its contents do).
CONTEXT_ROOT = FileMeta("dir", 0o755, 0, 0, 0, "")


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "socket")


def _xattrs(path: str | Path) -> _Xattrs:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return _NO_XATTRS
    if not names:
        return _NO_XATTRS
    out = []
    for name in sorted(names):
        # only what a layer keeps (an SELinux label, an ACL is host policy, not content)
        if not keep_xattr(name):
            continue
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        out.append((name, value.hex()))
    return tuple(out)


def _record(rel: str, meta: FileMeta) -> str:
    """One entry of the digested manifest: NUL-terminated fields (no field can hold a NUL;
    the xattr count makes the variable part unambiguous)."""
    if meta.type == "file" and not meta.xattrs and not meta.hardlink:
        # the common case, formatted at once (the same text as the general form below)
        return (f"{rel}\0file\0{meta.mode:o}\0{meta.uid}\0{meta.gid}\0{meta.size}\0"
                f"{meta.sha256}{_FILE_TAIL}")
    fields = [
        rel,
        meta.type,
        f"{meta.mode:o}",
        str(meta.uid),
        str(meta.gid),
        str(meta.size),
        meta.sha256,
        meta.linkname,
        str(meta.rdev[0]),
        str(meta.rdev[1]),
        str(len(meta.xattrs)),
    ]
    for name, value in meta.xattrs:
        fields += (name, value)
    fields.append(meta.hardlink)
    return "\0".join(fields) + "\0"


def hardlink_groups(entries: Iterable[tuple[str, StatLike]]) -> dict[str, str]:
    """Which selected regular files a COPY makes hard links of one another: per ``(rel,
    lstat)`` of such a file, the first ``rel`` of its group (sorted).

    The copy links a regular file to the one copied before it with the same device and inode
    when its ``lstat`` showed more than one link (:meth:`dockyard.context.copy._Copier.
    copy_entry`), so a group is the selected files with ``st_nlink > 1`` and one ``(st_dev,
    st_ino)``, of more than one path. Links to files outside the selection do not count:
    the copy cannot keep them. Splitting a pair into two files of the same bytes, or joining
    two such files, changes what the layer holds (a hard link or a second file), and this."""
    by_inode: dict[tuple[int, int], set[str]] = {}
    for rel, st in entries:
        if st.st_nlink > 1 and stat.S_ISREG(st.st_mode):
            by_inode.setdefault((st.st_dev, st.st_ino), set()).add(rel)
    groups: dict[str, str] = {}
    for rels in by_inode.values():
        if len(rels) > 1:
            first = min(rels)
            for rel in rels:
                groups[rel] = first
    return groups


def _manifest(
    walk: Walk,
    stat_cache: StatCache,
    zero_owner: bool,
    prefixes: Sequence[str],
    observed_ns: int,
    context_root: str | None = None,
) -> tuple[dict[str, FileMeta], bytearray]:
    """The manifest of ``walk``, and which of its entries are proven (see
    :class:`SelectionDigest`: ``lstat``-ed after ``observed_ns``, their ctime settled). The
    directory ``context_root``, when selected itself, is recorded as :data:`CONTEXT_ROOT`."""
    modes = walk.st_mode
    rels = walk.rels
    regular = [i for i in range(len(walk)) if stat.S_ISREG(modes[i])]
    paths = [Walk.path_in(g, rels[i], i) for g in walk.groups for i in range(g.start, g.end)
             if stat.S_ISREG(modes[i])]
    # in entry order, so the main loop takes them one by one
    found = iter(stat_cache.lookup_timed(paths, _WalkStats(walk, regular), prefixes))
    del paths
    files: dict[str, FileMeta] = {}
    proven = bytearray(len(walk))
    kinds = _KINDS
    window = stat_cache.racy_window_ns
    uids, gids, sizes, ctimes = walk.st_uid, walk.st_gid, walk.st_size, walk.st_ctime_ns
    for group in walk.groups:
        for i in range(group.start, group.end):
            mode = modes[i]
            kind = kinds.get(mode & 0o170000)
            if kind is None:
                continue  # a socket is not copied
            rel = rels[i]
            if zero_owner:
                uid = gid = 0
            else:
                uid, gid = uids[i], gids[i]
            perm = mode & 0o7777
            if kind == "file":
                sha, xattrs, read_ns = next(found)
                if settled_after(ctimes[i], window) < min(read_ns, observed_ns):
                    proven[i] = 1
                files[rel] = FileMeta(kind, perm, uid, gid, sizes[i], sha, "", xattrs,
                                      _NO_RDEV)
                continue
            path = Walk.path_in(group, rel, i)
            if path == context_root:
                files[rel] = CONTEXT_ROOT  # its own metadata is never sent to BuildKit
                continue
            if settled_after(ctimes[i], window) < observed_ns:
                proven[i] = 1
            rdev = walk.st_rdev[i]
            files[rel] = FileMeta(
                kind,
                perm,
                uid,
                gid,
                0,
                "",
                os.readlink(path) if kind == "symlink" else "",
                _xattrs(path),
                (os.major(rdev), os.minor(rdev)) if kind in ("char", "block") else _NO_RDEV,
            )
    nlinks = walk.st_nlink
    groups = hardlink_groups((rels[i], walk.stat(i)) for i in regular if nlinks[i] > 1)
    for rel, first in groups.items():
        files[rel] = replace(files[rel], hardlink=first)
    return files, proven


class _WalkStats(Sequence[StatLike]):
    """The stats of some entries of a walk, made as they are asked for."""

    def __init__(self, walk: Walk, indices: Sequence[int]) -> None:
        self._walk = walk
        self._indices = indices

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, j: int) -> StatLike:  # type: ignore[override]
        return self._walk.stat(self._indices[j])


_DIGEST_BATCH = 4096


def _digest_of(files: Mapping[str, FileMeta], parents: dict[str, FileMeta] | None = None) -> str:
    """One sha256 over the records (:func:`_record`), sorted by path, fed to the hash a
    batch at a time (the text of 100,000 records is ~20 MB). With ``parents`` (``COPY
    --parents``), their count and records come first (each record is self-delimiting)."""
    sha = hashlib.sha256()
    text = DIGEST_VERSION + "\n"
    if parents is not None:
        text += f"{len(parents)}\0" + "".join(
            [_record(rel, parents[rel]) for rel in sorted(parents)])
    sha.update(text.encode("utf-8", "surrogateescape"))
    batch: list[str] = []
    for rel in sorted(files):
        batch.append(_record(rel, files[rel]))
        if len(batch) >= _DIGEST_BATCH:
            sha.update("".join(batch).encode("utf-8", "surrogateescape"))
            batch.clear()
    sha.update("".join(batch).encode("utf-8", "surrogateescape"))
    return "sha256:" + sha.hexdigest()


def parent_meta(path: str | Path, st: StatLike, zero_owner: bool) -> FileMeta:
    """What ``COPY --parents`` applies to a directory it recreates from ``path`` (whose
    ``lstat`` is ``st``): its mode, owner (0:0 from a build context) and xattrs."""
    uid, gid = (0, 0) if zero_owner else (st.st_uid, st.st_gid)
    return FileMeta("dir", stat.S_IMODE(st.st_mode), uid, gid, 0, "", "", _xattrs(path))


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
    context: bool = False,
    parents: bool = False,
) -> SelectionDigest:
    """Digest the entries ``sources`` select below ``ctx_root``, as COPY would see them.

    ``sources`` are COPY source words relative to ``ctx_root`` (wildcards allowed, with
    Go's ``filepath.Match`` rules); ``excludes`` are ``--exclude`` patterns; ``ignore`` is the
    context's .dockerignore matcher (excluded paths do not exist for COPY). ``zero_owner``
    reports uid/gid 0 for every entry, as BuildKit's client does for the local context; pass
    False for another stage's rootfs. A top-level source that is a symlink is followed within
    the root when ``follow_root_symlinks``. ``context``: ``ctx_root`` is a build context,
    whose root directory, when selected, is recorded as :data:`CONTEXT_ROOT`. ``parents``
    (``COPY --parents``): the directories between each source's pivot (``a/./b``) and its
    matches are digested too (:func:`parent_meta`; :attr:`SelectionDigest.parents`). Raises
    ContextError for a missing source.
    """
    # Absolute once, so every walked path is already the stat cache's absolute key.
    root = Path(os.path.abspath(ctx_root))
    observed_ns = time.time_ns()  # before any entry is looked at
    walk = select_sources(
        root,
        sources,
        excludes=excludes,
        ignore=ignore,
        follow_root_symlinks=follow_root_symlinks,
        allow_empty_wildcard=allow_empty_wildcard,
    )
    prefixes = [
        g.top if g.top.endswith("/") else g.top + "/"
        for g in walk.groups
        if stat.S_ISDIR(walk.st_mode[g.start])
    ]
    files, proven = _manifest(walk, stat_cache, zero_owner, prefixes, observed_ns,
                              str(root) if context else None)
    if not parents:
        return SelectionDigest(_digest_of(files), files, walk=walk, proven=proven)
    dirs: dict[str, FileMeta] = {}
    for group in walk.groups:
        for rel, path in parent_dirs(root, split_pivot(group.src)[0], group.match):
            if rel not in dirs:
                try:
                    st = os.lstat(path)
                except OSError as err:
                    raise ContextError(f"cannot read {rel}: {err.strerror}") from None
                dirs[rel] = parent_meta(path, st, zero_owner)
    return SelectionDigest(_digest_of(files, dirs), files, dirs, walk, proven)


def _what_changed(rel: str, old: FileMeta, new: FileMeta) -> str:
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
    if old.hardlink != new.hardlink:
        parts.append(_link_change(rel, old.hardlink, new.hardlink))
    return ", ".join(parts) or "metadata"


def _link_change(rel: str, old: str, new: str) -> str:
    """How a file's hard-link group changed (``old``/``new``: the first path of its group)."""
    before = "hard-linked" if old == rel else f"a hard link of {old}" if old else ""
    after = "hard-linked" if new == rel else f"a hard link of {new}" if new else ""
    if not before:
        return f"now {after}"
    if not after:
        return f"no longer {before}"
    return f"{before} -> {after}"


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
            lines.append(f"{rel} ({_what_changed(rel, old, new)})")
    return lines


def explain_diff_items(
    old_items: Iterable[tuple[str, Any]], new_files: Mapping[str, FileMeta],
) -> list[str]:
    """:func:`explain_diff` against an old manifest given as its stored ``(path, json)``
    pairs, read one at a time: only the entries that differ are decoded into
    :class:`FileMeta`, so a one-file change in 100,000 files holds one old entry, not all."""
    old_changed: dict[str, FileMeta] = {}
    seen: set[str] = set()
    for rel, value in old_items:
        new = new_files.get(rel)
        if new is not None:
            seen.add(rel)
            if value == new.to_json():
                continue
        old_changed[rel] = FileMeta.from_json(value)
    new_changed = {rel: meta for rel, meta in new_files.items()
                   if rel in old_changed or rel not in seen}
    return explain_diff(old_changed, new_changed)


class ManifestJson(Mapping[str, list[object]]):
    """A manifest's entries as their JSON form (:meth:`FileMeta.to_json`), made as they are
    asked for: the build history packs it an entry at a time (issue 18)."""

    def __init__(self, files: Mapping[str, FileMeta]) -> None:
        self._files = files

    def __getitem__(self, rel: str) -> list[object]:
        return self._files[rel].to_json()

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def __eq__(self, other: object) -> bool:
        # Only against another one: comparing with a stored (packed) manifest would decode
        # all of it (the build compares its history with the last one); a changed manifest
        # differs anyway, and an unchanged one is the stored object itself.
        return isinstance(other, ManifestJson) and self._files == other._files

    __hash__ = None  # type: ignore[assignment]


def iter_manifest_json(files: Mapping[str, FileMeta]) -> Iterator[tuple[str, list[object]]]:
    """(path, json) pairs of a manifest, for storing it with a cache record."""
    for rel in sorted(files):
        yield rel, files[rel].to_json()
