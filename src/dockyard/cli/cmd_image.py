"""``dockyard image SUBCOMMAND``: docker's management-command spellings of the image
commands (``image ls`` is ``images``, ``image rm`` is ``rmi`` ...), with the same options."""

from __future__ import annotations

import argparse
import importlib

# subcommand -> (top-level command, its module)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "ls": ("images", "dockyard.cli.cmd_images"),
    "list": ("images", "dockyard.cli.cmd_images"),
    "inspect": ("inspect", "dockyard.cli.cmd_inspect"),
    "history": ("history", "dockyard.cli.cmd_history"),
    "tag": ("tag", "dockyard.cli.cmd_tag"),
    "rm": ("rmi", "dockyard.cli.cmd_rmi"),
    "prune": ("prune", "dockyard.cli.cmd_prune"),
    "pull": ("pull", "dockyard.cli.cmd_pull"),
    "push": ("push", "dockyard.cli.cmd_push"),
    "save": ("save", "dockyard.cli.cmd_save"),
    "load": ("load", "dockyard.cli.cmd_load"),
    "import": ("import", "dockyard.cli.cmd_import"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="image_command", required=True, metavar="SUBCOMMAND")
    for name, (command, module_name) in SUBCOMMANDS.items():
        text = f"same as 'dockyard {command}'"
        p = sub.add_parser(name, help=text, description=text)
        module = importlib.import_module(module_name)
        module.add_arguments(p)
        p.set_defaults(_image_run=module.run)


def run(args: argparse.Namespace) -> int:
    code: int = args._image_run(args)
    return code
