"""``dockyard debug parse [-f FILE] [--dump]``: the Dockerfile's syntax tree.

With ``--dump`` one BuildKit ``Node.Dump()`` line per instruction; otherwise a JSON array with
one object per instruction. Like BuildKit's parser this is the tree *before* instruction-level
checks: unknown instructions and flags still print. Errors are raised (the CLI renders them);
parser warnings go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``-f/--file`` and ``--dump``."""
    parser.add_argument(
        "-f", "--file", default="Dockerfile", metavar="FILE",
        help="the Dockerfile ('-' reads stdin; default: ./Dockerfile)",
    )
    parser.add_argument(
        "--dump", action="store_true", help="print BuildKit's Node.Dump() format"
    )


def node_to_json(node: Any) -> dict[str, Any]:
    """The JSON object of one node (ONBUILD's nested instruction under ``inner``)."""
    obj: dict[str, Any] = {
        "instruction": node.instruction.upper(),
        "flags": list(node.flags),
        "args": list(node.args),
        "heredocs": [
            {"name": h.name, "content": h.content, "expand": h.expand, "chomp": h.chomp}
            for h in node.heredocs
        ],
        "start_line": node.start_line,
        "end_line": node.end_line,
        "original": node.original,
    }
    if node.json:
        obj["json"] = True
    if node.inner is not None:
        obj["inner"] = node_to_json(node.inner)
    return obj


def run(args: argparse.Namespace) -> int:
    """Parse the file and print the tree; raises DockerfileError where BuildKit's parser fails."""
    from dockyard import parse_dockerfile
    from dockyard.cli.debug_stages import read_dockerfile

    text, name = read_dockerfile(args.file)
    result = parse_dockerfile(text, filename=name)
    for message, line in result.warnings:
        print(f"WARNING: {name}:{line}: {message}", file=sys.stderr)
    out = sys.stdout
    if args.dump:
        out.write("".join(node.dump() + "\n" for node in result.nodes))
    else:
        objects = [node_to_json(n) for n in result.nodes]
        text = json.dumps(objects, indent=2, ensure_ascii=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # undecodable input bytes: keep the output valid UTF-8
            text = json.dumps(objects, indent=2)
        out.write(text + "\n")
    return 0
