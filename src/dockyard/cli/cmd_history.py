"""``dockyard history IMAGE``: the image's history like ``docker history``."""

from __future__ import annotations

import argparse
import json

from dockyard.cli.cmd_images import created_at, format_table, human_size, since

_TRUNC = 45


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE", help="name, id or id prefix")
    parser.add_argument("--no-trunc", action="store_true", help="do not truncate output")
    parser.add_argument(
        "-H",
        "--human",
        default=True,
        action=argparse.BooleanOptionalAction,
        help="sizes and dates in human-readable form (default)",
    )
    parser.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                        help="the image of this platform of a multi-platform name "
                             "(default: the host's)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only show image ids")
    parser.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="table (default) or json (one object per line, as docker)",
    )


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run(args: argparse.Namespace) -> int:
    from dockyard import history

    items = history(args.image, root=args.root, platform=args.platform)
    rows = []
    for item in items:
        item_id = item.id
        if item_id != "<missing>" and not args.no_trunc:
            item_id = item_id.removeprefix("sha256:")[:12]
        created_by = " ".join(item.created_by.split()) if not args.no_trunc else item.created_by
        rows.append(
            {
                "Comment": item.comment,
                "CreatedAt": created_at(item.created) if args.human else (item.created or ""),
                "CreatedBy": created_by if args.no_trunc else _shorten(created_by, _TRUNC),
                "CreatedSince": since(item.created),
                "ID": item_id,
                "Size": human_size(item.size) if args.human else str(item.size),
            }
        )
    if args.quiet:
        for row in rows:
            print(row["ID"])
    elif args.format == "json":
        for row in rows:
            print(json.dumps(row, sort_keys=True, ensure_ascii=False))
    else:
        headers = ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
        table = [
            [
                r["ID"],
                r["CreatedSince"] if args.human else r["CreatedAt"],
                r["CreatedBy"],
                r["Size"],
                r["Comment"],
            ]
            for r in rows
        ]
        print(format_table(headers, table))
    return 0
