"""``dockyard save IMAGE... [-o X.tar] [--format docker|oci]``: images to an archive."""

from __future__ import annotations

import argparse
import sys

from dockyard.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image names or ids")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="write to FILE instead of stdout")
    parser.add_argument("--format", choices=("docker", "oci"), default="docker",
                        help="docker: a 'docker load' archive (default); oci: an OCI layout")


def run(args: argparse.Namespace) -> int:
    from dockyard import save

    if args.output is None and sys.stdout.isatty():
        raise UsageError("refusing to write an archive to a terminal; use -o FILE or redirect")
    save(args.images, args.output if args.output is not None else sys.stdout.buffer,
         format=args.format, root=args.root)
    return 0
