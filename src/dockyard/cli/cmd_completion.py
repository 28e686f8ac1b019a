"""``dockyard completion bash|zsh|fish``: print a completion script for the shell.

    source <(dockyard completion bash)                     # bash, this session
    dockyard completion zsh > "${fpath[1]}/_dockyard"      # zsh
    dockyard completion fish > ~/.config/fish/completions/dockyard.fish

The scripts are generated from the argument parsers (``dockyard.cli.completion``), so every
command, option and choice of this version is there.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shell", choices=("bash", "zsh", "fish"), help="the shell")


def run(args: argparse.Namespace) -> int:
    from dockyard.cli.completion import render

    sys.stdout.write(render(args.shell))
    return 0
