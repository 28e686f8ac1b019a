"""The ``snapshots`` table: which committed snapshots exist, under which key, with which
parent, and when each was last used. The directories themselves belong to the snapshotter
(``dockyard.snapshot``); this table is what garbage collection walks."""

from __future__ import annotations

from dataclasses import dataclass

from dockyard.store.database import Database, now

__all__ = ["SnapshotRecord", "Snapshots"]

_COLUMNS = "chain_id, snapshotter, key, parent, size, created, last_used"


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


class Snapshots:
    """The snapshot records."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def put(self, record: SnapshotRecord) -> None:
        """Record (or replace) a committed snapshot."""
        when = now()
        with self._db.write() as db:
            db.execute(
                f"INSERT OR REPLACE INTO snapshots({_COLUMNS}) VALUES (?,?,?,?,?,?,?)",
                (
                    record.chain_id,
                    record.snapshotter,
                    record.key,
                    record.parent,
                    record.size,
                    record.created or when,
                    record.last_used or when,
                ),
            )

    def get(self, chain_id: str, snapshotter: str) -> SnapshotRecord | None:
        """The snapshot of ``chain_id`` made by ``snapshotter``, or None."""
        row = self._db.conn.execute(
            f"SELECT {_COLUMNS} FROM snapshots WHERE chain_id=? AND snapshotter=?",
            (chain_id, snapshotter),
        ).fetchone()
        return SnapshotRecord(*row) if row else None

    def touch(self, chain_id: str, snapshotter: str, when: float | None = None) -> None:
        """Mark a snapshot used now."""
        with self._db.write() as db:
            db.execute(
                "UPDATE snapshots SET last_used=? WHERE chain_id=? AND snapshotter=?",
                (when or now(), chain_id, snapshotter),
            )

    def all(self, snapshotter: str | None = None) -> list[SnapshotRecord]:
        """Every snapshot record (of one snapshotter, if given)."""
        sql = f"SELECT {_COLUMNS} FROM snapshots"
        conn = self._db.conn
        rows = (
            conn.execute(sql + " WHERE snapshotter=?", (snapshotter,))
            if snapshotter is not None
            else conn.execute(sql)
        )
        return [SnapshotRecord(*r) for r in rows]

    def delete(self, chain_id: str, snapshotter: str) -> None:
        """Forget a snapshot record (the directory is the snapshotter's to remove)."""
        with self._db.write(invalidates=True) as db:
            db.execute(
                "DELETE FROM snapshots WHERE chain_id=? AND snapshotter=?", (chain_id, snapshotter)
            )
