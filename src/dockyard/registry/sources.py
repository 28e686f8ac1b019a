"""Where blobs were seen: (registry, repository) pairs per digest, for cross-repository
mounts on push (Docker keeps the same in its ``v2metadata``).

A hint, never a truth: a mount that fails just uploads. Kept in its own SQLite file in the
store root (``registry.db``) so the store's schema does not change for it; losing the file
only costs uploads that a mount would have saved.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = ["BlobSources"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blob_sources (
    digest TEXT NOT NULL,
    registry TEXT NOT NULL,
    repository TEXT NOT NULL,
    seen REAL NOT NULL,
    PRIMARY KEY (digest, registry, repository)
) WITHOUT ROWID;
"""


class BlobSources:
    """The blob-source records of the store at ``root``."""

    def __init__(self, root: Path) -> None:
        self.path = root / "registry.db"

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)
        return conn

    def record(self, registry: str, repository: str, digests: Iterable[str]) -> None:
        """Remember that ``registry``/``repository`` has these blobs (best effort)."""
        rows = [(d, registry, repository, time.time()) for d in digests]
        if not rows:
            return
        with contextlib.suppress(sqlite3.Error, OSError):
            conn = self._connect()
            try:
                with conn:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany("INSERT OR REPLACE INTO blob_sources VALUES (?,?,?,?)", rows)
            finally:
                conn.close()

    def repositories(self, registry: str, digest: str) -> list[str]:
        """Repositories of ``registry`` known to hold ``digest``, most recently seen first."""
        if not self.path.exists():
            return []
        try:
            conn = self._connect()
        except (sqlite3.Error, OSError):
            return []
        try:
            rows = conn.execute(
                "SELECT repository FROM blob_sources WHERE digest=? AND registry=?"
                " ORDER BY seen DESC", (digest, registry)).fetchall()
        except sqlite3.Error:
            return []
        finally:
            conn.close()
        return [r[0] for r in rows]
