"""``dockyard debug expand``: expand one word the way Dockerfile instructions do."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dockyard debug expand``."""
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="K=V",
        help="a variable visible to the expansion (repeatable; K alone sets K to empty)",
    )
    parser.add_argument(
        "--words", action="store_true", help="split into words (one per line), as ProcessWords"
    )
    parser.add_argument(
        "--escape", default="\\", metavar="C", help="escape character: \\ (default) or `"
    )
    parser.add_argument("word", metavar="WORD", help="the word to expand")


def run(args: argparse.Namespace) -> int:
    """Print the expansion (or its words); an expansion error propagates as ExpansionError."""
    from dockyard import expand_word

    env: dict[str, str] = {}
    for item in args.env:
        # As BuildKit's BuildEnvs: "K" alone is K set to the empty string; later ones win.
        key, _, value = item.partition("=")
        env[key] = value
    for word in expand_word(args.word, env, words=args.words, escape=args.escape):
        sys.stdout.write(word + "\n")
    return 0
