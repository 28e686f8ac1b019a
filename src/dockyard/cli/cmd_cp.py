"""``dockyard cp IMAGE:PATH DEST``: copy a file or directory out of an image.

The image and the path split at the first ``:/`` (so ``localhost:5000/app:1:/etc`` works).
DEST ``-`` writes a tar of PATH to stdout; otherwise the copy follows ``docker cp``: a file
goes to DEST (inside it if DEST is a directory); a directory to a missing DEST becomes DEST,
to an existing directory goes inside it, and ``PATH/.`` copies only its contents.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="IMAGE:PATH")
    parser.add_argument("dest", metavar="DEST", help="a local path, or - for a tar on stdout")
    parser.add_argument("-L", "--follow-link", action="store_true",
                        help="follow a symlink at PATH")
    parser.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                        help="the image of this platform of a multi-platform name "
                             "(default: the host's)")


def split_source(source: str) -> tuple[str, str]:
    """``IMAGE:PATH`` split at the first ``:/``."""
    from dockyard.errors import UsageError

    image, sep, path = source.partition(":/")
    if not sep or not image:
        raise UsageError(f"cp: {source!r} is not IMAGE:/PATH (the path must be absolute)")
    return image, "/" + path


def run(args: argparse.Namespace) -> int:
    from dockyard import cp
    from dockyard.errors import UsageError

    image_name, path = split_source(args.source)
    if args.dest == "-" and sys.stdout.isatty():
        raise UsageError("refusing to write a tar to a terminal; redirect stdout")
    cp(image_name, path, sys.stdout.buffer if args.dest == "-" else args.dest,
       follow_link=args.follow_link, root=args.root, platform=args.platform,
       warn=lambda message: print(f"WARNING: {message}", file=sys.stderr))
    return 0
