"""The local store: content-addressed blobs, images and names, layers, snapshots, build
cache records, build history and the stat cache, with locks and garbage collection.

See docs/store.md for the layout and the locking rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dockyard.store.blobs import BlobStore, BlobWriter
from dockyard.store.db import (
    CacheRecord,
    HistoryItem,
    ImageRecord,
    LayerBlob,
    LayerRecord,
    SnapshotRecord,
    StatKey,
    Store,
)
from dockyard.store.lock import StoreLockTimeout

if TYPE_CHECKING:
    from dockyard.store.gc import PruneReport, prune

# Garbage collection is imported on first use (a build never needs it).
_LAZY = {"PruneReport": "dockyard.store.gc", "prune": "dockyard.store.gc"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "BlobStore",
    "BlobWriter",
    "CacheRecord",
    "HistoryItem",
    "ImageRecord",
    "LayerBlob",
    "LayerRecord",
    "PruneReport",
    "SnapshotRecord",
    "StatKey",
    "Store",
    "StoreLockTimeout",
    "prune",
]
