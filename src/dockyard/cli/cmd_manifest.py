"""``dockyard manifest create NAME IMAGE...``: one multi-platform name for local images.

Like ``docker manifest create`` (and ``buildx imagetools create``), but from images in the
store: each IMAGE's platform is read from its config, and NAME then stands for an image
index listing them (``run``, ``push``, ``save`` and ``FROM`` pick their platform from it).
An IMAGE that is itself multi-platform brings all its platforms. Two images of one platform
are refused.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="manifest_command", metavar="create", required=True)
    create = sub.add_parser("create", help="name local images of several platforms as one")
    create.add_argument("name", metavar="NAME", help="NAME[:TAG] of the multi-platform image")
    create.add_argument("images", nargs="+", metavar="IMAGE", help="name, id or id prefix")


def run(args: argparse.Namespace) -> int:
    from dockyard import manifest_create

    result = manifest_create(args.name, args.images, root=args.root)
    print(f"{result.digest} {result.name}: {', '.join(result.platforms)}")
    return 0
