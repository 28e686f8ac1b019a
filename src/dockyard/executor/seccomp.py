"""Docker's default seccomp profile, as data, and the OCI ``linux.seccomp`` made from it.

The table mirrors moby's ``profiles/seccomp/default.json`` (checked against it by hand; the
unit tests pin the rules that matter for escapes): the default action is ``SCMP_ACT_ERRNO``
with EPERM, a large allow list, and conditional rules that apply only on some architectures
or only when the container holds a capability. :func:`default_profile` resolves those
conditions the way moby's ``setupSeccomp`` does, for a given capability set and the host's
architecture, and returns the runtime-ready object (names, actions, argument filters).

With Docker's default capability set this blocks, among others: ``mount``/``umount2``,
``unshare``/``setns`` and ``clone`` with namespace flags (new user namespaces included),
``clone3`` (ENOSYS, so libcs fall back to ``clone``), ``keyctl``/``add_key``/
``request_key``, ``init_module``/``finit_module``/``delete_module``, ``kexec_load``/
``kexec_file_load``, ``bpf``, ``perf_event_open``, ``open_by_handle_at``, ``ptrace`` only on
kernels older than 4.8, ``personality`` other than the few safe values, ``socket(AF_VSOCK)``,
``reboot``, ``swapon``, ``pivot_root``, ``userfaultfd``, ``iopl``/``ioperm``, ``acct``,
``settimeofday``/``clock_settime``, ``syslog`` and ``chroot`` without CAP_SYS_CHROOT.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import signal
from dataclasses import dataclass
from typing import Any

__all__ = ["ALLOWED", "RULES", "Rule", "default_profile", "go_arch", "kernel_runs_x32"]

# Allowed unconditionally (moby's first rule).
_ALLOWED_TEXT = """
accept accept4 access adjtimex alarm bind brk capget capset chdir chmod chown chown32
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64
clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2
dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait
epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64
fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchown fchown32 fchownat fcntl
fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstat64
fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_time64 futex_waitv futimesat
getcpu getcwd getdents getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups
getgroups32 getitimer getpeername getpgid getpgrp getpid getppid getpriority getrandom
getresgid getresgid32 getresuid getresuid32 getrlimit get_robust_list getrusage getsid
getsockname getsockopt get_thread_area gettid gettimeofday getuid getuid32 getxattr
inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl io_destroy
io_getevents io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set io_setup io_submit
io_uring_enter io_uring_register io_uring_setup ipc kill landlock_add_rule
landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr link linkat listen
listxattr llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64 madvise membarrier
memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap mmap2
mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend
mq_timedsend_time64 mq_unlink mremap msgctl msgget msgrcv msgsnd msync munlock munlockall munmap
name_to_handle_at nanosleep newfstatat _newselect open openat openat2 pause pidfd_open
pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl
pread64 preadv preadv2 prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64 pwritev
pwritev2 read readahead readlink readlinkat readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg
remap_file_pages removexattr rename renameat renameat2 restart_syscall rmdir rseq rt_sigaction
rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait
rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam
sched_get_priority_max sched_get_priority_min sched_getscheduler sched_rr_get_interval
sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam sched_setscheduler
sched_yield seccomp select semctl semget semop semtimedop semtimedop_time64 send sendfile
sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32
setgroups setgroups32 setitimer setpgid setpriority setregid setregid32 setresgid setresgid32
setresuid setresuid32 setreuid setreuid32 setrlimit set_robust_list setsid setsockopt
set_thread_area set_tid_address setuid setuid32 setxattr shmat shmctl shmdt shmget shutdown
sigaltstack signalfd signalfd4 sigprocmask sigreturn socketcall socketpair splice stat stat64
statfs statfs64 statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time
timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime
timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime
timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat utime
utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write writev
"""
ALLOWED: tuple[str, ...] = tuple(_ALLOWED_TEXT.split())

# Namespace flags of clone(2): CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID |
# NEWNET. Without CAP_SYS_ADMIN, clone is allowed only when none of them is set.
CLONE_NAMESPACE_FLAGS = 0x7E020000
ENOSYS = 38


@dataclass(frozen=True, slots=True)
class Rule:
    """One conditional rule of the profile.

    ``args`` are ``(index, value, op)`` argument filters; ``arches``/``caps``/``min_kernel``
    are moby's ``includes`` (all must hold), ``not_arches``/``not_caps`` its ``excludes`` (the
    rule is dropped if any holds). Architectures are Go's names (amd64, arm64, ...).
    """

    names: tuple[str, ...]
    action: str = "SCMP_ACT_ALLOW"
    args: tuple[tuple[int, int, str], ...] = ()
    arches: tuple[str, ...] = ()
    caps: tuple[str, ...] = ()
    min_kernel: tuple[int, int] | None = None
    not_arches: tuple[str, ...] = ()
    not_caps: tuple[str, ...] = ()
    errno_ret: int | None = None


_SYS_ADMIN_CALLS = (
    "bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
    "lookup_dcookie", "mount", "mount_setattr", "move_mount", "open_tree", "perf_event_open",
    "quotactl", "quotactl_fd", "setdomainname", "sethostname", "setns", "syslog", "umount",
    "umount2", "unshare",
)

RULES: tuple[Rule, ...] = (
    Rule(("process_vm_readv", "process_vm_writev", "ptrace"), min_kernel=(4, 8)),
    Rule(("socket",), args=((0, 40, "SCMP_CMP_NE"),)),  # anything but AF_VSOCK
    # personality: PER_LINUX, UNAME26, PER_LINUX32, PER_LINUX32|UNAME26 and the query value
    *(Rule(("personality",), args=((0, value, "SCMP_CMP_EQ"),))
      for value in (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)),
    Rule(("sync_file_range2", "swapcontext"), arches=("ppc64le",)),
    Rule(("arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint",
          "cacheflush", "set_tls"), arches=("arm", "arm64")),
    Rule(("arch_prctl",), arches=("amd64", "x32")),
    Rule(("modify_ldt",), arches=("amd64", "x32", "x86")),
    Rule(("s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"),
         arches=("s390", "s390x")),
    Rule(("riscv_flush_icache",), arches=("riscv64",)),
    Rule(("open_by_handle_at",), caps=("CAP_DAC_READ_SEARCH",)),
    Rule(_SYS_ADMIN_CALLS, caps=("CAP_SYS_ADMIN",)),
    Rule(("clone",), args=((0, CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ"),),
         not_caps=("CAP_SYS_ADMIN",), not_arches=("s390", "s390x")),
    Rule(("clone",), args=((1, CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ"),),
         arches=("s390", "s390x"), not_caps=("CAP_SYS_ADMIN",)),
    # clone3 passes its flags in memory seccomp cannot read: ENOSYS makes libc use clone
    Rule(("clone3",), action="SCMP_ACT_ERRNO", errno_ret=ENOSYS, not_caps=("CAP_SYS_ADMIN",)),
    Rule(("reboot",), caps=("CAP_SYS_BOOT",)),
    Rule(("chroot",), caps=("CAP_SYS_CHROOT",)),
    Rule(("delete_module", "init_module", "finit_module"), caps=("CAP_SYS_MODULE",)),
    Rule(("acct",), caps=("CAP_SYS_PACCT",)),
    Rule(("kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev",
          "ptrace"), caps=("CAP_SYS_PTRACE",)),
    Rule(("iopl", "ioperm"), caps=("CAP_SYS_RAWIO",)),
    Rule(("settimeofday", "stime", "clock_settime", "clock_settime64"), caps=("CAP_SYS_TIME",)),
    Rule(("vhangup",), caps=("CAP_SYS_TTY_CONFIG",)),
    Rule(("get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"),
         caps=("CAP_SYS_NICE",)),
    Rule(("syslog",), caps=("CAP_SYSLOG",)),
    Rule(("bpf",), caps=("CAP_BPF",)),
    Rule(("perf_event_open",), caps=("CAP_PERFMON",)),
)

# moby's archMap: the native architecture and the ones its syscall ABI also admits.
_ARCH_MAP: dict[str, tuple[str, ...]] = {
    "amd64": ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"),
    "arm64": ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"),
    "mips64": ("SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64N32"),
    "mips64le": ("SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64N32"),
    "s390x": ("SCMP_ARCH_S390X", "SCMP_ARCH_S390"),
    "riscv64": ("SCMP_ARCH_RISCV64",),
    "ppc64le": ("SCMP_ARCH_PPC64LE",),
}

_MACHINE_TO_GO = {
    "x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
    "mips64": "mips64", "s390x": "s390x", "riscv64": "riscv64", "ppc64le": "ppc64le",
    "i386": "386", "i686": "386", "armv7l": "arm", "armv6l": "arm",
}


def go_arch(machine: str | None = None) -> str:
    """The Go architecture name of this host (``uname -m`` ``x86_64`` -> ``amd64``)."""
    m = machine or platform.machine()
    return _MACHINE_TO_GO.get(m, m)


_X32_SYSCALL_BIT = 0x40000000
_X86_64_GETPID = 39


@functools.cache
def kernel_runs_x32() -> bool:
    """Whether this (x86-64) kernel runs x32-ABI system calls at all.

    Asked once per process, in a forked child that makes one x32 ``getpid``: ENOSYS (a kernel
    built without ``CONFIG_X86_X32_ABI``, or booted with ``syscall.x32=n``) or death by
    SIGSYS (a seccomp filter around dockyard without the x32 ABI) means no; a pid means yes.
    Any other outcome counts as yes, which keeps Docker's profile as it is."""
    if go_arch() != "amd64":
        return False
    import ctypes

    call = ctypes.CDLL(None, use_errno=True).syscall  # looked up before the fork
    call.restype = ctypes.c_long
    number = ctypes.c_long(_X32_SYSCALL_BIT | _X86_64_GETPID)
    try:
        pid = os.fork()
    except OSError:
        return True
    if pid == 0:  # pragma: no cover - the child: no Python-level work beyond this call
        os._exit(0 if call(number) >= 0 else 3 if ctypes.get_errno() == 38 else 4)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return os.WTERMSIG(status) != signal.SIGSYS
    return os.WEXITSTATUS(status) != 3  # 3: ENOSYS


