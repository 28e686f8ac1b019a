"""Freeing space: ``prune`` and the build cache's ``cache_ls``, ``cache_du``, ``cache_prune``.

Both prunes take the store's exclusive lock, so they wait for running builds (up to
``timeout`` seconds, then StoreLockTimeout) and builds starting meanwhile wait for them.
Tagged images always stay. The rules are in :mod:`dockyard.store.gc` and
:mod:`dockyard.store.cache_gc`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dockyard._api._common import Root, open_store, store_root
from dockyard.rootless.namespace import in_namespace

if TYPE_CHECKING:
    from dockyard.store.cache_gc import CacheUsage
    from dockyard.store.db import Store

__all__ = [
    "CacheEntry",
    "CachePruneResult",
    "PruneResult",
    "cache_du",
    "cache_ls",
    "cache_prune",
    "prune",
]


@dataclass(frozen=True)
class PruneResult:
    """What ``prune`` removed."""

    blobs_removed: int
    snapshots_removed: int
    cache_records_removed: int  # only with all=True
    images_removed: int  # untagged images, only with all=True
    bytes_freed: int


@dataclass(frozen=True)
class CacheEntry:
    """One build cache record: a step's result, what it costs and what uses it."""

    key: str  # the step's cache key ("sha256:...")
    kind: str  # the instruction that made it: RUN, COPY, ADD, ... ("" if unknown)
    description: str  # the step, as the build showed it
    diff_id: str | None  # the layer it made, if any
    chain_id: str | None  # the filesystem after the step
    size: int  # bytes on disk of its layer (every stored form); 0 without a layer
    shared: bool  # an image uses its layer too, so deleting it frees nothing
    in_use: bool  # its filesystem chain is part of a tagged image
    layer_missing: bool  # it names a layer that is gone (it can never hit)
    created: float  # unix time
    last_used: float  # unix time of the last hit (or of its making)

    @property
    def has_layer(self) -> bool:
        """Whether the step made a layer."""
        return bool(self.diff_id)

    @property
    def reclaimable(self) -> int:
        """Bytes deleting this record (alone) could free."""
        return 0 if self.shared else self.size


@dataclass(frozen=True)
class CachePruneResult:
    """What ``cache_prune`` removed."""

    records_removed: int
    cache_mounts_removed: int
    blobs_removed: int
    snapshots_removed: int
    bytes_freed: int


@in_namespace
def prune(*, all: bool = False, timeout: float = 60.0, root: Root = None) -> PruneResult:
    """Remove every blob, layer and snapshot no image or cache record references, leftovers
    of killed builds (temp files, mounts, containers, uncommitted snapshots) and, with
    ``all``, every cache record, the cache mounts and the untagged images first."""
    from dockyard.executor.run import sweep_stale
    from dockyard.executor.runtime import state_dir
    from dockyard.store.gc import prune as gc_prune
    from dockyard.store.reserve import making_room

    with making_room(store_root(root)), open_store(root) as store:
        # bundles, secrets, mounts and containers of killed dockyard processes
        sweep_stale(state_dir(store.root))
        report = gc_prune(store, all_cache=all, timeout=timeout)
        snapshots, snapshot_bytes = _sweep_snapshots(store, timeout)
    return PruneResult(
        blobs_removed=report.blobs_removed,
        snapshots_removed=report.snapshots_removed + snapshots,
        cache_records_removed=report.cache_records_removed,
        images_removed=report.images_removed,
        bytes_freed=report.bytes_freed + snapshot_bytes,
    )


def _sweep_snapshots(store: Store, timeout: float) -> tuple[int, int]:
    """What killed processes left (:func:`dockyard.store.check.leftovers`: mounts,
    containers, bundles, uncommitted and unrecorded snapshots, temp files, unfinished
    outputs), then the committed snapshots nothing uses. Returns (snapshots removed, bytes
    freed)."""
    from dockyard.store.cache_gc import sweep_snapshots
    from dockyard.store.check import leftovers

    with store.exclusive_lock(timeout):
        # No build runs while we hold the exclusive lock: all of it is a killed process's.
        found = leftovers(store, remove=True)
        removed = sum(1 for f in found if f.repaired and f.kind.startswith("snapshot"))
        freed = sum(f.bytes for f in found if f.repaired)
        snapshotter = _snapshotter(store)
        if snapshotter is not None:
            swept, swept_bytes = sweep_snapshots(store, snapshotter)
            removed += swept
            freed += swept_bytes
    return removed, freed


def cache_ls(*, root: Root = None) -> tuple[CacheEntry, ...]:
    """Every build cache record, least recently used first."""
    from dockyard.store.cache_gc import cache_entries

    with open_store(root) as store:
        entries = cache_entries(store)
    return tuple(
        CacheEntry(
            key=e.record.key,
            kind=e.kind,
            description=e.record.description,
            diff_id=e.record.diff_id,
            chain_id=e.record.chain_id,
            size=e.size,
            shared=e.shared,
            in_use=e.in_tagged_image,
            layer_missing=e.layer_missing,
            created=e.record.created,
            last_used=e.record.last_used,
        )
        for e in entries
    )


@in_namespace
def cache_du(*, root: Root = None) -> CacheUsage:
    """The build cache's disk use, in total and per kind (the instruction that made a layer,
    and ``cache mount`` for ``RUN --mount=type=cache`` directories). Layers an image also
    uses count in ``size`` but not in ``reclaimable``."""
    from dockyard.store.cache_gc import cache_usage

    with open_store(root) as store:
        return cache_usage(store)


@in_namespace
def cache_prune(
    *,
    all: bool = False,
    keep_storage: int | str | None = None,
    older_than: float | str | None = None,
    timeout: float = 60.0,
    root: Root = None,
) -> CachePruneResult:
    """Delete build cache records, then the blobs and snapshots nothing references any more.

    Without options: the records whose layer no tagged image uses (like ``docker builder
    prune``). ``all``: every record and the cache mounts. ``older_than`` (seconds, or a
    duration such as ``"24h"``): records not used within it. ``keep_storage`` (bytes, or a
    size such as ``"10GB"``): least recently used records go until the rest fit. Records
    whose layer is gone always go. Images stay.
    """
    from dockyard.store.cache_gc import PrunePolicy, parse_duration, parse_size, prune_cache

    policy = PrunePolicy(
        all=all,
        keep_storage=parse_size(keep_storage) if isinstance(keep_storage, str) else keep_storage,
        older_than=parse_duration(older_than) if isinstance(older_than, str) else older_than,
    )
    from dockyard.store.reserve import making_room

    with making_room(store_root(root)), open_store(root) as store:
        report = prune_cache(store, policy, timeout=timeout, snapshotter=_snapshotter(store))
    return CachePruneResult(
        records_removed=report.records_removed,
        cache_mounts_removed=report.cache_mounts_removed,
        blobs_removed=report.blobs_removed,
        snapshots_removed=report.snapshots_removed,
        bytes_freed=report.bytes_freed,
    )


def _snapshotter(store: Store) -> Any:
    """The snapshotter that made the store's snapshots (None when there are none)."""
    from dockyard.snapshot import open_snapshotter

    if not (store.snapshots_dir / "snapshots").is_dir():
        return None
    return open_snapshotter(store.snapshots_dir, "auto")
