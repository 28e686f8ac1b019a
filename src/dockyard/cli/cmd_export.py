"""``dockyard export IMAGE [-o rootfs.tar]``: the image's flattened filesystem as a tar."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE, not stdout")


def run(args: argparse.Namespace) -> int:
    from dockyard.errors import UsageError
    from dockyard.exporter import OutputSpec, export, read_image
    from dockyard.store.db import Store

    if args.output is None and sys.stdout.isatty():
        raise UsageError("refusing to write a tar to a terminal; use -o FILE or redirect")
    store = Store.open(Path(args.root))
    image = read_image(store, args.image)
    spec = OutputSpec(type="tar", dest="-" if args.output is None else args.output)
    with store.build_lock():
        export(store, image.id, spec, ())
    return 0
