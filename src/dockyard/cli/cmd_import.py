"""``dockyard import [-c CHANGE]... [-m MSG] ROOTFS.tar|- [NAME]``: like ``docker import``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="ROOTFS.tar",
                        help="a root filesystem tarball (gzip/zstd/bzip2/xz ok), - for stdin")
    parser.add_argument("name", nargs="?", metavar="NAME", help="name[:tag] for the image")
    parser.add_argument("-c", "--change", action="append", default=[], metavar="INSTRUCTION",
                        help="apply a Dockerfile instruction (CMD, ENV, ...) to the config")
    parser.add_argument("-m", "--message", help="history comment for the imported layer")
    parser.add_argument("--platform", help="os/arch to record (default: the host's)")


def run(args: argparse.Namespace) -> int:
    from dockyard.errors import UsageError
    from dockyard.exporter import import_rootfs
    from dockyard.store.db import Store

    platform: tuple[str, str] | None = None
    if args.platform:
        os_name, _, arch = args.platform.partition("/")
        if not os_name or not arch:
            raise UsageError(f"--platform must be os/arch, not {args.platform!r}")
        platform = (os_name, arch.split("/")[0])
    store = Store.open(Path(args.root))
    source = sys.stdin.buffer if args.source == "-" else args.source
    names = [args.name] if args.name else []
    with store.build_lock():
        image = import_rootfs(store, source, names, changes=args.change, message=args.message,
                              platform=platform)
    print(image.id)
    return 0
