"""``dockyard tag SOURCE TARGET``: give an image another name."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE_IMAGE", help="name, id or id prefix")
    parser.add_argument("target", metavar="TARGET_IMAGE", help="NAME[:TAG]")


def run(args: argparse.Namespace) -> int:
    from dockyard import tag

    tag(args.source, args.target, root=args.root)
    return 0
