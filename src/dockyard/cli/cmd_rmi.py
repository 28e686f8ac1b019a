"""``dockyard rmi IMAGE...``: remove names; an image with no name left is deleted.

As ``docker rmi``: a name is untagged; an id removes the image when it has at most one
name, and needs ``-f`` when several names point at it. Blobs are freed by ``prune``.
"""

from __future__ import annotations

import argparse
import sys

from dockyard.errors import DockyardError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="name, id or id prefix")
    parser.add_argument(
        "-f",
        "--force",
        action="store_true",
        help="remove an image by id even when several names point at it",
    )


def run(args: argparse.Namespace) -> int:
    from dockyard import rmi

    failed: list[DockyardError] = []
    for spec in args.images:
        try:
            result = rmi(spec, force=args.force, root=args.root)
        except DockyardError as error:
            failed.append(error)
            continue
        for name in result.untagged:
            print(f"Untagged: {name}")
        if result.deleted is not None:
            print(f"Deleted: {result.deleted}")
    if not failed:
        return 0
    for earlier in failed[:-1]:
        print(earlier.render(), file=sys.stderr)
    raise failed[-1]
