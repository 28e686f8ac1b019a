"""``dockyard debug parse|expand|stages``: stable frontend debugging commands."""

from __future__ import annotations

import argparse
import importlib

_SUB = {
    "parse": ("dockyard.cli.debug_parse", "Print the Dockerfile's parse tree"),
    "expand": ("dockyard.cli.debug_expand", "Expand a word as Dockerfile instructions do"),
    "stages": ("dockyard.cli.debug_stages", "Show stages, bases and dependencies as JSON"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="debug_command", required=True, metavar="SUBCOMMAND")
    for name, (module_name, help_) in _SUB.items():
        p = sub.add_parser(name, help=help_, description=help_)
        module = importlib.import_module(module_name)
        module.add_arguments(p)
        p.set_defaults(_debug_run=module.run)


def run(args: argparse.Namespace) -> int:
    code: int = args._debug_run(args)
    return code
