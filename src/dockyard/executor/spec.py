"""What a RUN step asks for (:class:`RunSpec`) and the OCI runtime spec made from it.

Everything here is pure (no root, no runtime): user resolution reads the rootfs's passwd and
group files, scoped to the rootfs so a symlink there cannot make us read the host's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dockyard.errors import ExecutorError, LayerError, UsageError
from dockyard.layers.rootpath import resolve_in_root as _resolve_in_root

__all__ = [
    "DEFAULT_CAPABILITIES",
    "DEFAULT_ENV_PATH",
    "DEFAULT_PIDS_LIMIT",
    "DEFAULT_SHM_SIZE",
    "DEVICE_NODES",
    "MountSpec",
    "RunSpec",
    "Ulimit",
    "UserIds",
    "hosts_file_content",
    "oci_spec",
    "parse_ulimit",
    "resolve_in_root",
    "resolve_user",
    "system_mounts",
]

# Docker's default capability set (moby oci/caps/defaults.go).
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

# Every capability, in kernel numbering (CAP_CHOWN is 0).
_CAPABILITY_NUMBERS: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
_ALL_CAPABILITIES = tuple(sorted(_CAPABILITY_NUMBERS))


def privileged_capabilities(status: str | None = None) -> tuple[str, ...]:
    """Every capability this process may pass on (its bounding set, from
    /proc/self/status or ``status``): what ``--security=insecure`` gets, as Docker's
    ``--privileged`` gets the daemon's set. Asking a runtime for one outside it fails."""
    if status is None:
        try:
            with open("/proc/self/status", encoding="ascii") as f:
                status = f.read()
        except OSError:
            return _ALL_CAPABILITIES
    for line in status.splitlines():
        if line.startswith("CapBnd:"):
            bits = int(line.split()[1], 16)
            return tuple(sorted(name for n, name in enumerate(_CAPABILITY_NUMBERS)
                                if bits >> n & 1))
    return _ALL_CAPABILITIES


DEFAULT_ENV_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Docker's masked and read-only /proc and /sys paths for unprivileged containers.
_MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
)
_READONLY_PATHS = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)


# The most processes (cgroup pids.max) a container may have. Where no cgroup manager applies
# (crun with its manager disabled) it becomes RLIMIT_NPROC, which counts every process of the
# container's user on the host, hence the generous value.
DEFAULT_PIDS_LIMIT = 32768
DEFAULT_SHM_SIZE = 64 << 20  # /dev/shm, as Docker's default

# Docker's default devices. In a sandboxed container /dev is ``nodev`` (so a node made with
# mknod there cannot be opened even where no device cgroup applies) and these are bind
# mounts of the host's nodes, whose own mount does allow devices.
DEVICE_NODES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
                "/dev/tty")

_RLIMITS = ("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile",
            "nproc", "rss", "rtprio", "rttime", "sigpending", "stack")
_UNLIMITED = 2**64 - 1


@dataclass(frozen=True, slots=True)
class Ulimit:
    """One resource limit (``docker build --ulimit nofile=1024:2048``): ``name`` as in
    ``ulimit`` (``nofile``, ``nproc``...), soft and hard values (2**64-1 = unlimited)."""

    name: str
    soft: int
    hard: int

    def to_oci(self) -> dict[str, Any]:
        return {"type": f"RLIMIT_{self.name.upper()}", "soft": self.soft, "hard": self.hard}


def parse_ulimit(text: str) -> Ulimit:
    """``name=soft[:hard]`` as docker's ``--ulimit`` (go-units ``ParseUlimit``); ``-1`` or
    ``unlimited`` is no limit. Raises UsageError."""
    name, sep, values = text.partition("=")
    name = name.strip().lower()
    if not sep or name not in _RLIMITS:
        raise UsageError(
            f"--ulimit {text}: expected NAME=SOFT[:HARD] with NAME one of {', '.join(_RLIMITS)}")

    def value(word: str) -> int:
        word = word.strip()
        if word in ("-1", "unlimited"):
            return _UNLIMITED
        if not word.isdigit():
            raise UsageError(f"--ulimit {text}: {word!r} is not a number")
        return int(word)

    soft_text, _, hard_text = values.partition(":")
    soft = value(soft_text)
    hard = value(hard_text) if hard_text else soft
    if soft > hard:
        raise UsageError(f"--ulimit {text}: soft limit {soft} is above the hard limit {hard}")
    return Ulimit(name, soft, hard)


