"""``run``: an image's command in a container, as ``docker run`` would.

The process runs with the same executor as RUN steps (crun or runc), on a throw-away writable
snapshot of the image's layers, which is always removed afterwards. The command follows
Docker's rules:

* ``command`` replaces the image's CMD and is appended to its ENTRYPOINT;
* ``entrypoint="X"`` replaces the ENTRYPOINT and drops the image's CMD (``command``, if
  any, follows X); ``entrypoint=""`` clears it, so ``command`` alone is run;
* the environment is the image's ``Env`` with each ``K=V`` of ``env`` replacing or adding
  ``K`` (``K`` alone copies ``K`` from this process's environment, skipped when unset);
* ``workdir`` replaces ``WorkingDir`` (default ``/``), ``user`` replaces ``User``.

The container's stdout and stderr, merged, go to ``on_output`` as they come; standard input
is not connected. The store's shared lock is held while the container runs, so a concurrent
``prune`` waits instead of removing its layers. SIGINT, SIGTERM or SIGHUP (in the main
thread) kills the container, unmounts the snapshot and raises KeyboardInterrupt.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from dockyard._api._common import Root, open_store
from dockyard.errors import UsageError

__all__ = ["RunResult", "merge_env", "resolve_command", "run"]


@dataclass(frozen=True)
class RunResult:
    """How the container ended: its exit status (128+N when killed by signal N)."""

    exit_code: int
    image_id: str
    argv: tuple[str, ...]  # the command that ran


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
    """SIGTERM, SIGHUP and SIGINT kill the container, then unwind as Ctrl-C (main thread
    only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        executor.cancel()
        raise KeyboardInterrupt(f"signal {signum}")

    old_term = signal.signal(signal.SIGTERM, handler)
    old_int = signal.signal(signal.SIGINT, handler)
    old_hup = signal.signal(signal.SIGHUP, handler)  # a closed terminal or SSH session
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGHUP, old_hup)


def run(
    image: str,
    command: Sequence[str] = (),
    *,
    env: Sequence[str] = (),
    entrypoint: str | None = None,
    user: str | None = None,
    workdir: str | None = None,
    network: Literal["host", "none"] = "host",
    hostname: str = "dockyard",
    snapshotter: Literal["auto", "overlay", "native"] = "auto",
    runtime: str | None = None,
    root: Root = None,
    on_output: Callable[[bytes], None] | None = None,
    platform: str | None = None,
) -> RunResult:
    """Run ``image``'s command (see the module docstring for Docker's rules) and wait for it.

    ``runtime``: ``crun``, ``runc`` or a path (default ``$DOCKYARD_RUNTIME``, then the first
    that works). Needs root. UsageError when there is no command to run.

    ``platform`` (``os/arch[/variant]``) runs that platform's image of a multi-platform
    name; an image of a foreign platform runs under QEMU user-mode emulation, and
    ExecutorError names the packages when this host has none for it.
    """
    from dockyard.errors import ExecutorError
    from dockyard.executor.emulation import check_runnable
    from dockyard.executor.run import Executor
    from dockyard.executor.runtime import detect_runtime
    from dockyard.executor.spec import RunSpec
    from dockyard.solver.snapshots import LayerSnapshots

    wanted = None
    if platform:
        from dockyard.dockerfile.stages import Platform

        wanted = str(Platform.parse(platform))
    with open_store(root) as store:
        record = store.get_image(image, platform=wanted)
        config = store.read_config(record)
        check_runnable(str(config.platform.normalized()))
        rc = config.config
        argv = resolve_command(rc.entrypoint, rc.cmd, command, entrypoint)
        if not argv:
            raise UsageError(
                f"run: no command specified: {image} has no ENTRYPOINT or CMD; "
                "give one after the image name"
            )
        spec = RunSpec(
            args=argv,
            env=merge_env(rc.env, env, os.environ),
            cwd=workdir or rc.working_dir or "/",
            user=rc.user if user is None else user,
            network="none" if network == "none" else "host",
            mounts=(),
            hostname=hostname,
        )
        state = store.root / "run"
        runtime_name = runtime or os.environ.get("DOCKYARD_RUNTIME")
        executor = Executor(detect_runtime(runtime_name, cache_dir=state), state)
        layers = LayerSnapshots(store, snapshotter)
        with (
            contextlib.closing(executor),  # its bundles and owner file
            store.build_lock(),
            _signals_kill(executor),
            layers.writable(list(config.diff_ids)) as rootfs,
        ):
            try:
                code: int = executor.run(rootfs, spec,
                                         on_output=on_output or (lambda _chunk: None))
            except ExecutorError as err:
                if str(err) == "cancelled":
                    raise KeyboardInterrupt from None
                raise
    return RunResult(code, record.id, argv)
