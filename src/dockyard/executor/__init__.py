"""executor room: run a RUN step's process in a root filesystem with crun or runc.

``detect_runtime()`` finds a runtime that works on this host; ``Executor(runtime,
state_dir).run(rootfs, RunSpec(...), on_output=...)`` runs one process and returns its exit
status. ``executor.mounts`` parses ``RUN --mount`` and turns mounts into :class:`MountSpec`.
"""

from __future__ import annotations

from dockyard.executor.run import (
    Executor,
    MountStub,
    find_mount_stubs,
    remove_mount_stubs,
    sigterm_raises,
)
from dockyard.executor.runtime import RuntimeInfo, cgroup_mode, default_state_dir, detect_runtime
from dockyard.executor.spec import MountSpec, RunSpec, resolve_user

__all__ = [
    "Executor",
    "MountSpec",
    "MountStub",
    "RunSpec",
    "RuntimeInfo",
    "cgroup_mode",
    "default_state_dir",
    "detect_runtime",
    "find_mount_stubs",
    "remove_mount_stubs",
    "resolve_user",
    "sigterm_raises",
]
