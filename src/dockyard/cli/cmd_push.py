"""``dockyard push IMAGE [DESTINATION]``: upload an image from the store to a registry."""

from __future__ import annotations

import argparse

from dockyard.cli.cmd_pull import add_registry_arguments, registry_options, show_progress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE",
                        help="name or id of the image in the store")
    parser.add_argument("destination", metavar="DESTINATION", nargs="?",
                        help="registry/repository[:tag] to push to (default: IMAGE's name)")
    parser.add_argument("--format", dest="manifest_format", choices=("oci", "docker"),
                        default="oci",
                        help="manifest type: OCI (default) or Docker schema2")
    parser.add_argument("--compression", choices=("gzip", "zstd", "uncompressed"),
                        default="gzip", help="layer compression (default: gzip)")
    parser.add_argument("--digestfile", metavar="FILE",
                        help="write the pushed manifest's digest to FILE")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print only the digest")
    add_registry_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dockyard import push

    result = push(args.image, args.destination, manifest_format=args.manifest_format,
                  compression=args.compression, root=args.root,
                  on_event=show_progress(args.quiet), **registry_options(args))
    if args.digestfile:
        Path(args.digestfile).write_text(result.digest)
    print(result.digest)
    return 0
