"""``dockyard export IMAGE [-o rootfs.tar]``: the image's flattened filesystem as a tar."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE, not stdout")
    parser.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                        help="the image of this platform of a multi-platform name "
                             "(default: the host's)")


def run(args: argparse.Namespace) -> int:
    from dockyard import export
    from dockyard.errors import UsageError

    if args.output is None and sys.stdout.isatty():
        raise UsageError("refusing to write a tar to a terminal; use -o FILE or redirect")
    export(args.image, args.output if args.output is not None else sys.stdout.buffer,
           root=args.root, platform=args.platform)
    return 0
