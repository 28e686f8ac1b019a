"""``dockyard debug stages``: the stages, their bases and dependencies, as JSON."""

from __future__ import annotations

import argparse
import json
import sys

from dockyard.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dockyard debug stages``."""
    parser.add_argument(
        "-f", "--file", default="Dockerfile", metavar="FILE", help="the Dockerfile (- for stdin)"
    )
    parser.add_argument("--target", default=None, metavar="T", help="the stage to build")
    parser.add_argument(
        "--build-arg",
        action="append",
        default=[],
        dest="build_args",
        metavar="K=V",
        help="a build arg (K alone takes K from the environment); repeatable",
    )
    parser.add_argument(
        "--platform", default=None, metavar="OS/ARCH", help="target platform (default: host)"
    )


def read_dockerfile(path: str) -> tuple[str, str]:
    """(text, name shown in errors) of the Dockerfile at ``path`` (``-``: standard input);
    undecodable bytes survive as surrogate escapes. A missing file is a UsageError."""
    if path == "-":
        return sys.stdin.buffer.read().decode("utf-8", "surrogateescape"), "Dockerfile"
    try:
        with open(path, "rb") as file:
            return file.read().decode("utf-8", "surrogateescape"), path
    except OSError as err:
        raise UsageError(f"cannot read Dockerfile {path}: {err.strerror}") from None


def run(args: argparse.Namespace) -> int:
    """Print the resolved stage graph as JSON; warnings go to stderr."""
    from dockyard import resolve_stages

    text, filename = read_dockerfile(args.file)
    result = resolve_stages(text, filename=filename, build_args=args.build_args, target=args.target,
                            platform=args.platform)
    for warning in result.warnings:
        print(warning, file=sys.stderr)
    sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    return 0
