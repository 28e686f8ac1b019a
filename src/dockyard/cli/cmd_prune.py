"""``dockyard prune [--all]``: free blobs and snapshots nothing references.

Waits for running builds (they hold the store's shared lock); tagged images always stay.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dockyard.store import Store

from dockyard.cli.cmd_images import human_size
from dockyard.errors import DockyardError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-a", "--all", action="store_true", help="also drop all build cache and untagged images"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for running builds (default 60; 0: do not wait)",
    )


def run(args: argparse.Namespace) -> int:
    from dockyard.store import Store, prune

    store = Store.open(Path(args.root))
    report = prune(store, all_cache=args.all, timeout=args.timeout)
    snapshots, snapshot_bytes = _sweep_snapshots(store, args.timeout)
    parts = [
        f"{report.blobs_removed} blobs",
        f"{report.snapshots_removed + snapshots} snapshots",
    ]
    if args.all:
        parts.append(f"{report.cache_records_removed} cache records")
        parts.append(f"{report.images_removed} untagged images")
    print("Deleted: " + ", ".join(parts))
    print(f"Total reclaimed space: {human_size(report.bytes_freed + snapshot_bytes)}")
    return 0


def _sweep_snapshots(store: Store, timeout: float) -> tuple[int, int]:
    """Committed snapshots (kept by the snapshotter's own table) that nothing uses."""
    from dockyard.snapshot import open_snapshotter
    from dockyard.store.cache_gc import sweep_snapshots

    if not any(store.snapshots_dir.iterdir()) if store.snapshots_dir.is_dir() else True:
        return 0, 0
    from dockyard.snapshot.base import cleanup_stale_mounts

    snapshotter = open_snapshotter(store.snapshots_dir, "auto")
    with store.exclusive_lock(timeout):
        # No build runs while we hold the exclusive lock: whatever is still mounted, and every
        # active snapshot or view, was left by a killed process.
        from dockyard.executor.run import cleanup_stale_containers

        cleanup_stale_containers(store.root / "run")
        cleanup_stale_mounts(store.root)
        leftovers = 0
        for key in reversed(snapshotter.uncommitted()):
            with contextlib.suppress(DockyardError):
                snapshotter.remove(key)
                leftovers += 1
        removed, freed = sweep_snapshots(store, snapshotter)
        return removed + leftovers, freed