@dataclass(frozen=True, slots=True)
class MountSpec:
    """One extra mount in the container: an OCI ``mounts[]`` entry."""

    destination: str
    type: str
    source: str
    options: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RunSpec:
    """A process to run in a root filesystem.

    ``user`` is as written in USER (``""`` = root). ``env`` entries are ``K=V``; a PATH is
    added when missing. ``security="insecure"`` asks for a privileged container; the caller
    checks it was allowed (``--allow security.insecure``). ``ulimits`` replace the inherited
    limits of the same names; ``shm_size`` is the size of /dev/shm in bytes.
    """

    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    user: str
    network: Literal["host", "none"]
    mounts: tuple[MountSpec, ...]
    hostname: str = "dockyard"
    security: Literal["sandbox", "insecure"] = "sandbox"
    extra_hosts: tuple[tuple[str, str], ...] = ()  # --add-host: (name, address) lines
    ulimits: tuple[Ulimit, ...] = ()
    shm_size: int = DEFAULT_SHM_SIZE
    terminal: bool = False  # a pseudo-terminal for the process (dockyard run -t)


@dataclass(frozen=True, slots=True)
class UserIds:
    """A resolved user: uid, primary gid and supplementary gids."""

    uid: int
    gid: int
    groups: tuple[int, ...]


def resolve_in_root(rootfs: Path, path: str) -> Path:
    """``path`` inside ``rootfs`` with every symlink resolved as if ``rootfs`` were ``/``.

    The result never leaves ``rootfs`` (``..`` stops at the root, absolute link targets
    restart from it). The final component need not exist.
    """
    try:
        return _resolve_in_root(rootfs, path)
    except LayerError as err:
        raise ExecutorError(str(err)) from None


def _read_db(rootfs: Path, name: str) -> list[list[str]]:
    try:
        text = resolve_in_root(rootfs, name).read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return []
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        rows.append(line.split(":"))
    return rows


def _parse_id(text: str) -> int | None:
    if text.isdigit():
        value = int(text)
        if value < 2**31:
            return value
    return None


def resolve_user(rootfs: Path, user: str) -> tuple[int, int, tuple[int, ...]]:
    """``(uid, gid, supplementary gids)`` of USER ``user`` in ``rootfs``.

    Accepts ``name``, ``uid``, ``name:group``, ``uid:gid`` (and mixes), as runc's
    ``GetExecUser``: a user name must exist in /etc/passwd; a numeric uid need not (gid then
    defaults to 0); with no group given, the supplementary groups are those in /etc/group that
    list the user; with a group given, it is the only group. Raises ExecutorError.
    """
    ids = _resolve_user(rootfs, user)
    return ids.uid, ids.gid, ids.groups


def _resolve_user(rootfs: Path, user: str) -> UserIds:
    if user in ("", "root") and not _read_db(rootfs, "/etc/passwd"):
        return UserIds(0, 0, ())
    user_part, sep, group_part = user.partition(":")
    if user_part == "":
        user_part = "0"
    passwd = _read_db(rootfs, "/etc/passwd")
    groups_db = _read_db(rootfs, "/etc/group")

    uid: int | None = None
    gid = 0
    name: str | None = None
    numeric = _parse_id(user_part)
    for row in passwd:
        if len(row) < 4:
            continue
        row_uid = _parse_id(row[2])
        if (numeric is None and row[0] == user_part) or (
            numeric is not None and row_uid == numeric
        ):
            uid = row_uid
            name = row[0]
            gid = _parse_id(row[3]) or 0
            break
    if uid is None:
        if numeric is None:
            raise ExecutorError(
                f"unable to find user {user_part}: no matching entries in passwd file"
            )
        uid = numeric

    supplementary: list[int] = []
    if sep and group_part:
        numeric_gid = _parse_id(group_part)
        found: int | None = None
        for row in groups_db:
            if len(row) < 3:
                continue
            row_gid = _parse_id(row[2])
            if (numeric_gid is None and row[0] == group_part) or (
                numeric_gid is not None and row_gid == numeric_gid
            ):
                found = row_gid
                break
        if found is None:
            if numeric_gid is None:
                raise ExecutorError(
                    f"unable to find group {group_part}: no matching entries in group file"
                )
            found = numeric_gid
        gid = found
    elif name is not None:
        for row in groups_db:
            if len(row) < 4:
                continue
            members = [m for m in row[3].split(",") if m]
            row_gid = _parse_id(row[2])
            if name in members and row_gid is not None and row_gid not in supplementary:
                supplementary.append(row_gid)
    return UserIds(uid, gid, tuple(supplementary))


