"""``dockyard check [PATH]``: lint a Dockerfile; exit 1 when something is worse than a warning.

PATH is a build context (its Dockerfile, or Containerfile, is linted, as ``build`` finds it)
or a Dockerfile; ``-f`` names the Dockerfile as ``build -f`` does.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dockyard check``."""
    parser.add_argument("path", nargs="?", default=".", metavar="PATH",
                        help="a build context directory or a Dockerfile (default: .)")
    parser.add_argument("-f", "--file", default=None, metavar="FILE",
                        help="the Dockerfile (default: PATH/Dockerfile; - for stdin)")
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format"
    )


def run(args: argparse.Namespace) -> int:
    """Print the findings; 0 when there are only warnings (or none), 1 otherwise."""
    from dockyard import check

    result = check(args.path, dockerfile=args.file)
    if args.format == "json":
        sys.stdout.write(json.dumps([f.to_dict() for f in result.findings], indent=2) + "\n")
    else:
        for finding in result.findings:
            sys.stdout.write(f"{finding}\n")
    return 1 if result.failed else 0
