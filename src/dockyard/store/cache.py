"""Build cache records (``cache_records``): a step's cache key -> what the step produced.

The records are the solver's; their ``result`` and ``explain`` documents are opaque here.
What the cache costs and how it is pruned by a policy is :mod:`dockyard.store.cache_gc`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dockyard.store.database import Database, now

__all__ = ["CacheRecord", "CacheRecords"]

_COLUMNS = "key, diff_id, chain_id, result, explain, description, created, last_used"


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


def _record(row: tuple[Any, ...]) -> CacheRecord:
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


class CacheRecords:
    """The build cache index."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def put(self, record: CacheRecord) -> None:
        """Record (or replace) a cache entry; zero times become now."""
        when = now()
        with self._db.write(invalidates=True) as db:
            db.execute(
                f"INSERT OR REPLACE INTO cache_records({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
                (
                    record.key,
                    record.diff_id,
                    record.chain_id,
                    json.dumps(dict(record.result), sort_keys=True),
                    json.dumps(dict(record.explain), sort_keys=True),
                    record.description,
                    record.created or when,
                    record.last_used or when,
                ),
            )

    def get(self, key: str) -> CacheRecord | None:
        """The cache entry for ``key``, or None."""
        row = self._db.conn.execute(
            f"SELECT {_COLUMNS} FROM cache_records WHERE key=?", (key,)
        ).fetchone()
        return _record(row) if row else None

    def touch(self, key: str, when: float | None = None) -> None:
        """Mark a cache entry used (for ``cache prune --older-than``)."""
        with self._db.write() as db:
            db.execute("UPDATE cache_records SET last_used=? WHERE key=?", (when or now(), key))

    def all(self) -> list[CacheRecord]:
        """Every cache entry, least recently used first."""
        rows = self._db.conn.execute(
            f"SELECT {_COLUMNS} FROM cache_records ORDER BY last_used, key"
        )
        return [_record(r) for r in rows]

    def delete(self, keys: Iterable[str]) -> int:
        """Delete the entries with these keys; returns how many existed."""
        with self._db.write(invalidates=True) as db:
            return sum(
                db.execute("DELETE FROM cache_records WHERE key=?", (k,)).rowcount for k in keys
            )

    def delete_all(self) -> int:
        """Drop the whole build cache index (layers go at the next prune)."""
        with self._db.write(invalidates=True) as db:
            return db.execute("DELETE FROM cache_records").rowcount
