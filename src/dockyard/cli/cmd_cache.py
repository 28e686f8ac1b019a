"""``dockyard cache ls|du|prune``: inspect and prune the build cache.

* ``ls [--format json] [--no-trunc]``: one row per cache record, least recently used first.
* ``du [--format json]``: the cache's disk use, in total and per kind (the instruction that
  made a layer, and ``cache mount`` for ``RUN --mount=type=cache`` directories). Layers an
  image also uses count in SIZE but not in RECLAIMABLE.
* ``prune [-a] [--keep-storage SIZE] [--older-than DURATION]``: see
  :mod:`dockyard.store.cache_gc` for the rules. Without options it removes the records no
  tagged image uses (like ``docker builder prune``); ``--all`` removes every record and the
  cache mounts. Tagged images always stay. Waits for running builds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from dockyard.cli.cmd_images import format_table, human_duration, human_size

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="cache_command", metavar="ls|du|prune", required=True)

    ls = sub.add_parser("ls", help="list cache records")
    ls.add_argument("--format", choices=("table", "json"), default="table",
                    help="table (default) or json (one object per line)")
    ls.add_argument("--no-trunc", action="store_true", help="full keys and descriptions")

    du = sub.add_parser("du", help="show the cache's disk use")
    du.add_argument("--format", choices=("table", "json"), default="table",
                    help="table (default) or json")

    prune = sub.add_parser(
        "prune",
        help="delete cache records, then unreferenced data",
        description="Without options, delete the records whose layer no tagged image uses "
                    "(like docker builder prune). Records whose layer is gone always go. "
                    "Then blobs and snapshots nothing references are removed; images stay.",
    )
    prune.add_argument("-a", "--all", action="store_true",
                       help="delete every record and the RUN --mount=type=cache directories")
    prune.add_argument("--keep-storage", metavar="SIZE",
                       help="delete least recently used records until the cache fits in SIZE "
                            "(e.g. 10GB, 500MB, 1.5GiB)")
    prune.add_argument("--older-than", metavar="DURATION",
                       help="delete records not used within DURATION (e.g. 24h, 7d, 30m)")
    prune.add_argument("-f", "--force", action="store_true",
                       help="accepted for docker compatibility (dockyard never prompts)")
    prune.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                       help="how long to wait for running builds (default 60; 0: do not wait)")


def run(args: argparse.Namespace) -> int:
    from dockyard.store.db import Store

    store = Store.open(Path(args.root))
    try:
        if args.cache_command == "ls":
            return _ls(store, args)
        if args.cache_command == "du":
            return _du(store, args)
        return _prune(store, args)
    finally:
        store.close()


def _short(key: str) -> str:
    return key.removeprefix("sha256:")[:12]


def _description(text: str) -> str:
    """The record's description without a repeated leading instruction word."""
    first, _, rest = text.partition(" ")
    return rest if rest.split(" ", 1)[0] == first else text


def _ago(ts: float, now: float) -> str:
    return human_duration(max(now - ts, 0.0)) + " ago"


def _ls(store: Any, args: argparse.Namespace) -> int:
    from dockyard.store.cache_gc import cache_entries
    from dockyard.store.db import format_time

    now = time.time()
    entries = cache_entries(store)
    if args.format == "json":
        for e in entries:
            r = e.record
            print(json.dumps({
                "ID": r.key if args.no_trunc else _short(r.key),
                "Key": r.key,
                "Kind": e.kind,
                "Description": _description(r.description),
                "DiffID": r.diff_id,
                "ChainID": r.chain_id,
                "Size": e.size,
                "Shared": e.shared,
                "InUse": e.in_tagged_image,
                "LayerMissing": e.layer_missing,
                "CreatedAt": format_time(r.created),
                "LastUsedAt": format_time(r.last_used),
            }, sort_keys=True))
        return 0
    rows = []
    for e in entries:
        r = e.record
        desc = _description(r.description)
        if not args.no_trunc and len(desc) > 60:
            desc = desc[:57] + "..."
        size = "missing" if e.layer_missing else human_size(e.size) if e.has_layer else "0B"
        rows.append([
            r.key if args.no_trunc else _short(r.key),
            size,
            _ago(r.created, now),
            _ago(r.last_used, now),
            desc,
        ])
    print(format_table(["ID", "SIZE", "CREATED", "LAST USED", "DESCRIPTION"], rows))
    return 0


def _du(store: Any, args: argparse.Namespace) -> int:
    from dockyard.store.cache_gc import cache_usage

    usage = cache_usage(store)
    if args.format == "json":
        print(json.dumps({
            "Records": usage.records,
            "Size": usage.size,
            "Reclaimable": usage.reclaimable,
            "Kinds": [
                {"Kind": k.kind, "Count": k.records, "Size": k.size,
                 "Reclaimable": k.reclaimable}
                for k in usage.kinds
            ],
        }, sort_keys=True))
        return 0
    rows = [[k.kind, str(k.records), human_size(k.size), human_size(k.reclaimable)]
            for k in usage.kinds]
    print(format_table(["KIND", "COUNT", "SIZE", "RECLAIMABLE"], rows))
    print(f"Total:\t{human_size(usage.size)} in {usage.records} records "
          f"(reclaimable {human_size(usage.reclaimable)})")
    return 0


def _prune(store: Any, args: argparse.Namespace) -> int:
    from dockyard.store.cache_gc import PrunePolicy, parse_duration, parse_size, prune_cache

    policy = PrunePolicy(
        all=args.all,
        keep_storage=parse_size(args.keep_storage) if args.keep_storage is not None else None,
        older_than=parse_duration(args.older_than) if args.older_than is not None else None,
    )
    report = prune_cache(store, policy, timeout=args.timeout, snapshotter=_snapshotter(store))
    print(f"Deleted build cache records: {report.records_removed}")
    if report.cache_mounts_removed:
        print(f"Deleted cache mounts: {report.cache_mounts_removed}")
    print(f"Deleted blobs: {report.blobs_removed}, snapshots: {report.snapshots_removed}")
    print(f"Total reclaimed space: {human_size(report.bytes_freed)}")
    return 0


def _snapshotter(store: Any) -> Any:
    """The snapshotter that made the store's snapshots (None when there are none)."""
    from dockyard.snapshot import open_snapshotter

    if not any(store.snapshots_dir.iterdir()):
        return None
    return open_snapshotter(store.snapshots_dir, "auto")
