"""``dockyard inspect IMAGE...``: Docker-style JSON array of image details, plus the manifest."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dockyard.errors import NotFoundError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="name, id or id prefix")
    parser.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                        help="the image of this platform of a multi-platform name")


def run(args: argparse.Namespace) -> int:
    from dockyard import inspect

    out: list[dict[str, Any]] = []
    missing: list[str] = []
    for name in args.images:
        try:
            out.append(inspect(name, root=args.root, platform=args.platform).to_dict())
        except NotFoundError:
            missing.append(name)
    # Like docker: print what was found, then fail naming what was not.
    print(json.dumps(out, indent=4))
    if missing:
        for name in missing[:-1]:
            print(f"ERROR: no such image: {name}", file=sys.stderr)
        raise NotFoundError(f"no such image: {missing[-1]}")
    return 0
