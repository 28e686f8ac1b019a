"""``dockyard tag SOURCE TARGET``: give an image another name."""

from __future__ import annotations

import argparse
from pathlib import Path

from dockyard.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE_IMAGE", help="name, id or id prefix")
    parser.add_argument("target", metavar="TARGET_IMAGE", help="NAME[:TAG]")


def run(args: argparse.Namespace) -> int:
    from dockyard.image.reference import parse_reference
    from dockyard.store import Store

    target = parse_reference(args.target)
    if target.digest is not None:
        raise UsageError(f"refusing to create a tag with a digest reference: {args.target}")
    store = Store.open(Path(args.root))
    image = store.get_image(args.source)
    store.tag(image.id, str(target))
    return 0
