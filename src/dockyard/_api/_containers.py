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
is not connected, unless the call asks to attach (``interactive``/``tty``). The store's shared lock is held while the container runs, so a concurrent
``prune`` waits instead of removing its layers. SIGINT, SIGTERM or SIGHUP (in the main
thread) kills the container, unmounts the snapshot and raises KeyboardInterrupt.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from dockyard._api._common import Root, open_store, wanted_platform
from dockyard._signals import CancelOnSignal
from dockyard.errors import UsageError
from dockyard.rootless.namespace import in_namespace

if TYPE_CHECKING:
    from dockyard.executor.spec import MountSpec

__all__ = ["RunResult", "merge_env", "parse_volumes", "resolve_command", "run"]


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


_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
_VOLUME_OPTIONS = {"ro": "ro", "rw": "rw", "readonly": "ro", "z": "", "Z": ""}


def parse_volumes(items: Sequence[str]) -> tuple[MountSpec, ...]:
    """``-v HOST:CONTAINER[:OPTIONS]`` as bind mounts. HOST is absolute or starts with ``.``
    (named volumes need a daemon); CONTAINER is absolute; OPTIONS are ``ro``/``rw`` (and
    SELinux's ``z``/``Z``, which change nothing here). A missing HOST directory is made."""
    from dockyard.executor.spec import MountSpec

    out: list[MountSpec] = []
    for item in items:
        parts = item.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise UsageError(f"run: -v {item!r}: expected HOST:CONTAINER[:ro]")
        host, container = parts[0], parts[1]
        flags = [f for f in (parts[2].split(",") if len(parts) == 3 else []) if f]
        unknown = [f for f in flags if f not in _VOLUME_OPTIONS]
        if unknown:
            raise UsageError(f"run: -v {item!r}: unknown option {unknown[0]!r} (ro or rw)")
        if not host.startswith(("/", ".")):
            raise UsageError(f"run: -v {item!r}: named volumes are not supported; give a "
                             "host path (absolute, or starting with .)")
        if not container.startswith("/"):
            raise UsageError(f"run: -v {item!r}: the container path must be absolute")
        source = os.path.abspath(host)
        if not os.path.exists(source):
            os.makedirs(source, exist_ok=True)
        readonly = any(_VOLUME_OPTIONS[f] == "ro" for f in flags)
        options = ("rbind", "rprivate", "nosuid", "nodev", *(("ro",) if readonly else ()))
        out.append(MountSpec(posixpath.normpath(container), "bind", source, options))
    return tuple(out)


@in_namespace
def run(
    image: str,
    command: Sequence[str] = (),
    *,
    env: Sequence[str] = (),
    entrypoint: str | None = None,
    user: str | None = None,
    workdir: str | None = None,
    network: str = "host",
    hostname: str = "dockyard",
    snapshotter: Literal["auto", "overlay", "native"] = "auto",
    runtime: str | None = None,
    root: Root = None,
    on_output: Callable[[bytes], None] | None = None,
    platform: str | None = None,
    interactive: bool = False,
    tty: bool = False,
    volumes: Sequence[str] = (),
    name: str | None = None,
) -> RunResult:
    """Run ``image``'s command (see the module docstring for Docker's rules) and wait for it.

    ``runtime``: ``crun``, ``runc`` or a path (default ``$DOCKYARD_RUNTIME``, then the first
    that works). ``network``: ``host`` (the default; as an ordinary user, where its user
    namespace allows it), ``none``, ``slirp4netns`` or ``pasta`` (docs/rootless.md). Runs
    as root, or as an ordinary user in dockyard's user namespace. UsageError when there is
    no command to run.

    ``platform`` (``os/arch[/variant]``) runs that platform's image of a multi-platform
    name; an image of a foreign platform runs under QEMU user-mode emulation, and
    ExecutorError names the packages when this host has none for it.

    ``interactive`` (``-i``) and ``tty`` (``-t``) attach the container to this process's
    standard input, output and error (``on_output`` is then not called): ``-i`` forwards
    standard input, ``-t`` gives the process a pseudo-terminal (and ``TERM=xterm`` unless
    set), as ``docker run -it``. ``volumes``: ``HOST:CONTAINER[:ro|rw]`` bind mounts (a
    missing host directory is made, as docker's ``-v`` does). ``name``: the container's
    name in the runtime while it runs (refused when one of that name is running).
    """
    from dockyard.errors import ExecutorError
    from dockyard.executor.emulation import check_runnable
    from dockyard.executor.run import Executor
    from dockyard.executor.runtime import detect_runtime, state_dir
    from dockyard.executor.spec import RunSpec
    from dockyard.rootless.idmap import in_user_namespace
    from dockyard.rootless.network import UserModeNetwork, choose
    from dockyard.solver.snapshots import LayerSnapshots

    if name is not None and not _NAME.fullmatch(name):
        raise UsageError(f"run: invalid container name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] "
                         "are allowed")
    try:
        mode = choose("default" if network == "host" else network,
                      rootless=in_user_namespace())
    except UsageError as err:
        raise UsageError(f"run: {err}") from None
    binds = parse_volumes(volumes)
    with open_store(root) as store:
        record = store.get_image(image, platform=wanted_platform(platform))
        config = store.read_config(record)
        check_runnable(str(config.platform.normalized()))
        rc = config.config
        argv = resolve_command(rc.entrypoint, rc.cmd, command, entrypoint)
        if not argv:
            raise UsageError(
                f"run: no command specified: {image} has no ENTRYPOINT or CMD; "
                "give one after the image name"
            )
        run_env = merge_env(rc.env, env, os.environ)
        if tty and not any(e.startswith("TERM=") for e in run_env):
            run_env = (*run_env, "TERM=xterm")
        spec = RunSpec(
            args=argv,
            env=run_env,
            cwd=workdir or rc.working_dir or "/",
            user=rc.user if user is None else user,
            network="none" if mode == "none" else "host",
            mounts=binds,
            hostname=hostname,
            terminal=tty,
        )
        state = state_dir(store.root)
        runtime_name = runtime or os.environ.get("DOCKYARD_RUNTIME")
        executor = Executor(detect_runtime(runtime_name, cache_dir=state), state)
        if mode in ("slirp4netns", "pasta"):
            executor.network = UserModeNetwork(mode)  # type: ignore[arg-type]
        layers = LayerSnapshots(store, snapshotter)
        with (
            contextlib.closing(executor),  # its bundles and owner file
            store.build_lock(),
            CancelOnSignal(executor.cancel),
            layers.writable(list(config.diff_ids)) as rootfs,
        ):
            try:
                code: int = executor.run(rootfs, spec,
                                         on_output=on_output or (lambda _chunk: None),
                                         attach=interactive or tty, name=name)
            except ExecutorError as err:
                if str(err) == "cancelled":
                    raise KeyboardInterrupt from None
                raise
    return RunResult(code, record.id, argv)
