"""``dockyard prune [--all]``: free blobs and snapshots nothing references.

Waits for running builds (they hold the store's shared lock); tagged images always stay.
"""

from __future__ import annotations

import argparse

from dockyard.cli.cmd_images import human_size


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
    from dockyard import prune

    result = prune(all=args.all, timeout=args.timeout, root=args.root)
    parts = [
        f"{result.blobs_removed} blobs",
        f"{result.snapshots_removed} snapshots",
    ]
    if args.all:
        parts.append(f"{result.cache_records_removed} cache records")
        parts.append(f"{result.images_removed} untagged images")
    print("Deleted: " + ", ".join(parts))
    print(f"Total reclaimed space: {human_size(result.bytes_freed)}")
    return 0
