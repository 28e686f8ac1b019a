"""``dockyard pull NAME[:TAG|@DIGEST]``: download an image from a registry into the store.

Also home of the registry options shared by ``pull``, ``push`` and ``login``.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dockyard import ProgressMessage


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "1", "yes", "on"):
        return True
    if low in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (true or false)")


def add_registry_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tls-verify``, ``--insecure-registry`` and ``--authfile``."""
    parser.add_argument("--tls-verify", type=_bool, nargs="?", const=True, default=True,
                        metavar="BOOL",
                        help="verify the registry's TLS certificate (default: true); false "
                             "also allows plain HTTP")
    parser.add_argument("--insecure-registry", dest="insecure_registries", action="append",
                        default=[], metavar="HOST[:PORT]|CIDR",
                        help="allow plain HTTP and unverified TLS for this registry "
                             "(loopback registries always are)")
    parser.add_argument("--authfile", metavar="FILE",
                        help="credentials file (default: $DOCKER_CONFIG/config.json or "
                             "~/.docker/config.json)")


def registry_options(args: argparse.Namespace) -> dict[str, Any]:
    """The registry keyword arguments of the API calls, as the command line gives them."""
    return {
        "tls_verify": args.tls_verify,
        "insecure_registries": tuple(args.insecure_registries),
        "authfile": args.authfile,
    }


def show_progress(quiet: bool) -> Any:
    """The ``on_event`` callback: each progress line to stderr, unless ``quiet``."""
    if quiet:
        return None

    def on_event(event: ProgressMessage) -> None:
        print(event.message, file=sys.stderr)

    return on_event


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="NAME[:TAG|@DIGEST]", help="the image to pull")
    parser.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                        help="pick this platform from a multi-platform image (default: the "
                             "host's)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print only the image reference")
    add_registry_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from dockyard import pull

    result = pull(args.image, platform=args.platform, root=args.root,
                  on_event=show_progress(args.quiet), **registry_options(args))
    if not args.quiet:
        status = ("Image is up to date" if result.layers_downloaded == 0
                  else "Downloaded newer image")
        print(f"Status: {status} for {result.name}", file=sys.stderr)
    print(result.reference)
    return 0
