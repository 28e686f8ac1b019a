"""``dockyard save IMAGE... [-o X.tar] [--format docker|oci]``: images to an archive."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dockyard.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image names or ids")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="write to FILE instead of stdout")
    parser.add_argument("--format", choices=("docker", "oci"), default="docker",
                        help="docker: a 'docker load' archive (default); oci: an OCI layout")


def run(args: argparse.Namespace) -> int:
    from dockyard.exporter import ArchiveImage, read_image, write_docker_archive, write_oci_layout
    from dockyard.image.reference import parse_reference
    from dockyard.store.db import Store

    if args.output is None and sys.stdout.isatty():
        raise UsageError("refusing to write an archive to a terminal; use -o FILE or redirect")
    store = Store.open(Path(args.root))
    images: dict[str, ArchiveImage] = {}
    for arg in args.images:
        image = read_image(store, arg)
        names: tuple[str, ...] = ()
        if not _looks_like_id(arg, image.id):
            names = (str(parse_reference(arg)),)
        prev = images.get(image.id)
        merged = (prev.names if prev else ()) + names
        images[image.id] = ArchiveImage(image, tuple(dict.fromkeys(merged)))
    dest = args.output if args.output is not None else sys.stdout.buffer
    with store.build_lock():
        if args.format == "oci":
            write_oci_layout(store, list(images.values()), dest)
        else:
            write_docker_archive(store, list(images.values()), dest)
    return 0


def _looks_like_id(arg: str, image_id: str) -> bool:
    hex_id = image_id.removeprefix("sha256:")
    bare = arg.removeprefix("sha256:")
    return len(bare) >= 4 and hex_id.startswith(bare)