def hosts_file_content(hostname: str, extra_hosts: Sequence[tuple[str, str]] = ()) -> str:
    """/etc/hosts for a build container (as BuildKit writes it), then one line per
    ``--add-host`` (``address<TAB>name``), as BuildKit appends them."""
    text = f"127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    return text + "".join(f"{address}\t{name}\n" for name, address in extra_hosts)


def system_mounts(
    *, privileged: bool, resolv_conf: Path, hosts: Path, shm_size: int = DEFAULT_SHM_SIZE,
    rootless: bool = False, own_network: bool = False, tty_gid: int | None = 5,
) -> list[MountSpec]:
    """/proc, /dev, /dev/pts, /dev/shm, /dev/mqueue, /sys and the generated /etc files.

    Sandboxed, /dev is ``nodev`` and Docker's default devices are bind mounts of the host's
    (:data:`DEVICE_NODES`), so no node created in the container can be opened.

    ``rootless`` (a user namespace): the runtime binds the default devices itself (it
    cannot make nodes there), and without a network namespace of the container's own
    (``own_network`` False: the host's network) sysfs cannot be mounted, so the host's
    ``/sys`` is bound read-only instead, as rootless Podman does. ``tty_gid`` None (a
    single-id mapping has no group 5) leaves devpts nodes in the caller's group.
    """
    sys_opts = ("nosuid", "noexec", "nodev", "rw" if privileged else "ro")
    dev_opts: tuple[str, ...] = ("nosuid", "strictatime", "mode=755", "size=65536k")
    if not privileged:
        dev_opts = ("nosuid", "nodev", "strictatime", "mode=755", "size=65536k")
    mounts = [
        MountSpec("/proc", "proc", "proc", ("nosuid", "noexec", "nodev")),
        MountSpec("/dev", "tmpfs", "tmpfs", dev_opts),
    ]
    if not privileged and not rootless:
        mounts += [MountSpec(node, "bind", node, ("bind", "nosuid", "noexec"))
                   for node in DEVICE_NODES if Path(node).exists()]
    mounts += [
        MountSpec(
            "/dev/pts",
            "devpts",
            "devpts",
            ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
             *((f"gid={tty_gid}",) if tty_gid is not None else ())),
        ),
        MountSpec(
            "/dev/shm", "tmpfs", "shm",
            ("nosuid", "noexec", "nodev", "mode=1777", f"size={shm_size // 1024}k"),
        ),
        MountSpec("/dev/mqueue", "mqueue", "mqueue", ("nosuid", "noexec", "nodev")),
        MountSpec("/sys", "bind", "/sys", ("rbind", *sys_opts)) if rootless and not own_network
        else MountSpec("/sys", "sysfs", "sysfs", sys_opts),
        MountSpec(
            "/etc/resolv.conf",
            "bind",
            str(resolv_conf),
            ("nosuid", "noexec", "nodev", "rbind", "ro"),
        ),
        MountSpec("/etc/hosts", "bind", str(hosts), ("nosuid", "noexec", "nodev", "rbind", "ro")),
    ]
    return mounts


def _nodev(m: MountSpec) -> MountSpec:
    """``m`` with ``nodev`` (devpts and the default device binds keep their nodes usable)."""
    if m.type == "devpts" or "nodev" in m.options or (
            m.type == "bind" and m.destination in DEVICE_NODES and m.source == m.destination):
        return m
    return MountSpec(m.destination, m.type, m.source, (*m.options, "nodev"))


def _hard_nproc() -> int:
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    return DEFAULT_PIDS_LIMIT if hard == resource.RLIM_INFINITY else int(hard)


