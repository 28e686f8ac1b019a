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

:class:`LocalCache` is the store's own cache. :class:`ImportedCache` answers from caches
imported with ``--cache-from`` (their records read once, their layers downloaded lazily), and
:class:`ChainCache` asks the local store first, then the imported caches.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Protocol

from dockyard.solver.snapshots import LayerSnapshots
from dockyard.store.db import CacheRecord, RemoteBlob, Store


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


class ImportedCache:
    """The records of build caches imported with ``--cache-from`` (a registry ref, an OCI
    layout directory, an image's inline cache), read once when the build starts.

    Lazy: :meth:`fetch` downloads nothing. A record whose layer this store lacks gets the
    layer recorded as a remote form (:class:`~dockyard.store.layers.RemoteBlob`), which
    :meth:`~dockyard.store.layers.Layers.ensure_blob` downloads only when a missed step needs
    it as a parent or an output needs its bytes.
    """

    def __init__(self, store: Store, sources: Sequence[ImportedRecords]) -> None:
        self.store = store
        self.sources = list(sources)

    def lookup(self, key: str) -> CacheRecord | None:
        for source in self.sources:
            record = source.records.get(key)
            if record is not None:
                return record
        return None

    def fetch(self, record: CacheRecord) -> bool:
        diff_id = record.diff_id
        if not diff_id or self.store.layers.local(diff_id):
            return True
        for source in self.sources:
            if record.key not in source.records:
                continue
            layer = source.layers.get(diff_id)
            if layer is not None:
                remote, size = layer
                self.store.layers.put_remote(diff_id, size, remote)
                source.noted(remote)
                return True
        return self.store.layer_present(diff_id)

    def mark_used(self, key: str) -> None:
        pass

    def save(self, record: CacheRecord) -> None:
        pass


class ImportedRecords(Protocol):
    """One imported cache: its records by key and, by diff id, where each layer is kept and
    its tar's size (None when unknown)."""

    @property
    def records(self) -> Mapping[str, CacheRecord]: ...

    @property
    def layers(self) -> Mapping[str, tuple[RemoteBlob, int | None]]: ...

    def noted(self, remote: RemoteBlob) -> None:
        """A layer of this cache was recorded in the store (e.g. to remember the
        repository it can be mounted from)."""
        ...


class ChainCache:
    """Several backends asked in order (the local store first, then imported caches): a key
    is answered by the first backend that has a record for it *and* can fetch its layer.

    A hit from a later backend is saved in the first (so the local store keeps the record,
    and its layer, for the next build); new results are saved in the first only."""

    def __init__(self, backends: Sequence[CacheBackend]) -> None:
        self.backends = list(backends)
        self._found: dict[str, int] = {}
        self._lock = threading.Lock()

    def lookup(self, key: str) -> CacheRecord | None:
        for index, backend in enumerate(self.backends):
            record = backend.lookup(key)
            if record is not None and backend.fetch(record):
                with self._lock:
                    self._found[key] = index
                return record
        return None

    def fetch(self, record: CacheRecord) -> bool:
        with self._lock:
            return record.key in self._found

    def mark_used(self, key: str) -> None:
        with self._lock:
            index = self._found.get(key, 0)
        if index == 0:
            self.backends[0].mark_used(key)
            return
        record = self.backends[index].lookup(key)
        if record is not None:
            self.backends[0].save(record)

    def save(self, record: CacheRecord) -> None:
        self.backends[0].save(record)
