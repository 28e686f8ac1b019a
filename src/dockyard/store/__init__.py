"""The local store: content-addressed blobs, images and names, layers, snapshots, build
cache records, build history and the stat cache, with locks and garbage collection.

See docs/store.md for the layout and the locking rules.
"""

from __future__ import annotations

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
from dockyard.store.gc import PruneReport, prune
from dockyard.store.lock import StoreLockTimeout

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
