"""The device and pids cgroups dockyard makes itself where the runtime applies none.

crun (1.8) cannot manage cgroups on a hybrid host (cgroup v1 controllers plus a cgroup2
mount), so it runs there with ``--cgroup-manager=disabled`` and applies neither the device
rules nor the pids limit of the spec. Where the v1 ``devices`` and ``pids`` hierarchies are
writable, dockyard makes ``<hierarchy>/dockyard/<container id>`` in both before the container
starts (the device rules runc 1.1 writes for the spec's deny-all rule, and ``pids.max``), and
the runtime's wrapper moves itself into them before it execs crun, so the container's
processes start inside (see :func:`dockyard.executor.runtime.hide_cgroup2_wrapper`). The same
barriers as runc's, at crun's start-up cost (docs/security.md).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterable
from pathlib import Path

from dockyard.errors import ExecutorError

__all__ = [
    "DEVICE_RULES", "available", "create", "hierarchies", "remove", "remove_abandoned",
    "remove_named",
]

# What runc 1.1.5 writes to devices.allow after "a" to devices.deny for a sandboxed container
# (read from a running container's devices.list): mknod of any node, and the default
# devices: null, zero, full, random, urandom, tty, ptmx, tun and the pts nodes.
DEVICE_RULES = ("b *:* m", "c *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm",
                "c 1:9 rwm", "c 5:0 rwm", "c 5:2 rwm", "c 10:200 rwm", "c 136:* rwm")
_CONTROLLERS = ("devices", "pids")


def hierarchies() -> dict[str, Path]:
    """Mount points of the v1 ``devices`` and ``pids`` hierarchies (either may be missing)."""
    found: dict[str, Path] = {}
    with contextlib.suppress(OSError), open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = right.split()
            if len(fields) < 3 or fields[0] != "cgroup":
                continue
            options = fields[2].split(",")
            for name in _CONTROLLERS:
                if name in options and name not in found:
                    found[name] = Path(left.split(" ")[4])
    return found


def available() -> bool:
    """Whether both hierarchies are mounted here and this process may make cgroups in them."""
    found = hierarchies()
    return all(n in found and os.access(found[n], os.W_OK) for n in _CONTROLLERS)


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def create(cid: str, *, devices: bool = True, pids_limit: int | None = None) -> list[Path]:
    """Make the container's cgroups: the device rules (unless ``devices`` is False: a
    ``--security=insecure`` step may open any device, as runc's allow-all rule) and
    ``pids.max``. Returns their directories; ExecutorError (nothing left behind) if the
    kernel refuses any of it."""
    from dockyard.executor.spec import DEFAULT_PIDS_LIMIT

    found = hierarchies()
    made: list[Path] = []
    try:
        for name in _CONTROLLERS:
            if name == "devices" and not devices:
                continue
            if name not in found:
                raise ExecutorError(f"no cgroup v1 {name} hierarchy is mounted")
            parent = found[name] / "dockyard"
            with contextlib.suppress(FileExistsError):
                parent.mkdir(mode=0o755)
            d = parent / cid
            d.mkdir(mode=0o755)
            made.append(d)
            if name == "devices":
                _write(d / "devices.deny", "a")
                for rule in DEVICE_RULES:
                    _write(d / "devices.allow", rule)
            else:
                _write(d / "pids.max", str(pids_limit or DEFAULT_PIDS_LIMIT))
    except OSError as err:
        remove(made)
        raise ExecutorError(f"cannot make the container's cgroups: {err}") from None
    except BaseException:
        remove(made)
        raise
    return made


def remove(paths: Iterable[Path], *, wait: float = 2.0) -> None:
    """Remove cgroups whose processes are gone (a container's last ones may take a moment
    to leave after the runtime returns: retried for up to ``wait`` seconds)."""
    deadline = time.monotonic() + wait
    for path in paths:
        while True:
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError as err:
                if err.errno == errno.EBUSY and time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
            break


def remove_named(cids: Iterable[str]) -> None:
    """Remove the cgroups of containers that are gone (a killed build's), where empty."""
    found = hierarchies()
    remove([found[n] / "dockyard" / cid for cid in cids for n in _CONTROLLERS if n in found],
           wait=0.5)


def remove_abandoned(older_than: float = 600.0) -> int:
    """Remove cgroups below ``<hierarchy>/dockyard/`` made more than ``older_than`` seconds
    ago that hold no process: ones whose maker died before it could remove them (its
    container id unknown to any store). A cgroup in use cannot be removed (EBUSY), and a
    fresh one, made but not joined yet, is younger than the limit: the runtime's wrapper
    joins within milliseconds. Returns how many went."""
    removed = 0
    now = time.time()
    for root in hierarchies().values():
        parent = root / "dockyard"
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            path = parent / name
            try:
                if now - os.stat(path).st_mtime < older_than:
                    continue
                os.rmdir(path)
                removed += 1
            except OSError:
                continue
    return removed