def _with_path(env: tuple[str, ...]) -> list[str]:
    out = list(env)
    if not any(e.startswith("PATH=") for e in out):
        out.append(DEFAULT_ENV_PATH)
    return out


def oci_spec(
    rootfs: Path,
    spec: RunSpec,
    ids: UserIds,
    mounts: list[MountSpec],
    *,
    cgroups: bool = False,
    pids_cgroup: bool = False,
    device_barrier: bool = True,
    rootless: bool = False,
    network_path: str | None = None,
    hostname: bool = True,
) -> dict[str, Any]:
    """The OCI runtime ``config.json`` for ``spec`` (``mounts`` = system + extra mounts).

    Sandboxed (the default): Docker's capabilities, Docker's default seccomp profile, its
    masked and read-only paths, and ``nodev`` on every mount but devpts and the default
    device binds (the rootfs itself is made ``nodev`` by the executor). ``cgroups`` says
    whether the runtime applies cgroup resources here: then the device rule and a pids
    limit go there; without, the pids limit becomes RLIMIT_NPROC, unless ``pids_cgroup``
    says the caller puts the container in a pids cgroup of its own (executor/v1cgroups.py). ``device_barrier`` False
    (no device cgroup and a runtime that drops ``nodev`` from the root) makes the seccomp
    profile refuse to create device nodes, the one barrier left. ``rootless``: in a user
    namespace no limit can be raised, so RLIMIT_NPROC is at most the current hard limit.
    ``network_path`` joins that network namespace (slirp4netns or pasta's) instead of the
    host's or a new empty one. ``hostname`` False leaves the host name out (where the
    runtime may not set it).
    """
    privileged = spec.security == "insecure"
    caps = list(privileged_capabilities() if privileged else DEFAULT_CAPABILITIES)
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if network_path is not None:
        namespaces.append({"type": "network", "path": network_path})
    elif spec.network == "none":
        namespaces.append({"type": "network"})
    resources: dict[str, Any] = {"devices": [{"allow": privileged, "access": "rwm"}]}
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        # The runtime creates these nodes in the /dev tmpfs.
        "devices": [],
        "resources": resources,
    }
    if not privileged:
        from dockyard.executor.seccomp import default_profile

        linux["maskedPaths"] = list(_MASKED_PATHS)
        linux["readonlyPaths"] = list(_READONLY_PATHS)
        linux["seccomp"] = default_profile(caps, no_device_nodes=not device_barrier)
        mounts = [_nodev(m) for m in mounts]
    rlimits = {u.name: u.to_oci() for u in spec.ulimits}
    if cgroups:
        resources["pids"] = {"limit": DEFAULT_PIDS_LIMIT}
    elif not privileged and not pids_cgroup and "nproc" not in rlimits:
        limit = DEFAULT_PIDS_LIMIT
        if rootless:
            limit = min(limit, _hard_nproc())
        rlimits["nproc"] = Ulimit("nproc", limit, limit).to_oci()
    process: dict[str, Any] = {
        "terminal": spec.terminal,
        "user": {"uid": ids.uid, "gid": ids.gid, "additionalGids": list(ids.groups)},
        "args": list(spec.args),
        "env": _with_path(spec.env),
        "cwd": spec.cwd or "/",
        "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
        "noNewPrivileges": False,
    }
    if rlimits:
        process["rlimits"] = [rlimits[name] for name in sorted(rlimits)]
    if spec.terminal:
        size = _terminal_size()
        if size is not None:
            # runc sizes the console from its own terminal; crun only from the spec
            process["consoleSize"] = {"height": size[0], "width": size[1]}
    return {
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": str(rootfs), "readonly": False},
        **({"hostname": spec.hostname} if hostname else {}),
        "mounts": [
            {"destination": m.destination, "type": m.type, "source": m.source,
             "options": list(m.options)}
            for m in mounts
        ],
        "linux": linux,
    }


def _terminal_size() -> tuple[int, int] | None:
    """(rows, columns) of the terminal on our standard input, if it is one."""
    try:
        size = os.get_terminal_size(0)
    except OSError:
        return None
    return (size.lines, size.columns) if size.lines and size.columns else None
