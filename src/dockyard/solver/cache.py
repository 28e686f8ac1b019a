"""The cache backend seam: where the solver looks a step's key up and records its result.

The walker only asks a :class:`CacheBackend` three things: is there a result for this key
(:meth:`~CacheBackend.lookup`), can its layer be had here (:meth:`~CacheBackend.fetch`), and
keep this new result (:meth:`~CacheBackend.save`). A result is a
:class:`~dockyard.store.db.CacheRecord`: the key, the layer it made (its diff id, ``None``
when the step changed nothing) and when it was made. Records are self-contained and keys are
independent of the machine (canonical JSON of the op, content digests, parent keys; never a
path, inode or time of this host), so a record made here is valid on any machine that has
the layer: the contract a registry, local-directory or inline backend builds on (BuildKit's
``solver.CacheManager``: ``Query``/``Records``/``Load``).

:class:`LocalCache` is the store's own cache; it is the one the solver uses today.
"""

from __future__ import annotations

from typing import Protocol

from dockyard.solver.snapshots import LayerSnapshots
from dockyard.store.db import CacheRecord, Store


class CacheBackend(Protocol):
    """A place that may hold the results of earlier steps, by cache key."""

    def lookup(self, key: str) -> CacheRecord | None:
        """The result recorded for ``key``, or None. Cheap: no layer is transferred."""
        ...

    def fetch(self, record: CacheRecord) -> bool:
        """Make ``record``'s layer available in the local store (a blob or a snapshot) so the
        build can use it; False when it cannot be had (the step then runs as a miss).
        A record without a layer (``diff_id`` None) needs nothing."""
        ...

    def mark_used(self, key: str) -> None:
        """Note that the record of ``key`` was reused now (for pruning by age)."""
        ...

    def save(self, record: CacheRecord) -> None:
        """Keep the result of a step that just ran (its layer is already in the local store)."""
        ...


class LocalCache:
    """The cache records of the local store, whose layers are its blobs and snapshots."""

    def __init__(self, store: Store, layers: LayerSnapshots) -> None:
        self.store = store
        self.layers = layers

    def lookup(self, key: str) -> CacheRecord | None:
        return self.store.get_cache_record(key)

    def fetch(self, record: CacheRecord) -> bool:
        return not record.diff_id or self.layers.layer_available(record.diff_id)

    def mark_used(self, key: str) -> None:
        self.store.touch_cache_record(key)

    def save(self, record: CacheRecord) -> None:
        self.store.put_cache_record(record)
