"""``dockyard run [OPTIONS] IMAGE [CMD...]``: run an image's command, as ``docker run`` would.

The process runs with the same executor as RUN steps (crun or runc), on a throw-away writable
snapshot of the image's layers, which is always removed afterwards: ``--rm`` is accepted for
docker compatibility and changes nothing. The command follows Docker's rules:

* CMD arguments replace the image's CMD and are appended to its ENTRYPOINT;
* ``--entrypoint X`` replaces the ENTRYPOINT and drops the image's CMD (the arguments, if
  any, follow X); ``--entrypoint ""`` clears it, so the arguments alone are the command;
* the environment is the image's ``Env`` with each ``-e K=V`` replacing or adding ``K``
  (``-e K`` copies ``K`` from dockyard's own environment, and is skipped when unset);
* ``-w`` replaces ``WorkingDir`` (default ``/``), ``-u`` replaces ``User``.

Standard output carries only the container's output (its stdout and stderr, merged by the
executor, written as they come); the container's exit status becomes dockyard's (128+N when
killed by signal N). Standard input is not connected (no ``-i``/``-t``). Ctrl-C or SIGTERM
kills the container and unmounts the snapshot (exit 130). The store's shared lock is held
while the container runs, so a concurrent ``prune`` waits instead of removing its layers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from dockyard.errors import UsageError

__all__ = ["add_arguments", "merge_env", "resolve_command", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rm", action="store_true",
                        help="accepted for docker compatibility: the container is always removed")
    parser.add_argument("-e", "--env", action="append", default=[], metavar="K=V",
                        help="set an environment variable (K alone: take it from this shell)")
    parser.add_argument("--entrypoint", metavar="CMD",
                        help='replace the image\'s ENTRYPOINT (and drop its CMD); "" clears it')
    parser.add_argument("-u", "--user", metavar="USER[:GROUP]",
                        help="user name or uid, optionally with a group (default: the image's)")
    parser.add_argument("-w", "--workdir", metavar="DIR",
                        help="working directory in the container (default: the image's)")
    parser.add_argument("--network", choices=("host", "none"), default="host",
                        help="host (default) or none")
    parser.add_argument("--hostname", default="dockyard", help="the container's host name")
    parser.add_argument("--snapshotter", choices=("auto", "overlay", "native"), default="auto",
                        help="snapshotter for the container's filesystem (default: auto)")
    parser.add_argument("--runtime", metavar="NAME|PATH",
                        help="OCI runtime: crun or runc (default: $DOCKYARD_RUNTIME, then probe)")
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD",
                        help="command and arguments (replace the image's CMD)")


def resolve_command(
    entrypoint: Sequence[str] | None,
    cmd: Sequence[str] | None,
    args: Sequence[str],
    entrypoint_override: str | None = None,
) -> tuple[str, ...]:
    """The argv Docker runs for an image with ``entrypoint``/``cmd`` given ``docker run``
    arguments ``args`` and ``--entrypoint`` (None when not given). May be empty."""
    if entrypoint_override is not None:
        head: tuple[str, ...] = (entrypoint_override,) if entrypoint_override else ()
        return (*head, *args)
    tail = tuple(args) if args else tuple(cmd or ())
    return (*tuple(entrypoint or ()), *tail)


def merge_env(
    image_env: Sequence[str], options: Sequence[str], host_env: Mapping[str, str]
) -> tuple[str, ...]:
    """The image's ``K=V`` list with ``-e`` options applied in order: an existing ``K`` is
    replaced where it stands, a new one appended; ``-e K`` takes ``K`` from ``host_env``."""
    merged: dict[str, str] = {}
    for item in image_env:
        name, _, value = item.partition("=")
        merged[name] = value
    for opt in options:
        name, sep, value = opt.partition("=")
        if not name:
            raise UsageError(f"run: invalid environment variable {opt!r} (want K=V)")
        if not sep:
            if name not in host_env:
                continue
            value = host_env[name]
        merged[name] = value
    return tuple(f"{k}={v}" for k, v in merged.items())


@contextlib.contextmanager
def _signals_kill(executor: Any) -> Iterator[None]:
    """SIGTERM and SIGINT kill the container, then unwind as Ctrl-C (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        executor.cancel()
        raise KeyboardInterrupt(f"signal {signum}")

    old_term = signal.signal(signal.SIGTERM, handler)
    old_int = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)


def run(args: argparse.Namespace) -> int:
    from dockyard.errors import ExecutorError
    from dockyard.executor.run import Executor
    from dockyard.executor.runtime import detect_runtime
    from dockyard.executor.spec import RunSpec
    from dockyard.solver.snapshots import LayerSnapshots
    from dockyard.store.db import Store

    command: list[str] = list(args.command)  # argparse already dropped a leading "--"
    store = Store.open(Path(args.root))
    try:
        image = store.get_image(args.image)
        config = store.read_config(image)
        rc = config.config
        argv = resolve_command(rc.entrypoint, rc.cmd, command, args.entrypoint)
        if not argv:
            raise UsageError(
                f"run: no command specified: {args.image} has no ENTRYPOINT or CMD; "
                "give one after the image name"
            )
        spec = RunSpec(
            args=argv,
            env=merge_env(rc.env, args.env, os.environ),
            cwd=args.workdir or rc.working_dir or "/",
            user=rc.user if args.user is None else args.user,
            network="none" if args.network == "none" else "host",
            mounts=(),
            hostname=args.hostname,
        )
        state = store.root / "run"
        runtime_name = args.runtime or os.environ.get("DOCKYARD_RUNTIME")
        executor = Executor(detect_runtime(runtime_name, cache_dir=state), state)
        out = sys.stdout.buffer

        def on_output(chunk: bytes) -> None:
            out.write(chunk)
            out.flush()

        layers = LayerSnapshots(store, args.snapshotter)
        with (
            store.build_lock(),
            _signals_kill(executor),
            layers.writable(list(config.diff_ids)) as rootfs,
        ):
            try:
                code: int = executor.run(rootfs, spec, on_output=on_output)
            except ExecutorError as err:
                if str(err) == "cancelled":
                    raise KeyboardInterrupt from None
                raise
        return code
    finally:
        store.close()
