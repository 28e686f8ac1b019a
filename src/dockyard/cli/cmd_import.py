"""``dockyard import [-c CHANGE]... [-m MSG] ROOTFS.tar|- [NAME]``: like ``docker import``."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="ROOTFS.tar",
                        help="a root filesystem tarball (gzip/zstd/bzip2/xz ok), - for stdin")
    parser.add_argument("name", nargs="?", metavar="NAME", help="name[:tag] for the image")
    parser.add_argument("-c", "--change", action="append", default=[], metavar="INSTRUCTION",
                        help="apply a Dockerfile instruction (CMD, ENV, ...) to the config")
    parser.add_argument("-m", "--message", help="history comment for the imported layer")
    parser.add_argument("--platform", help="os/arch to record (default: the host's)")


def run(args: argparse.Namespace) -> int:
    from dockyard import import_

    source = sys.stdin.buffer if args.source == "-" else args.source
    result = import_(source, args.name, changes=args.change, message=args.message,
                     platform=args.platform, root=args.root)
    print(result.image_id)
    return 0
