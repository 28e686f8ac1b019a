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


def run(args: argparse.Namespace) -> int:
    from dockyard import get_login, login, logout
    from dockyard.errors import UsageError

    if args.logout:
        out = logout(args.registry, authfile=args.authfile)
        if not out.removed:
            print(f"Not logged in to {out.registry}", file=sys.stderr)
            return 0
        print(f"Removing login credentials for {out.registry}", file=sys.stderr)
        return 0
    if args.get_login:
        status = get_login(args.registry, authfile=args.authfile)
        if status.username is None:
            raise UsageError(f"not logged in to {status.registry}")
        print(status.username)
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
    result = login(args.registry, args.username, password, **registry_options(args))
    print(f"credentials saved in {result.config_path}", file=sys.stderr)
    print("Login Succeeded")
    return 0
