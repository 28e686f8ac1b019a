"""``dockyard rmi IMAGE...``: remove names; an image with no name left is deleted.

As ``docker rmi``: a name is untagged; an id removes the image when it has at most one
name, and needs ``-f`` when several names point at it. Blobs are freed by ``prune``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from dockyard.errors import DockyardError, StoreError

if TYPE_CHECKING:
    from dockyard.store import Store


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="name, id or id prefix")
    parser.add_argument(
        "-f",
        "--force",
        action="store_true",
        help="remove an image by id even when several names point at it",
    )


def _remove_one(store: Store, spec: str, force: bool) -> list[str]:
    from dockyard.image.reference import parse_reference

    image = store.get_image(spec)
    lines: list[str] = []
    by_name = False
    try:
        full = str(parse_reference(spec))
        by_name = full in image.names
    except DockyardError:
        by_name = False
    if by_name:
        store.untag(full)
        lines.append(f"Untagged: {parse_reference(full).familiar}")
        if store.find_image(image.id) is not None and not store.get_image(image.id).names:
            store.remove_image(image.id)
            lines.append(f"Deleted: {image.id}")
        return lines
    if len(image.names) > 1 and not force:
        raise StoreError(
            f"unable to delete {image.short_id} (must be forced) - image is referenced "
            "in multiple repositories"
        )
    for name in store.remove_image(image.id):
        lines.append(f"Untagged: {parse_reference(name).familiar}")
    lines.append(f"Deleted: {image.id}")
    return lines


def run(args: argparse.Namespace) -> int:
    from dockyard.store import Store

    store = Store.open(Path(args.root))
    failed: list[DockyardError] = []
    for spec in args.images:
        try:
            for line in _remove_one(store, spec, args.force):
                print(line)
        except DockyardError as error:
            failed.append(error)
    if not failed:
        return 0
    for earlier in failed[:-1]:
        print(earlier.render(), file=sys.stderr)
    raise failed[-1]
