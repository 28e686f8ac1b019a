"""``info``: the OCI runtime, cgroup mode, the sandbox and limits of a RUN step on this host,
the snapshotter and store root a build would use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dockyard._api._common import Root, store_root

__all__ = [
    "RootlessStatus",
    "RuntimeStatus",
    "SandboxStatus",
    "SnapshotterStatus",
    "SystemInfo",
    "info",
]


@dataclass(frozen=True)
class RuntimeStatus:
    """The OCI runtime found, or ``error`` saying why none works."""

    name: str = ""
    path: str = ""
    version: str = ""
    args: tuple[str, ...] = ()  # global arguments dockyard passes it
    cgroup2_hidden: bool = False  # run with the host's cgroup2 mount hidden (hybrid host)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error}
        return {"name": self.name, "path": self.path, "version": self.version,
                "args": list(self.args), "cgroup2_hidden": self.cgroup2_hidden}


@dataclass(frozen=True)
class SandboxStatus:
    """What a sandboxed RUN step gets with the runtime found (docs/security.md)."""

    capabilities: str
    seccomp: str
    devices: str
    pids: str

    def to_dict(self) -> dict[str, Any]:
        return {"capabilities": self.capabilities, "seccomp": self.seccomp,
                "devices": self.devices, "pids": self.pids, "masked_paths": True}


def sandbox_status(rt: Any) -> SandboxStatus:
    """The sandbox facts for a :class:`~dockyard.executor.runtime.RuntimeInfo`."""
    from dockyard.executor.spec import DEFAULT_PIDS_LIMIT

    if rt.cgroups:
        pids = f"cgroup pids.max {DEFAULT_PIDS_LIMIT}"
        devices = "device cgroup (default devices only)"
    elif getattr(rt, "own_cgroups", False):
        pids = f"cgroup pids.max {DEFAULT_PIDS_LIMIT} (v1 cgroup made by dockyard)"
        devices = "device cgroup (default devices only; v1 cgroup made by dockyard)"
    else:
        pids = f"RLIMIT_NPROC {DEFAULT_PIDS_LIMIT} (no cgroup manager)"
        devices = "no device cgroup"
    devices += "; nodev on /dev and every mount" + (
        ", rootfs included" if rt.nodev_root else ", not the rootfs (this runtime drops it)")
    if not rt.device_barrier:
        devices += "; seccomp refuses mknod of device nodes"
    caps = "Docker's default capabilities"
    if getattr(rt, "rootless", False):
        caps += " (within the user namespace)"
        devices += "; no device node can be made (user namespace)"
        pids = pids.replace("no cgroup manager", "no cgroup in a user namespace")
    return SandboxStatus(caps, "Docker's default seccomp profile", devices, pids)


@dataclass(frozen=True)
class SnapshotterStatus:
    """The snapshotter that works here, or ``error``; ``overlay_error`` says why ``auto``
    fell back to the copy-based one."""

    name: str = ""
    overlay_error: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error}
        out: dict[str, Any] = {"name": self.name}
        if self.overlay_error is not None:
            out["overlay_error"] = self.overlay_error
        return out


@dataclass(frozen=True)
class PlatformStatus:
    """A platform this host can run, and how: natively or through a QEMU emulator."""

    platform: str
    native: bool
    emulator: str | None = None  # the binfmt_misc entry, e.g. qemu-aarch64
    interpreter: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"platform": self.platform, "native": self.native}
        if not self.native:
            out.update(emulator=self.emulator, interpreter=self.interpreter)
        return out


@dataclass(frozen=True)
class RootlessStatus:
    """Whether builds run rootless (in a user namespace), with which id mapping, and the
    network networked RUN steps get by default (docs/rootless.md)."""

    rootless: bool = False
    id_mapping: str = ""  # "uid 0->1000, 1-65536->100000-165535; gid ..."
    mapping_kind: str = ""  # subordinate, single or identity ("" for root)
    network: str = "host"  # host, slirp4netns or pasta
    error: str | None = None  # why the user namespace or the network cannot be had

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rootless": self.rootless, "network": self.network}
        if self.rootless:
            out.update(id_mapping=self.id_mapping, mapping_kind=self.mapping_kind)
        if self.error is not None:
            out["error"] = self.error
        return out


def rootless_status() -> RootlessStatus:
    """What this process (inside the user namespace when it is rootless) builds with."""
    from dockyard.errors import DockyardError
    from dockyard.rootless import entered, in_user_namespace
    from dockyard.rootless.idmap import IdMapping, current_map
    from dockyard.rootless.network import choose

    if not in_user_namespace():
        return RootlessStatus()
    mapping = entered() or IdMapping("identity", current_map("uid"), current_map("gid"))
    try:
        network = choose("default", rootless=True)
        error = None
    except DockyardError as err:
        network, error = "none", str(err)
    return RootlessStatus(True, mapping.describe(), mapping.kind, network, error)


@dataclass(frozen=True)
class SystemInfo:
    """What ``dockyard info`` reports."""

    root: str
    cgroup_mode: str
    runtime: RuntimeStatus
    snapshotter: SnapshotterStatus
    # the platforms this host runs: natively, or emulated (QEMU registered in binfmt_misc)
    platforms: tuple[PlatformStatus, ...] = ()
    sandbox: SandboxStatus | None = None  # None when no runtime works
    rootless: RootlessStatus = RootlessStatus()

    def to_dict(self) -> dict[str, Any]:
        """The ``dockyard info --format json`` document."""
        out = {"root": self.root, "cgroup_mode": self.cgroup_mode,
               "runtime": self.runtime.to_dict(), "snapshotter": self.snapshotter.to_dict(),
               "platforms": [p.to_dict() for p in self.platforms],
               "rootless": self.rootless.to_dict()}
        if self.sandbox is not None:
            out["sandbox"] = self.sandbox.to_dict()
        return out


def info(
    *,
    runtime: str | None = None,
    snapshotter: Literal["auto", "overlay", "native"] = "auto",
    root: Root = None,
) -> SystemInfo:
    """Probe the runtime (``runtime``: a name or path; default ``$DOCKYARD_RUNTIME``, else
    crun, then runc) and the snapshotter on the store's file system, as a build would use
    them: as an ordinary user, inside dockyard's user namespace (``rootless`` says with
    which mapping and network). Problems are reported in the result, not raised. Creates
    the store root if missing."""
    from dockyard.errors import DockyardError
    from dockyard.rootless import call, needed

    path = store_root(root)
    if needed():
        try:
            result: SystemInfo = call(_info, runtime, snapshotter, path)
            return result
        except DockyardError as err:  # no user namespace here: say why, probe outside
            import dataclasses

            outside = _info(runtime, snapshotter, path)
            return dataclasses.replace(outside, rootless=RootlessStatus(
                True, "", "", "none", str(err)))
    return _info(runtime, snapshotter, path)


def _info(runtime: str | None, snapshotter: Literal["auto", "overlay", "native"],
          path: Path) -> SystemInfo:
    from dockyard.errors import DockyardError
    from dockyard.executor.runtime import cgroup_mode, detect_runtime, state_dir
    from dockyard.snapshot import open_snapshotter, overlay_supported

    path.mkdir(parents=True, exist_ok=True)
    sandbox = None
    try:
        rt = detect_runtime(runtime, cache_dir=state_dir(path))
        rt_status = RuntimeStatus(rt.name, rt.path, rt.version, tuple(rt.global_args),
                                  bool(rt.wrapper))
        sandbox = sandbox_status(rt)
    except DockyardError as err:
        rt_status = RuntimeStatus(error=str(err))
    try:
        sn = open_snapshotter(Path(path), snapshotter)
        overlay_error = None
        if snapshotter == "auto" and sn.name == "native":
            overlay_error = overlay_supported(path)[1]
        sn_status = SnapshotterStatus(sn.name, overlay_error)
    except DockyardError as err:
        sn_status = SnapshotterStatus(error=str(err))
    from dockyard.executor.emulation import runnable_platforms

    platforms = tuple(PlatformStatus(p.platform, p.native, p.emulator, p.interpreter)
                      for p in runnable_platforms())
    return SystemInfo(str(path), cgroup_mode(), rt_status, sn_status, platforms, sandbox,
                      rootless_status())
