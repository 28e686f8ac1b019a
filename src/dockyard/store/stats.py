"""The stat cache (``statcache.db``): ``(dev, inode, size, mtime_ns, ctime_ns) -> sha256`` of
context files, so a file whose stat did not change is not hashed again. Any change to a
file's content moves its ctime, which nobody can set back. Disposable: see database.py."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from dockyard.store.database import Database, i64

__all__ = ["StatCache", "StatKey"]


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


class StatCache:
    """The stat cache table, in its own database file."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def get_many(self, keys: Iterable[StatKey]) -> dict[StatKey, str]:
        """Digests of the files whose stat is unchanged since they were hashed."""
        wanted: dict[tuple[int, int], StatKey] = {(i64(k.dev), i64(k.ino)): k for k in keys}
        if not wanted:
            return {}
        found: dict[StatKey, str] = {}
        db = self._db.stat_conn
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

    def get(self, key: StatKey) -> str | None:
        """The digest for one unchanged file, or None."""
        return self.get_many([key]).get(key)

    def put_many(self, entries: Iterable[tuple[StatKey, str]]) -> None:
        """Remember (stat key -> sha256 digest) for files just hashed."""
        rows = [
            (i64(k.dev), i64(k.ino), k.size, k.mtime_ns, k.ctime_ns, digest)
            for k, digest in entries
        ]
        if not rows:
            return
        with self._db.write(self._db.stat_conn) as db:
            db.executemany("INSERT OR REPLACE INTO stat_cache VALUES (?,?,?,?,?,?)", rows)

    def clear(self) -> None:
        """Forget the whole stat cache."""
        with self._db.write(self._db.stat_conn) as db:
            db.execute("DELETE FROM stat_cache")
