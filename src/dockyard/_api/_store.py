"""``store_check``: is the store consistent, and what did crashes leave behind? With
``repair``, fix what can be fixed. The rules: :mod:`dockyard.store.check` and
docs/reliability.md."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from dockyard._api._common import Root, open_store, store_root
from dockyard.rootless.namespace import in_namespace

__all__ = ["StoreCheckResult", "StoreProblem", "store_check"]


@dataclass(frozen=True)
class StoreProblem:
    """One thing found wrong."""

    kind: str  # e.g. "blob-corrupt", "snapshot-orphan", "temp-file", "image-broken"
    message: str  # in plain words
    repairable: bool  # store_check(repair=True) can fix it
    repaired: bool  # and did
    bytes: int  # space it holds (freed by the repair)


@dataclass(frozen=True)
class StoreCheckResult:
    """What ``store_check`` found; ``ok`` when nothing wrong is left."""

    problems: tuple[StoreProblem, ...]
    blobs: int  # checked (each hashed)
    images: int
    layers: int
    cache_records: int
    snapshots: int
    garbage_blobs: int  # blobs nothing references: not wrong, prune frees them
    garbage_bytes: int
    freed_bytes: int  # by the repair (the garbage collection included)

    @property
    def ok(self) -> bool:
        """Nothing wrong is left: no problem, or every one repaired."""
        return all(p.repaired for p in self.problems)


@in_namespace
def store_check(*, repair: bool = False, timeout: float = 60.0, root: Root = None
                ) -> StoreCheckResult:
    """Check the store: every blob's digest, every reference from images, layers, cache
    records and snapshots, the snapshot directories against their table, and the mounts,
    containers, bundles, secret directories and temp files killed processes left. With
    ``repair``, remove what nothing references (as ``prune``), the leftovers, and records
    whose content is gone; never a tagged image's content. Waits up to ``timeout`` seconds
    for running builds."""
    from dockyard.store.check import check_store
    from dockyard.store.reserve import making_room

    room = making_room(store_root(root)) if repair else contextlib.nullcontext()
    with room, open_store(root) as store:
        report = check_store(store, repair=repair, timeout=timeout)
    return StoreCheckResult(
        problems=tuple(StoreProblem(f.kind, f.message, f.repairable, f.repaired, f.bytes)
                       for f in report.findings),
        blobs=report.blobs, images=report.images, layers=report.layers,
        cache_records=report.cache_records, snapshots=report.snapshots,
        garbage_blobs=report.garbage_blobs, garbage_bytes=report.garbage_bytes,
        freed_bytes=report.freed_bytes,
    )
