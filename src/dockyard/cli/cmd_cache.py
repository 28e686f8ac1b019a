"""``dockyard cache ls|du|prune``: inspect and prune the build cache.

* ``ls [--format json] [--no-trunc]``: one row per cache record, least recently used first.
* ``du [--format json]``: the cache's disk use, in total and per kind (the instruction that
  made a layer, and ``cache mount`` for ``RUN --mount=type=cache`` directories). Layers an
  image also uses count in SIZE but not in RECLAIMABLE.
* ``prune [-a] [--keep-storage SIZE] [--older-than DURATION]``: see
  :func:`dockyard.cache_prune` for the rules. Without options it removes the records no
  tagged image uses (like ``docker builder prune``); ``--all`` removes every record and the
  cache mounts. Tagged images always stay. Waits for running builds.
"""

from __future__ import annotations

import argparse
import json
import time

from dockyard.cli.cmd_images import format_table, human_duration, human_size, rfc3339

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
    if args.cache_command == "ls":
        return _ls(args)
    if args.cache_command == "du":
        return _du(args)
    return _prune(args)


def _short(key: str) -> str:
    return key.removeprefix("sha256:")[:12]


def _description(text: str) -> str:
    """The record's description without a repeated leading instruction word."""
    first, _, rest = text.partition(" ")
    return rest if rest.split(" ", 1)[0] == first else text


def _ago(ts: float, now: float) -> str:
    return human_duration(max(now - ts, 0.0)) + " ago"


def _ls(args: argparse.Namespace) -> int:
    from dockyard import cache_ls

    now = time.time()
    entries = cache_ls(root=args.root)
    if args.format == "json":
        for e in entries:
            print(json.dumps({
                "ID": e.key if args.no_trunc else _short(e.key),
                "Key": e.key,
                "Kind": e.kind,
                "Description": _description(e.description),
                "DiffID": e.diff_id,
                "ChainID": e.chain_id,
                "Size": e.size,
                "Shared": e.shared,
                "InUse": e.in_use,
                "LayerMissing": e.layer_missing,
                "CreatedAt": rfc3339(e.created),
                "LastUsedAt": rfc3339(e.last_used),
            }, sort_keys=True))
        return 0
    rows = []
    for e in entries:
        desc = _description(e.description)
        if not args.no_trunc and len(desc) > 60:
            desc = desc[:57] + "..."
        size = "missing" if e.layer_missing else human_size(e.size) if e.has_layer else "0B"
        rows.append([
            e.key if args.no_trunc else _short(e.key),
            size,
            _ago(e.created, now),
            _ago(e.last_used, now),
            desc,
        ])
    print(format_table(["ID", "SIZE", "CREATED", "LAST USED", "DESCRIPTION"], rows))
    return 0


def _du(args: argparse.Namespace) -> int:
    from dockyard import cache_du

    usage = cache_du(root=args.root)
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


def _prune(args: argparse.Namespace) -> int:
    from dockyard import cache_prune

    report = cache_prune(all=args.all, keep_storage=args.keep_storage,
                         older_than=args.older_than, timeout=args.timeout, root=args.root)
    print(f"Deleted build cache records: {report.records_removed}")
    if report.cache_mounts_removed:
        print(f"Deleted cache mounts: {report.cache_mounts_removed}")
    print(f"Deleted blobs: {report.blobs_removed}, snapshots: {report.snapshots_removed}")
    print(f"Total reclaimed space: {human_size(report.bytes_freed)}")
    return 0
