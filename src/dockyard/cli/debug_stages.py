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


def read_dockerfile(path: str) -> str:
    """The Dockerfile text (``-`` reads stdin); a missing file is a UsageError."""
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except OSError as err:
        raise UsageError(f"cannot read Dockerfile {path}: {err.strerror}") from None


def run(args: argparse.Namespace) -> int:
    """Print the resolved stage graph as JSON; warnings go to stderr."""
    from dockyard.dockerfile.stages import load_dockerfile, parse_build_args, resolve

    filename: str = args.file
    dockerfile = load_dockerfile(read_dockerfile(filename), filename)
    graph = resolve(dockerfile, parse_build_args(args.build_args), args.target, args.platform)
    for warning in graph.warnings:
        print(warning, file=sys.stderr)
    target = graph.target_stage
    doc = {
        "target": {"index": target.index, "name": target.name},
        "stages": [
            {
                "index": s.index,
                "name": s.name,
                "base": s.base,
                "base_kind": s.base_kind,
                "platform": s.platform,
                "depends_on": list(s.depends_on),
                "needed": s.needed,
                "line": s.location.start_line,
            }
            for s in graph.stages
        ],
        "unused_build_args": list(graph.unused_build_args),
    }
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    return 0
