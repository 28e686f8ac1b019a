"""``dockyard run [OPTIONS] IMAGE [CMD...]``: run an image's command, as ``docker run`` would.

A thin layer over :func:`dockyard.run`. The process runs with the same executor as RUN steps
(crun or runc), on a throw-away writable snapshot of the image's layers, which is always
removed afterwards: ``--rm`` is accepted for docker compatibility and changes nothing. The
command follows Docker's rules:

* CMD arguments replace the image's CMD and are appended to its ENTRYPOINT;
* ``--entrypoint X`` replaces the ENTRYPOINT and drops the image's CMD (the arguments, if
  any, follow X); ``--entrypoint ""`` clears it, so the arguments alone are the command;
* the environment is the image's ``Env`` with each ``-e K=V`` replacing or adding ``K``
  (``-e K`` copies ``K`` from dockyard's own environment, and is skipped when unset);
* ``-w`` replaces ``WorkingDir`` (default ``/``), ``-u`` replaces ``User``.

Standard output carries only the container's output (its stdout and stderr, merged by the
executor, written as they come); the container's exit status becomes dockyard's (128+N when
killed by signal N). ``-i`` connects standard input, and the container's stdout and stderr
stay apart; ``-t`` gives it a pseudo-terminal (ours in raw mode meanwhile, so Ctrl-C reaches
the container's shell). ``-v HOST:CTR[:ro]`` bind-mounts a host path; ``--name`` names the
container in the runtime while it runs. Ctrl-C (without ``-t``) or SIGTERM kills the
container and unmounts the snapshot (exit 130). The store's shared lock is held
while the container runs, so a concurrent ``prune`` waits instead of removing its layers.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rm", action="store_true",
                        help="accepted for docker compatibility: the container is always removed")
    parser.add_argument("-i", "--interactive", action="store_true",
                        help="connect standard input to the container")
    parser.add_argument("-t", "--tty", action="store_true",
                        help="give the container a pseudo-terminal")
    parser.add_argument("-v", "--volume", dest="volumes", action="append", default=[],
                        metavar="HOST:CTR[:ro]", help="bind-mount a host path (repeatable)")
    parser.add_argument("--name", metavar="NAME",
                        help="the container's name in the runtime while it runs")
    parser.add_argument("-e", "--env", action="append", default=[], metavar="K=V",
                        help="set an environment variable (K alone: take it from this shell)")
    parser.add_argument("--entrypoint", metavar="CMD",
                        help='replace the image\'s ENTRYPOINT (and drop its CMD); "" clears it')
    parser.add_argument("-u", "--user", metavar="USER[:GROUP]",
                        help="user name or uid, optionally with a group (default: the image's)")
    parser.add_argument("-w", "--workdir", metavar="DIR",
                        help="working directory in the container (default: the image's)")
    parser.add_argument("--network", choices=("host", "none", "slirp4netns", "pasta"),
                        default="host",
                        help="host (default), none, or slirp4netns or pasta (a user-mode network of its own)")
    parser.add_argument("--hostname", default="dockyard", help="the container's host name")
    parser.add_argument("--snapshotter", choices=("auto", "overlay", "native"), default="auto",
                        help="snapshotter for the container's filesystem (default: auto)")
    parser.add_argument("--runtime", metavar="NAME|PATH",
                        help="OCI runtime: crun or runc (default: $DOCKYARD_RUNTIME, then probe)")
    parser.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                        help="run this platform's image of a multi-platform name (a foreign "
                             "one under QEMU emulation; see dockyard info)")
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD",
                        help="command and arguments (replace the image's CMD)")


def run(args: argparse.Namespace) -> int:
    from dockyard import run as run_image
    from dockyard.errors import UsageError

    if args.tty and args.interactive and not sys.stdin.isatty():
        raise UsageError("the input device is not a TTY (drop -t, or run from a terminal)")
    out = sys.stdout.buffer

    def on_output(chunk: bytes) -> None:
        out.write(chunk)
        out.flush()

    result = run_image(
        args.image,
        list(args.command),  # argparse already dropped a leading "--"
        env=args.env,
        entrypoint=args.entrypoint,
        user=args.user,
        workdir=args.workdir,
        network=args.network,
        hostname=args.hostname,
        snapshotter=args.snapshotter,
        runtime=args.runtime,
        root=args.root,
        on_output=on_output,
        interactive=args.interactive,
        tty=args.tty,
        volumes=args.volumes,
        name=args.name,
        platform=args.platform,
    )
    return result.exit_code
