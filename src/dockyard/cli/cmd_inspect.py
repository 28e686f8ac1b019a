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
    parser.add_argument("-f", "--format", metavar="TEMPLATE",
                        help="print each image through a Go template ({{.Id}}, "
                             "{{.Config.Env}}, {{json .Config}}, {{range}}, {{index}}; "
                             "see docs/cli.md for the subset)")
    parser.add_argument("--type", choices=("image",), default="image",
                        help="accepted for docker compatibility: images are all there is")
    parser.add_argument("-s", "--size", action="store_true",
                        help="accepted for docker compatibility (Size is always there)")


def run(args: argparse.Namespace) -> int:
    from dockyard import inspect

    template = None
    if args.format:
        from dockyard.cli.gotemplate import Template

        template = Template(args.format)  # a bad template fails before anything is read
    out: list[dict[str, Any]] = []
    missing: list[str] = []
    for name in args.images:
        try:
            out.append(inspect(name, root=args.root, platform=args.platform).to_dict())
        except NotFoundError:
            missing.append(name)
    # Like docker: print what was found, then fail naming what was not.
    if template is not None:
        sys.stdout.write("".join(template.render(doc) + "\n" for doc in out))
    else:
        print(json.dumps(out, indent=4))
    if missing:
        for name in missing[:-1]:
            print(f"ERROR: no such image: {name}", file=sys.stderr)
        raise NotFoundError(f"no such image: {missing[-1]}")
    return 0
