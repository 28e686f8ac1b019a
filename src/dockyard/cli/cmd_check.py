"""``dockyard check``: lint a Dockerfile; exit 1 when something is worse than a warning."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dockyard check``."""
    parser.add_argument(
        "-f", "--file", default="Dockerfile", metavar="FILE", help="the Dockerfile (- for stdin)"
    )
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format"
    )


def run(args: argparse.Namespace) -> int:
    """Print the findings; 0 when there are only warnings (or none), 1 otherwise."""
    from dockyard.cli.debug_stages import read_dockerfile
    from dockyard.dockerfile.check import check_text, has_errors

    filename: str = args.file
    findings = check_text(read_dockerfile(filename), filename)
    if args.format == "json":
        sys.stdout.write(json.dumps([f.to_dict() for f in findings], indent=2) + "\n")
    else:
        for finding in findings:
            sys.stdout.write(f"{finding}\n")
    return 1 if has_errors(findings) else 0
