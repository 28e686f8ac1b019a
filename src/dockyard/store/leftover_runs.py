"""What killed dockyard processes leave in a store that only they could have used: containers,
their bundles and secrets (the executor's layout, ``executor.run``), and mounts. Removed by
``store check --repair`` and ``prune`` (with the rest of :func:`dockyard.store.check.leftovers`)
and by a build that starts on an idle store (``api._sweep_stale_runs``)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from dockyard._fs import tree_size
from dockyard.errors import DockyardError
from dockyard.store.db import Store

__all__ = ["MOUNT_DIRS", "Finding", "mounted_leftovers", "run_leftovers"]


@dataclass(frozen=True)
class Finding:
    """One thing found wrong: ``kind`` (a short name, e.g. ``blob-corrupt``), a sentence in
    plain words, whether ``repair`` can fix it, and whether it was fixed."""

    kind: str
    message: str
    repairable: bool = True
    repaired: bool = False
    bytes: int = 0  # what repairing it freed (or would free)


#: where dockyard mounts in a store: snapshots and views (``mnt/``), a container's root view
#: and a private secrets tmpfs (``run/``). Nothing else below the store is ours to unmount: the
#: store's own directory, or one of its parts, may be a file system the user mounted there.
MOUNT_DIRS = ("mnt", "run")


def mounted_leftovers(store: Store) -> list[Path]:
    """What is mounted where dockyard mounts (:data:`MOUNT_DIRS`), deepest first."""
    from dockyard.snapshot.base import our_mounts

    points: list[Path] = []
    for name in MOUNT_DIRS:
        where = store.root / name
        if where.is_dir() and not where.is_symlink():
            points += [p for p in our_mounts(where) if p != where.resolve()]
    points.sort(key=lambda p: len(p.parts), reverse=True)
    return points


def run_leftovers(store: Store, *, remove: bool) -> list[Finding]:
    """The containers, bundles, secrets and mounts of killed processes (the part of
    :func:`leftovers` a build removes when it starts on an idle store). Call under the
    store's exclusive lock."""
    from dockyard.snapshot.base import our_mounts, unmount

    # containers first (nothing may run on what goes), then mounts (nothing below can be
    # removed while mounted)
    found = _runtime_leftovers(store, remove=remove)
    for point in mounted_leftovers(store):
        done = False
        if remove:
            with contextlib.suppress(DockyardError, OSError):
                unmount(point)
                done = True
        found.append(Finding("mount", f"{point} is still mounted (a killed build's)",
                             repaired=done))
    mnt = store.root / "mnt"
    still_mounted = set(our_mounts(mnt)) if mnt.is_dir() else set()
    for name in sorted(os.listdir(mnt)) if mnt.is_dir() else []:
        point = mnt / name
        if not point.is_dir() or point.is_symlink() or \
                Path(os.path.realpath(point)) in still_mounted:
            continue
        done = False
        if remove:
            with contextlib.suppress(OSError):
                point.rmdir()  # only an empty, unmounted mount point goes
                done = True
        found.append(Finding("mount-point", f"mount point {point} was left behind",
                             repaired=done))
    return found


def _runtime_leftovers(store: Store, *, remove: bool) -> list[Finding]:
    """Containers, bundles and secret directories of killed runs: the executor knows their
    layout (``executor.run.sweep_stale``, which prune runs too, and ``stale_leftovers``)."""
    from dockyard.executor.runtime import state_dir

    state = state_dir(store.root)
    if not state.is_dir():
        return []
    from dockyard.executor.run import cleanup_stale_containers, stale_leftovers, sweep_stale

    found: list[Finding] = []
    listed = stale_leftovers(state, exclusive=True)
    sizes = {p: tree_size(p) for p in listed}
    containers = 0
    if remove:
        containers = cleanup_stale_containers(state)
        sweep_stale(state, exclusive=True)
    for path in listed:
        what = ("owner file" if path.parent.name == "owners" else
                "container bundle" if "bundles" in path.parts else "secrets directory")
        found.append(Finding("run-leftover", f"{what} {path} was left by a killed process",
                             repaired=remove and not os.path.lexists(path), bytes=sizes[path]))
    if containers:
        found.append(Finding("container", f"{containers} container(s) of killed runs were "
                             "still there", repaired=True))
    return found