def _kernel_version(release: str | None = None) -> tuple[int, int]:
    found = re.match(r"(\d+)\.(\d+)", release or os.uname().release)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def _applies(rule: Rule, arch: str, caps: frozenset[str], kernel: tuple[int, int]) -> bool:
    if rule.arches and arch not in rule.arches:
        return False
    if rule.caps and not all(c in caps for c in rule.caps):
        return False
    if rule.min_kernel is not None and kernel < rule.min_kernel:
        return False
    if rule.not_arches and arch in rule.not_arches:
        return False
    return not (rule.not_caps and any(c in caps for c in rule.not_caps))


_S_IFMT = 0o170000
# File types mknod may still make when device nodes are refused: FIFO, regular, socket.
_NON_DEVICE_TYPES = (0, 0o010000, 0o100000, 0o140000)


def _mknod_without_devices() -> list[dict[str, Any]]:
    rules = []
    for name, index in (("mknod", 1), ("mknodat", 2)):
        for kind in _NON_DEVICE_TYPES:
            rules.append({"names": [name], "action": "SCMP_ACT_ALLOW", "args": [
                {"index": index, "value": _S_IFMT, "valueTwo": kind,
                 "op": "SCMP_CMP_MASKED_EQ"}]})
    return rules


def default_profile(
    capabilities: tuple[str, ...] | list[str],
    *,
    machine: str | None = None,
    kernel_release: str | None = None,
    no_device_nodes: bool = False,
    x32: bool | None = None,
) -> dict[str, Any]:
    """The OCI ``linux.seccomp`` object of Docker's default profile for a container holding
    ``capabilities`` on this host's architecture (or ``machine``).

    On amd64, Docker's profile also admits the x32 ABI. ``x32`` (default: whether this kernel
    runs x32 system calls, :func:`kernel_runs_x32`) keeps it; without it the filter names
    only x86-64 and i386. On a kernel without x32 nothing that could run changes (an x32
    system call fails with ENOSYS either way, and is now killed with SIGSYS instead), and
    runc compiles a third less filter on every RUN: 33 -> 27.5 ms per ``runc run`` here
    (docs/performance.md, section 22).

    ``no_device_nodes`` narrows Docker's profile: ``mknod``/``mknodat`` may make FIFOs,
    sockets and regular files but no character or block device (EPERM). The executor asks
    for it only where neither a device cgroup nor a ``nodev`` root applies."""
    arch = go_arch(machine)
    caps = frozenset(capabilities)
    kernel = _kernel_version(kernel_release)
    allowed = [n for n in ALLOWED if not (no_device_nodes and n in ("mknod", "mknodat"))]
    syscalls: list[dict[str, Any]] = [{"names": allowed, "action": "SCMP_ACT_ALLOW"}]
    if no_device_nodes:
        syscalls += _mknod_without_devices()
    for rule in RULES:
        if not _applies(rule, arch, caps, kernel):
            continue
        entry: dict[str, Any] = {"names": list(rule.names), "action": rule.action}
        if rule.errno_ret is not None:
            entry["errnoRet"] = rule.errno_ret
        if rule.args:
            entry["args"] = [
                {"index": index, "value": value, "valueTwo": 0, "op": op}
                for index, value, op in rule.args
            ]
        syscalls.append(entry)
    profile: dict[str, Any] = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,  # EPERM
        "syscalls": syscalls,
    }
    arches = _ARCH_MAP.get(arch)
    if arches:
        if "SCMP_ARCH_X32" in arches and not (kernel_runs_x32() if x32 is None else x32):
            arches = tuple(a for a in arches if a != "SCMP_ARCH_X32")
        profile["architectures"] = list(arches)
    return profile
