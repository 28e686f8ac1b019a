"""``dockyard store check [--repair]``: verify the store, and repair it."""

from __future__ import annotations

import argparse
import json

from dockyard.cli.cmd_images import human_size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = sub.add_parser(
        "check",
        help="verify blobs, references, snapshots and leftovers; exit 1 if something is wrong",
        description="Verify every blob's digest, every reference from images, layers, cache "
                    "records and snapshots, the snapshot directories against their table, "
                    "and what killed processes left (mounts, containers, bundles, secret "
                    "directories, temp files). Exits 1 when something is wrong.")
    check.add_argument("--repair", action="store_true",
                       help="remove what nothing references and the leftovers, drop records "
                            "whose content is gone (never a tagged image's content)")
    check.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                       help="how long to wait for running builds (default 60)")
    check.add_argument("--format", choices=("text", "json"), default="text",
                       help="output format (default text)")


def run(args: argparse.Namespace) -> int:
    from dockyard import store_check

    result = store_check(repair=args.repair, timeout=args.timeout, root=args.root)
    if args.format == "json":
        print(json.dumps({
            "ok": result.ok,
            "problems": [{"kind": p.kind, "message": p.message, "repairable": p.repairable,
                          "repaired": p.repaired, "bytes": p.bytes} for p in result.problems],
            "checked": {"blobs": result.blobs, "images": result.images,
                        "layers": result.layers, "cache_records": result.cache_records,
                        "snapshots": result.snapshots},
            "garbage": {"blobs": result.garbage_blobs, "bytes": result.garbage_bytes},
            "freed_bytes": result.freed_bytes,
        }, indent=2, sort_keys=True))
        return 0 if result.ok else 1
    print(f"Checked {result.blobs} blobs, {result.images} images, {result.layers} layers, "
          f"{result.cache_records} cache records, {result.snapshots} snapshots")
    for p in result.problems:
        status = "fixed" if p.repaired else "wrong"
        note = "" if p.repaired or p.repairable else " (--repair cannot fix this)"
        print(f"  {status}: {p.message}{note}")
    if result.garbage_blobs:
        print(f"{result.garbage_blobs} blobs ({human_size(result.garbage_bytes)}) nothing "
              "references: 'dockyard prune' frees them")
    if args.repair and result.freed_bytes:
        print(f"Reclaimed space: {human_size(result.freed_bytes)}")
    wrong = [p for p in result.problems if not p.repaired]
    if not wrong:
        print("The store is consistent." if not result.problems else
              f"The store is consistent: {len(result.problems)} problems repaired.")
        return 0
    fixable = sum(p.repairable for p in wrong)
    hint = " ('dockyard store check --repair' fixes them)" if fixable and not args.repair else ""
    print(f"{len(wrong)} problems{hint}.")
    return 1
