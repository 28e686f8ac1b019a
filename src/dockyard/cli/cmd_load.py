"""``dockyard load [-i X.tar]``: load images from a docker archive or an OCI layout."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--input", metavar="FILE",
                        help="read from FILE (a tar, or an OCI layout directory) instead of "
                             "stdin")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing")


def run(args: argparse.Namespace) -> int:
    from dockyard import load
    from dockyard.errors import UsageError

    if args.input is None and sys.stdin.isatty():
        raise UsageError("no archive: use -i FILE or pipe one to stdin")
    result = load(args.input if args.input is not None else sys.stdin.buffer, root=args.root)
    if not args.quiet:
        for image in result.images:
            if image.names:
                for name in image.familiar_names:
                    print(f"Loaded image: {name}")
            else:
                print(f"Loaded image ID: {image.id}")
    return 0
