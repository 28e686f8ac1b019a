"""The sandbox a RUN step gets, as data: Docker's seccomp profile resolved for Docker's
capabilities, nodev on every mount, device binds, limits (no root, no runtime)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockyard.errors import UsageError
from dockyard.executor.seccomp import (
    ALLOWED,
    CLONE_NAMESPACE_FLAGS,
    default_profile,
    go_arch,
    kernel_runs_x32,
)
from dockyard.executor.spec import (
    DEFAULT_CAPABILITIES,
    DEFAULT_PIDS_LIMIT,
    DEVICE_NODES,
    MountSpec,
    RunSpec,
    Ulimit,
    UserIds,
    oci_spec,
    parse_ulimit,
    system_mounts,
)


def _allowed_unconditionally(profile: dict[str, Any]) -> set[str]:
    return {name for rule in profile["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW"
            and not rule.get("args") for name in rule["names"]}


def _rules_for(profile: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [rule for rule in profile["syscalls"] if name in rule["names"]]


DOCKER_BLOCKED = (
    "mount", "umount2", "unshare", "setns", "keyctl", "add_key", "request_key", "init_module",
    "finit_module", "delete_module", "kexec_load", "kexec_file_load", "bpf", "open_by_handle_at",
    "perf_event_open", "reboot", "swapon", "swapoff", "pivot_root", "userfaultfd", "iopl",
    "ioperm", "acct", "settimeofday", "clock_settime", "syslog", "lookup_dcookie", "quotactl",
    "fsopen", "fsmount", "move_mount", "open_tree", "kcmp", "process_madvise", "vhangup",
    "nfsservctl", "uselib", "create_module", "get_kernel_syms", "query_module", "sysfs",
    "_sysctl", "ustat", "mbind", "set_mempolicy", "get_mempolicy", "name_to_handle_at_x",
)


def test_docker_profile_blocks_escapes_with_docker_caps() -> None:
    profile = default_profile(DEFAULT_CAPABILITIES, machine="x86_64", kernel_release="6.18.0",
                              x32=True)
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert profile["defaultErrnoRet"] == 1
    assert profile["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    allowed = _allowed_unconditionally(profile)
    for name in DOCKER_BLOCKED:
        assert name not in allowed, name
        assert not [r for r in _rules_for(profile, name) if r["action"] == "SCMP_ACT_ALLOW"]
    # clone: only without namespace flags; clone3: ENOSYS so libc falls back to clone
    (clone,) = _rules_for(profile, "clone")
    assert clone["args"] == [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0,
                              "op": "SCMP_CMP_MASKED_EQ"}]
    (clone3,) = _rules_for(profile, "clone3")
    assert clone3 == {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
    # what builds need stays allowed
    for name in ("execve", "mknod", "chown", "setuid", "ptrace", "arch_prctl", "chroot",
                 "io_uring_setup", "socket", "personality"):
        assert _rules_for(profile, name), name
    # socket: anything but AF_VSOCK
    (sock,) = _rules_for(profile, "socket")
    assert sock["args"] == [{"index": 0, "value": 40, "valueTwo": 0, "op": "SCMP_CMP_NE"}]
    personalities = {r["args"][0]["value"] for r in _rules_for(profile, "personality")}
    assert personalities == {0, 8, 0x20000, 0x20008, 0xFFFFFFFF}


def test_capability_conditions_follow_moby() -> None:
    admin = default_profile([*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"], machine="x86_64")
    allowed = _allowed_unconditionally(admin)
    assert {"mount", "unshare", "setns", "clone", "bpf"} <= allowed
    assert not [r for r in admin["syscalls"] if r.get("errnoRet") == 38]
    no_chroot = default_profile([c for c in DEFAULT_CAPABILITIES if c != "CAP_SYS_CHROOT"])
    assert "chroot" not in _allowed_unconditionally(no_chroot)
    old_kernel = default_profile(DEFAULT_CAPABILITIES, kernel_release="4.4.0-generic")
    assert "ptrace" not in _allowed_unconditionally(old_kernel)
    arm = default_profile(DEFAULT_CAPABILITIES, machine="aarch64")
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert "arch_prctl" not in _allowed_unconditionally(arm)
    assert "set_tls" in _allowed_unconditionally(arm)


def test_no_device_nodes_narrows_mknod_only() -> None:
    base = default_profile(DEFAULT_CAPABILITIES, machine="x86_64")
    narrow = default_profile(DEFAULT_CAPABILITIES, machine="x86_64", no_device_nodes=True)
    assert "mknod" not in _allowed_unconditionally(narrow)
    kinds = {r["args"][0]["valueTwo"] for r in _rules_for(narrow, "mknodat")}
    assert kinds == {0, 0o010000, 0o100000, 0o140000}  # never S_IFCHR / S_IFBLK
    assert _allowed_unconditionally(base) - _allowed_unconditionally(narrow) == {
        "mknod", "mknodat"}


def test_allow_list_has_no_duplicates_and_no_blocked_call() -> None:
    assert len(ALLOWED) == len(set(ALLOWED))
    assert not set(ALLOWED) & set(DOCKER_BLOCKED)


def _spec(**kw: object) -> RunSpec:
    base: dict[str, object] = dict(args=("/bin/true",), env=(), cwd="/", user="",
                                   network="host", mounts=())
    base.update(kw)
    return RunSpec(**base)  # type: ignore[arg-type]


@given(st.lists(st.sampled_from(["bind", "tmpfs", "proc", "mqueue", "sysfs"]), max_size=6),
       st.booleans())
def test_every_mount_but_devpts_and_device_binds_is_nodev(kinds: list[str], rw: bool) -> None:
    extra = [MountSpec(f"/m{i}", kind, "/src" if kind == "bind" else kind,
                       ("rbind", "rw" if rw else "ro") if kind == "bind" else ())
             for i, kind in enumerate(kinds)]
    mounts = system_mounts(privileged=False, resolv_conf=Path("/r"), hosts=Path("/h")) + extra
    spec = oci_spec(Path("/rootfs"), _spec(), UserIds(0, 0, ()), mounts)
    for m in spec["mounts"]:
        exempt = m["type"] == "devpts" or (
            m["type"] == "bind" and m["destination"] in DEVICE_NODES)
        assert exempt or "nodev" in m["options"], m
    dev = next(m for m in spec["mounts"] if m["destination"] == "/dev")
    assert "nodev" in dev["options"]


def test_device_binds_replace_mknod_in_a_nodev_dev() -> None:
    mounts = system_mounts(privileged=False, resolv_conf=Path("/r"), hosts=Path("/h"))
    binds = [m for m in mounts if m.destination in DEVICE_NODES]
    assert binds and all(m.source == m.destination and m.type == "bind" for m in binds)
    privileged = system_mounts(privileged=True, resolv_conf=Path("/r"), hosts=Path("/h"))
    assert not [m for m in privileged if m.destination in DEVICE_NODES]


def test_limits_with_and_without_cgroups() -> None:
    with_cg = oci_spec(Path("/r"), _spec(), UserIds(0, 0, ()), [], cgroups=True)
    assert with_cg["linux"]["resources"]["pids"] == {"limit": DEFAULT_PIDS_LIMIT}
    assert "rlimits" not in with_cg["process"]
    without = oci_spec(Path("/r"), _spec(), UserIds(0, 0, ()), [], cgroups=False)
    assert "pids" not in without["linux"]["resources"]
    assert without["process"]["rlimits"] == [
        {"type": "RLIMIT_NPROC", "soft": DEFAULT_PIDS_LIMIT, "hard": DEFAULT_PIDS_LIMIT}]
    mine = oci_spec(Path("/r"), _spec(ulimits=(Ulimit("nproc", 10, 20),
                                                Ulimit("nofile", 1, 2))),
                    UserIds(0, 0, ()), [])
    assert mine["process"]["rlimits"] == [
        {"type": "RLIMIT_NOFILE", "soft": 1, "hard": 2},
        {"type": "RLIMIT_NPROC", "soft": 10, "hard": 20}]


@pytest.mark.parametrize(("text", "expected"), [
    ("nofile=1024:2048", Ulimit("nofile", 1024, 2048)),
    ("nproc=100", Ulimit("nproc", 100, 100)),
    ("core=-1", Ulimit("core", 2**64 - 1, 2**64 - 1)),
    ("MEMLOCK=unlimited:unlimited", Ulimit("memlock", 2**64 - 1, 2**64 - 1)),
])
def test_parse_ulimit(text: str, expected: Ulimit) -> None:
    assert parse_ulimit(text) == expected


@pytest.mark.parametrize("text", ["nofile", "bogus=1", "nofile=a", "nofile=10:5", "=1"])
def test_parse_ulimit_rejects(text: str) -> None:
    with pytest.raises(UsageError, match="--ulimit"):
        parse_ulimit(text)


def test_shm_size_reaches_dev_shm() -> None:
    mounts = system_mounts(privileged=False, resolv_conf=Path("/r"), hosts=Path("/h"),
                           shm_size=128 << 20)
    shm = next(m for m in mounts if m.destination == "/dev/shm")
    assert "size=131072k" in shm.options


def test_insecure_gets_the_bounding_set_of_dockyard() -> None:
    from dockyard.executor.spec import privileged_capabilities

    full = privileged_capabilities("CapBnd:\t000001ffffffffff\n")
    assert len(full) == 41 and "CAP_SYS_ADMIN" in full
    without_resource = privileged_capabilities("CapBnd:\t000001fffeffffff\n")
    assert set(full) - set(without_resource) == {"CAP_SYS_RESOURCE"}
    assert set(DEFAULT_CAPABILITIES) <= set(privileged_capabilities())


def test_x32_is_admitted_only_where_the_kernel_runs_it() -> None:
    """Docker's amd64 profile admits x86-64, i386 and x32. On a kernel without x32 an x32
    system call cannot succeed anyway, so the filter leaves the ABI out (runc compiles a
    third less per RUN); i386 stays, 32-bit programs still run."""
    kw: dict[str, Any] = {"machine": "x86_64", "kernel_release": "6.18.0"}
    with_x32 = default_profile(DEFAULT_CAPABILITIES, x32=True, **kw)
    without = default_profile(DEFAULT_CAPABILITIES, x32=False, **kw)
    assert without["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]
    assert {k: v for k, v in with_x32.items() if k != "architectures"} == {
        k: v for k, v in without.items() if k != "architectures"}
    assert default_profile(DEFAULT_CAPABILITIES, **kw)["architectures"] == (
        with_x32 if kernel_runs_x32() else without)["architectures"]
    arm = default_profile(DEFAULT_CAPABILITIES, machine="aarch64", x32=False)
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]


@pytest.mark.skipif(go_arch() != "amd64", reason="x32 is an x86-64 ABI")
def test_the_x32_probe_agrees_with_a_real_x32_call() -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os._exit(0 if libc.syscall(ctypes.c_long(0x40000000 | 39)) >= 0 else 3)
    _, status = os.waitpid(pid, 0)
    runs = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert kernel_runs_x32() is runs
