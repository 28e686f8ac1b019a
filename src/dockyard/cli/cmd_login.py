"""``dockyard login REGISTRY`` and ``dockyard logout REGISTRY``: credentials in Docker's
config file (``$DOCKER_CONFIG/config.json``), shared with ``docker login``.

Both commands use this module; the parser's program name tells them apart.
"""

from __future__ import annotations

import argparse
import sys

from dockyard.cli.cmd_pull import add_registry_arguments, registry_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    logout = parser.prog.endswith("logout")
    parser.set_defaults(logout=logout)
    parser.add_argument("registry", metavar="REGISTRY", nargs="?", default="docker.io",
                        help="registry host[:port] (default: Docker Hub)")
    if logout:
        parser.description = "Remove the stored credentials of a registry"
        parser.add_argument("--authfile", metavar="FILE",
                            help="credentials file (default: $DOCKER_CONFIG/config.json)")
        return
    parser.add_argument("-u", "--username", metavar="USER", help="user name")
    parser.add_argument("-p", "--password", metavar="PASSWORD",
                        help="password (insecure: visible to other users; prefer "
                             "--password-stdin)")
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password (or token) from stdin")
    parser.add_argument("--get-login", action="store_true",
                        help="print the stored user name for REGISTRY and exit")
    add_registry_arguments(parser)


def _host(registry: str) -> str:
    text = registry.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    return text.split("/", 1)[0].lower() or "docker.io"


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dockyard.errors import UsageError
    from dockyard.registry.auth import (
        Credentials,
        load_credentials,
        remove_credentials,
        save_credentials,
    )
    from dockyard.registry.client import RegistryClient

    host = _host(args.registry)
    if host in ("index.docker.io", "registry-1.docker.io"):
        host = "docker.io"
    authfile = Path(args.authfile) if args.authfile else None
    if args.logout:
        if not remove_credentials(host, authfile):
            print(f"Not logged in to {host}", file=sys.stderr)
            return 0
        print(f"Removing login credentials for {host}", file=sys.stderr)
        return 0
    if args.get_login:
        found = load_credentials(host, authfile)
        if found is None:
            raise UsageError(f"not logged in to {host}")
        print(found.username)
        return 0
    if args.password is not None and args.password_stdin:
        raise UsageError("--password and --password-stdin are mutually exclusive")
    if not args.username:
        raise UsageError("give a user name with -u USER")
    if args.password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
    elif args.password is not None:
        password = args.password
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.",
              file=sys.stderr)
    elif sys.stdin.isatty():
        import getpass

        password = getpass.getpass("Password: ")
    else:
        raise UsageError("no password: use --password-stdin")
    if not password:
        raise UsageError("the password is empty")
    credentials = Credentials(args.username, password)
    with RegistryClient(host, registry_options(args), credentials=credentials) as client:
        client.login()
    path = save_credentials(host, credentials, authfile)
    print(f"credentials saved in {path}", file=sys.stderr)
    print("Login Succeeded")
    return 0
