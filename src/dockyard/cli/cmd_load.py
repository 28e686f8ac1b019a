"""``dockyard load [-i X.tar]``: load images from a docker archive or an OCI layout."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--input", metavar="FILE",
                        help="read from FILE (a tar, or an OCI layout directory) instead of "
                             "stdin")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing")


def run(args: argparse.Namespace) -> int:
    from dockyard.errors import UsageError
    from dockyard.exporter import load_archive
    from dockyard.image.reference import parse_reference
    from dockyard.store.db import Store

    if args.input is None and sys.stdin.isatty():
        raise UsageError("no archive: use -i FILE or pipe one to stdin")
    store = Store.open(Path(args.root))
    source = args.input if args.input is not None else sys.stdin.buffer
    with store.build_lock():
        loaded = load_archive(store, source)
    if not args.quiet:
        for image in loaded:
            if image.names:
                for name in image.names:
                    print(f"Loaded image: {parse_reference(name).familiar}")
            else:
                print(f"Loaded image ID: {image.id}")
    return 0
