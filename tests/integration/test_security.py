"""The escape suite (issue 11): each attack runs as a RUN step and through ``dockyard run``,
and must fail. Also: the store, bundles and secrets are unreadable for uid 65534; no secret
survives a SIGKILL (after the next ``prune``) or a SIGHUP; ``cp``/``export`` never open a
device node of an image; hostile whiteouts are refused by load, build and run alike."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_build_support import dockyard_cli, fresh_store, template_store, write_tree

from bases import busybox_rootfs_tar, need_runtime
from dockyard.executor.runtime import detect_runtime
from dockyard.snapshot.base import our_mounts
from dockyard.store.db import Store

pytestmark = pytest.mark.skipif(need_runtime() is not None, reason=str(need_runtime()))

LOOP_MARK = b"LOOP-DEVICE-SECRET-0123456789"

# Each attack prints "name=OK" or "name=E<errno>"; blocked ones must fail with EPERM
# (clone3 with ENOSYS, as Docker's profile answers it so libc falls back to clone).
PROBE_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *name, long rc) {
    if (rc < 0) printf("%s=E%d\n", name, errno); else printf("%s=OK\n", name);
}

/* getpid through the other x86 system call ABIs, each in a child (a filter without the ABI
   kills the caller): i386 (int 0x80) and x32 (the x32 bit on the 64-bit number). */
static void abis(void) {
#if defined(__x86_64__)
    const char *names[2] = {"abi-i386", "abi-x32"};
    for (int i = 0; i < 2; i++) {
        fflush(stdout);
        pid_t c = fork();
        if (c == 0) {
            long r;
            if (i == 0) {
                __asm__ volatile ("int $0x80" : "=a"(r) : "a"(20L) : "memory");
                _exit(r >= 0 ? 0 : (int)-r);
            }
            r = syscall(0x40000000L | 39);
            _exit(r >= 0 ? 0 : errno);
        }
        int st = 0;
        waitpid(c, &st, 0);
        if (WIFSIGNALED(st)) printf("%s=EKILLED%d\n", names[i], WTERMSIG(st));
        else if (WEXITSTATUS(st) == 0) printf("%s=OK\n", names[i]);
        else printf("%s=E%d\n", names[i], WEXITSTATUS(st));
    }
#endif
}

int main(int argc, char **argv) {
    char zero[256];
    abis();
    if (argc > 1) return 0;  /* "abi": only the ABIs (safe to run on the host) */
    memset(zero, 0, sizeof zero);
    report("getpid", syscall(SYS_getpid));
    mkdir("/probe-mnt", 0755);
    report("mount", mount("none", "/probe-mnt", "tmpfs", 0, NULL));
    report("unshare-user", unshare(CLONE_NEWUSER));
    report("unshare-mount", unshare(CLONE_NEWNS));
    long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid((pid_t)pid, NULL, 0);
    report("clone-newuser", pid);
    report("clone3", syscall(SYS_clone3, zero, 88));
    report("setns", syscall(SYS_setns, 0, 0));
    report("keyctl", syscall(SYS_keyctl, 0, -3, 0));
    report("add_key", syscall(SYS_add_key, "user", "dockyard", "x", 1, -2));
    report("request_key", syscall(SYS_request_key, "user", "dockyard", NULL, -2));
    report("init_module", syscall(SYS_init_module, zero, 0, ""));
    report("finit_module", syscall(SYS_finit_module, -1, "", 0));
    report("delete_module", syscall(SYS_delete_module, "dockyard", 0));
    report("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
    report("kexec_file_load", syscall(SYS_kexec_file_load, -1, -1, 0, "", 0));
    report("bpf", syscall(SYS_bpf, 0, zero, 72));
    report("open_by_handle_at", syscall(SYS_open_by_handle_at, AT_FDCWD, zero, O_RDONLY));
    report("perf_event_open", syscall(SYS_perf_event_open, zero, 0, -1, -1, 0));
    report("umount2", syscall(SYS_umount2, "/proc", MNT_DETACH));
    report("pivot_root", syscall(SYS_pivot_root, "/", "/"));
    report("swapon", syscall(SYS_swapon, "/nonexistent", 0));
    report("syslog", syscall(SYS_syslog, 3, zero, 16));
    report("personality-bad", syscall(SYS_personality, 0x0040000));
    return 0;
}
"""

BLOCKED = ("mount", "unshare-user", "unshare-mount", "clone-newuser", "setns", "keyctl",
           "add_key", "request_key", "init_module", "finit_module", "delete_module",
           "kexec_load", "kexec_file_load", "bpf", "open_by_handle_at", "perf_event_open",
           "umount2", "pivot_root", "swapon", "syslog", "personality-bad")


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler for the syscall probe")
    out = tmp_path_factory.mktemp("probe")
    (out / "probe.c").write_text(PROBE_C)
    done = subprocess.run([cc, "-static", "-O1", "-o", str(out / "probe"), str(out / "probe.c")],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot build a static syscall probe: {done.stderr[-300:]}")
    return out / "probe"


@pytest.fixture(scope="module")
def loop_device(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """A loop device of the test's own over a file holding LOOP_MARK: (major, minor)."""
    if shutil.which("losetup") is None:
        pytest.skip("losetup not available")
    backing = tmp_path_factory.mktemp("loop") / "disk.img"
    backing.write_bytes(LOOP_MARK + b"\0" * (1 << 20))
    done = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot set up a loop device: {done.stderr.strip()}")
    dev = done.stdout.strip()
    try:
        rdev = os.stat(dev).st_rdev
        yield os.major(rdev), os.minor(rdev)
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def _node_image_tar(dest: Path, loop: tuple[int, int]) -> Path:
    """busybox plus device nodes shipped in the image: the test's loop device, /dev/zero's
    numbers and a FIFO, in /nodes."""
    with tarfile.open(busybox_rootfs_tar()) as src, tarfile.open(dest, "w") as out:
        for member in src:
            out.addfile(member, src.extractfile(member) if member.isreg() else None)
        nodes = tarfile.TarInfo("nodes")
        nodes.type = tarfile.DIRTYPE
        nodes.mode = 0o755
        out.addfile(nodes)
        for name, kind, major, minor in (("nodes/hostdisk", tarfile.BLKTYPE, *loop),
                                         ("nodes/zero", tarfile.CHRTYPE, 1, 5),
                                         ("nodes/fifo", tarfile.FIFOTYPE, 0, 0)):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = 0o666
            info.devmajor, info.devminor = major, minor
            out.addfile(info)
    return dest


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    template_store()
    store = fresh_store(tmp_path / "store")
    yield store
    # when a test failed half-way (a killed build, its container): nothing stays behind
    _cli(store, "prune", check=False)
    for point in our_mounts(tmp_path):
        subprocess.run(["umount", "-l", str(point)], check=False, capture_output=True)


@pytest.fixture
def node_image(root: Path, tmp_path: Path, loop_device: tuple[int, int]) -> str:
    tar = _node_image_tar(tmp_path / "nodes.tar", loop_device)
    _cli(root, "import", str(tar), "nodes:latest")
    return "nodes:latest"


def _cli(root: Path, *args: str, env: dict[str, str] | None = None,
         check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*dockyard_cli(), "--root", str(root), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"dockyard {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done


def _runtimes(root: Path) -> list[str]:
    """The default runtime, and crun forced where it works (its weaker host mode included)."""
    names = ["default"]
    try:
        detect_runtime("crun", cache_dir=root / "run")
        names.append("crun")
    except Exception:
        pass
    return names


def _env(runtime: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DOCKYARD_RUNTIME", None)
    if runtime != "default":
        env["DOCKYARD_RUNTIME"] = runtime
    return env


def _probe_results(output: str) -> dict[str, str]:
    found = {}
    for line in output.splitlines():
        word = line.rsplit(" ", 1)[-1]
        name, sep, value = word.partition("=")
        if sep and (value == "OK" or value.startswith("E")) and name:
            found[name] = value
    return found


def test_blocked_syscalls_fail_in_run_steps_and_dockyard_run(
        root: Path, tmp_path: Path, probe: Path) -> None:
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox:latest\nCOPY probe /probe\nRUN /probe\n"
                      "RUN --security=insecure /probe\n",
    })
    shutil.copy(probe, ctx / "probe")
    ctx_plain = write_tree(tmp_path / "ctx-plain", {
        "Dockerfile": "FROM busybox:latest\nCOPY probe /probe\nRUN /probe\n"})
    shutil.copy(probe, ctx_plain / "probe")
    host_abis = _probe_results(subprocess.run([str(probe), "abi"], capture_output=True,
                                              text=True, check=True).stdout)
    for runtime in _runtimes(root):
        env = _env(runtime)
        # without --allow security.insecure the insecure step is refused
        refused = _cli(root, "build", "--no-cache", "--progress", "plain", str(ctx), env=env,
                       check=False)
        assert refused.returncode != 0 and "security.insecure" in refused.stderr
        built = _cli(root, "build", "--no-cache", "--progress", "plain", "-t", "probe",
                     str(ctx_plain), env=env)
        in_run_step = _probe_results(built.stderr)
        ran = _cli(root, "run", "probe", "/probe", env=env)
        in_dockyard_run = _probe_results(ran.stdout)
        for results, where in ((in_run_step, "RUN"), (in_dockyard_run, "dockyard run")):
            assert results.get("getpid") == "OK", (where, runtime, results)
            _check_abis(results, host_abis, where, runtime)
            for name in BLOCKED:
                assert results.get(name) == "E1", (where, runtime, name, results)
            assert results.get("clone3") == "E38", (where, runtime, results)
        # the insecure step lifts the sandbox, as BuildKit's does
        lifted = _cli(root, "build", "--no-cache", "--progress", "plain",
                      "--allow", "security.insecure", str(ctx), env=env)
        insecure = _probe_results(lifted.stderr.split("--security=insecure", 1)[-1])
        assert insecure.get("mount") == "OK", (runtime, insecure)
        assert insecure.get("unshare-user") == "OK", (runtime, insecure)


def _check_abis(results: dict[str, str], host: dict[str, str], where: str,
                runtime: str) -> None:
    """The other x86 ABIs in a container, against the host: i386 programs run wherever the
    host runs them (Docker's profile admits SCMP_ARCH_X86); x32 is admitted where the kernel
    runs x32 system calls, and where it does not (ENOSYS on the host) the filter leaves the
    ABI out, so the call is killed instead of failing (docs/security.md)."""
    if not host:
        return  # not an x86-64 host
    assert results.get("abi-i386") == host["abi-i386"], (where, runtime, results, host)
    if host["abi-x32"] == "OK":
        assert results.get("abi-x32") == "OK", (where, runtime, results)
    else:
        assert host["abi-x32"] == "E38", host
        assert results.get("abi-x32") in ("E38", "EKILLED31"), (where, runtime, results)


DEVICE_ATTACKS = """\
mknod /tmp/l1 b {major} {minor} 2>/dev/null; head -c 29 /tmp/l1 2>/dev/null; echo "|mknod-read"
(mknod /dev/l2 b {major} {minor} && head -c 29 /dev/l2) 2>/dev/null; echo "|dev-read"
head -c 29 /nodes/hostdisk 2>/dev/null; echo "|shipped-read"
(printf x > /nodes/hostdisk) 2>/dev/null && echo SHIPPED-WRITTEN
head -c 1 /proc/kcore >/dev/null 2>&1 && echo KCORE-READ || echo kcore-refused
if [ -e /proc/sysrq-trigger ]; then (echo h > /proc/sysrq-trigger) 2>/dev/null \\
  && echo SYSRQ-WRITTEN || echo sysrq-refused; else echo sysrq-absent; fi
echo done-attacks
"""


def _tagged(output: str, tag: str) -> str:
    """What the attack printed before ``|tag`` (the bytes it read, if any)."""
    for line in output.splitlines():
        if line.endswith("|" + tag):
            return line
    raise AssertionError(f"no {tag} line in:\n{output}")


def test_device_nodes_cannot_be_opened(root: Path, tmp_path: Path, node_image: str,
                                       loop_device: tuple[int, int]) -> None:
    major, minor = loop_device
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": f"FROM {node_image}\nCOPY attack.sh /attack.sh\nRUN sh /attack.sh\n",
        "attack.sh": DEVICE_ATTACKS.format(major=major, minor=minor),
    })
    mark = LOOP_MARK.decode()
    for runtime in _runtimes(root):
        env = _env(runtime)
        info = detect_runtime(None if runtime == "default" else runtime,
                              cache_dir=root / "run")
        built = _cli(root, "build", "--no-cache", "--progress", "plain", "-t", "attack",
                     str(ctx), env=env)
        ran = _cli(root, "run", "attack", "sh", "/attack.sh", env=env)
        for output, where in ((built.stderr, "RUN"), (ran.stdout, "dockyard run")):
            assert "done-attacks" in output, (where, output)
            assert mark not in _tagged(output, "mknod-read"), (where, runtime)
            assert mark not in _tagged(output, "dev-read"), (where, runtime)
            assert "KCORE-READ" not in output and "SYSRQ-WRITTEN" not in output
            if info.device_barrier:
                # a node shipped in the image cannot be opened either
                assert mark not in _tagged(output, "shipped-read"), (where, runtime)
                assert "SHIPPED-WRITTEN" not in output, (where, runtime)


# printed as two strings, so the progress's echo of the command never matches
ROOT_FLAGS = "awk '$5 == \"/\" {print \"root\" \"-opts=\" $6}' /proc/self/mountinfo"


def _root_opts(output: str) -> list[set[str]]:
    return [set(line.split("root-opts=", 1)[1].split()[0].split(","))
            for line in output.splitlines() if "root-opts=" in line]


@pytest.mark.parametrize("snapshotter", ["overlay", "native"])
def test_the_root_is_nodev_on_every_snapshotter(root: Path, tmp_path: Path,
                                                snapshotter: str) -> None:
    """The step's own snapshot mount (or, for ``dockyard run``, the executor's view) is
    ``nodev`` as the container sees ``/``; ``RUN --security=insecure`` alone goes without.
    runc keeps the flag through its bind of the root (crun drops it: docs/security.md)."""
    if shutil.which("runc") is None:
        pytest.skip("runc not installed")
    env = _env("runc")
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": f"FROM busybox:latest\nRUN {ROOT_FLAGS}\n"
                      f"RUN --security=insecure {ROOT_FLAGS}\n"
                      "RUN echo x > /x\n",  # a step with its own upper dir, for run below
    })
    built = _cli(root, "build", "--no-cache", "--progress", "plain", "--snapshotter",
                 snapshotter, "--allow", "security.insecure", "-t", "flags", str(ctx), env=env)
    sandboxed, insecure = _root_opts(built.stderr)
    assert "nodev" in sandboxed, (snapshotter, sandboxed)
    assert "nodev" not in insecure, (snapshotter, insecure)
    ran = _cli(root, "run", "--snapshotter", snapshotter, "flags", "sh", "-c", ROOT_FLAGS,
               env=env)
    (opts,) = _root_opts(ran.stdout)
    assert "nodev" in opts, (snapshotter, opts)
    assert not our_mounts(root), "a mount stayed behind"


def _own_cgroups(cid: str) -> list[Path]:
    from dockyard.executor import v1cgroups

    found = v1cgroups.hierarchies()
    return [found[n] / "dockyard" / cid for n in ("devices", "pids")]


def test_crun_on_a_hybrid_host_runs_in_cgroups_dockyard_made(root: Path) -> None:
    """Where crun cannot manage cgroups (a hybrid host), dockyard makes the container's v1
    device and pids cgroups itself: runc's device rules and pids.max hold while it runs,
    the cgroups go when it ends, and a killed run's go with the next build's sweep."""
    from dockyard.executor import v1cgroups
    from dockyard.executor.runtime import cgroup_mode

    if cgroup_mode() != "hybrid" or shutil.which("crun") is None:
        pytest.skip("needs a hybrid cgroup host and crun")
    rt = detect_runtime("crun", cache_dir=root / "run")
    assert rt.own_cgroups == v1cgroups.available()
    if not rt.own_cgroups:
        pytest.skip("the v1 device and pids hierarchies are not writable here")
    env = _env("crun")
    for killed in (False, True):
        # after "ready", on a line from stdin: start 12 background sleeps (echo is a shell
        # builtin: no fork), then wait
        proc = subprocess.Popen(
            [*dockyard_cli(), "--root", str(root), "run", "-i", "--rm", "busybox", "sh", "-c",
             "grep -E ':(devices|pids):' /proc/self/cgroup; echo ready; read go; "
             "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 20 & done; echo loop-done; "
             "wait"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
        assert proc.stdout is not None and proc.stdin is not None
        paths: dict[str, str] = {}
        for raw in proc.stdout:
            line = raw.decode().strip()
            if line == "ready":
                break
            _, controller, path = line.split(":", 2)
            paths[controller] = path
        cid = paths["devices"].rsplit("/", 1)[-1]
        assert paths == {"devices": f"/dockyard/{cid}", "pids": f"/dockyard/{cid}"}, paths
        devices, pids = _own_cgroups(cid)
        assert (devices / "devices.list").read_text().split("\n")[:-1] == list(
            v1cgroups.DEVICE_RULES)
        assert (pids / "pids.max").read_text().strip() == "32768"
        # the container's processes count against its pids cgroup: lowered to 6 from here,
        # the shell cannot start all of its 12 sleeps
        (pids / "pids.max").write_text("6")
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        said = []
        for raw in proc.stdout:
            said.append(raw)
            if raw.strip() == b"loop-done":
                break
        assert any(b"can't fork" in line for line in said), said
        if killed:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
            other = write_tree(root.parent / "ctx-sweep", {
                "Dockerfile": "FROM busybox:latest\nRUN true\n"})
            _cli(root, "build", "--progress", "plain", str(other), env=env)
        else:
            os.kill(proc.pid, signal.SIGINT)  # Ctrl-C: dockyard stops the container
            proc.wait(60)
        assert not devices.exists() and not pids.exists(), (killed, cid)


def _as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           *argv], capture_output=True, text=True, check=False)


def test_uid_65534_reads_nothing(root: Path, tmp_path: Path) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv not available")
    secret = f"s3cret-{os.urandom(6).hex()}"
    (tmp_path / "secret.txt").write_text(secret)
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox:latest\nRUN cp /bin/busybox /suid && chmod 4755 /suid\n"
                      "RUN --mount=type=secret,id=tok --mount=type=secret,id=tok,env=TOK "
                      "echo started && sleep 30\n",
    })
    proc = subprocess.Popen(
        [*dockyard_cli(), "--root", str(root), "build", "--progress", "plain",
         "--secret", f"id=tok,src={tmp_path / 'secret.txt'}", str(ctx)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    assert proc.stdout is not None
    try:
        deadline = time.monotonic() + 120
        for raw in proc.stdout:
            if b"started" in raw and b"RUN" not in raw:
                break
            assert time.monotonic() < deadline, "the secret step never started"
        # while the secret step runs: the store, its bundle and its secrets directory
        bundles = list((root / "run" / "bundles").glob("*/*/config.json"))
        assert bundles, "a running step has a bundle"
        owners = list((root / "run" / "owners").iterdir())
        secret_dirs = [Path(p.read_text()) for p in owners if p.read_text()]
        assert secret_dirs and all(d.is_dir() for d in secret_dirs)
        assert oct(os.stat(root).st_mode & 0o777) == oct(0o700)
        for config in bundles:
            assert os.stat(config).st_mode & 0o777 == 0o600
            assert os.stat(config.parent).st_mode & 0o777 == 0o700
        for d in secret_dirs:
            assert os.stat(d).st_mode & 0o777 == 0o700
        targets = [root, *bundles, *secret_dirs, *(p for d in secret_dirs for p in d.iterdir())]
        for target in targets:
            listing = _as_nobody("ls", "-la", str(target))
            reading = _as_nobody("cat", str(target))
            assert secret not in listing.stdout + reading.stdout, target
            assert listing.returncode != 0, (target, listing.stdout)
            assert reading.returncode != 0, (target, reading.stdout)
        found = _as_nobody("find", str(root), "-perm", "-4000")
        assert "/suid" not in found.stdout
        grep = _as_nobody("grep", "-r", "-l", secret, str(root), "/dev/shm", "/run")
        assert grep.stdout.strip() == "", grep.stdout
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def _grep_leftovers(value: str, *places: Path) -> str:
    done = subprocess.run(["grep", "-r", "-l", "-a", "-D", "skip", "-s", value,
                           *map(str, places)], capture_output=True, text=True, check=False)
    return done.stdout.strip()


# a sleep no other test runs (xdist runs the two at once), whose survival ps shows
@pytest.mark.parametrize(("how", "sleep"), [("SIGKILL", "sleep 33"), ("SIGHUP", "sleep 35")])
def test_no_secret_left_after_a_killed_secret_step(root: Path, tmp_path: Path,
                                                   how: str, sleep: str) -> None:
    secret = f"s3cret-{os.urandom(8).hex()}"
    (tmp_path / "secret.txt").write_text(secret)
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox:latest\n"
                      "RUN --mount=type=secret,id=tok --mount=type=secret,id=tok,env=TOK "
                      f"echo started && {sleep}\n",
    })
    proc = subprocess.Popen(
        [*dockyard_cli(), "--root", str(root), "build", "--progress", "plain",
         "--secret", f"id=tok,src={tmp_path / 'secret.txt'}", str(ctx)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    for raw in proc.stdout:
        if b"started" in raw and b"RUN" not in raw:
            break
        assert time.monotonic() < deadline, "the secret step never started"
    places = (root, Path("/dev/shm"), Path("/run"))
    assert _grep_leftovers(secret, root / "run", Path("/dev/shm")), \
        "while the step runs its secret is somewhere (else this test proves nothing)"
    os.kill(proc.pid, signal.SIGKILL if how == "SIGKILL" else signal.SIGHUP)
    proc.wait(timeout=60)
    if how == "SIGKILL":
        # nothing could clean up: the container may still run; the next prune sweeps it
        _cli(root, "prune")
    else:
        assert proc.returncode != 0
    time.sleep(0.3)
    assert _grep_leftovers(secret, *places) == ""
    assert not list((root / "run" / "bundles").glob("*/*"))
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert sleep not in ps
    assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if str(root) in line]


@pytest.mark.parametrize("store_use", ["idle", "busy"])
def test_next_build_sweeps_what_a_sigkill_left(root: Path, tmp_path: Path,
                                               store_use: str) -> None:
    """On an idle store the next build removes every leftover; while another process uses
    the store (here: holds its build lock), those of the owners that are gone."""
    secret = f"s3cret-{os.urandom(8).hex()}"
    (tmp_path / "secret.txt").write_text(secret)
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox:latest\n"
                      "RUN --mount=type=secret,id=tok,env=TOK echo started && sleep 34\n",
    })
    proc = subprocess.Popen(
        [*dockyard_cli(), "--root", str(root), "build", "--progress", "plain",
         "--secret", f"id=tok,src={tmp_path / 'secret.txt'}", str(ctx)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    assert proc.stdout is not None
    for raw in proc.stdout:
        if b"started" in raw and b"RUN" not in raw:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert _grep_leftovers(secret, root / "run"), "the env secret sat in config.json"
    other = write_tree(tmp_path / "ctx2", {"Dockerfile": "FROM busybox:latest\nRUN true\n"})
    with contextlib.ExitStack() as busy:
        if store_use == "busy":
            busy.enter_context(Store.open(root).build_lock())
        _cli(root, "build", "--progress", "plain", str(other))
    assert _grep_leftovers(secret, root, Path("/dev/shm")) == ""
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "sleep 34" not in ps
    # the killed build's mounts (its snapshot and the container's root view) are gone too
    assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if str(root) in line]


def test_cp_and_export_never_open_device_nodes(root: Path, tmp_path: Path,
                                               node_image: str) -> None:
    dest = tmp_path / "out"
    started = time.monotonic()
    _cli(root, "cp", f"{node_image}:/nodes", str(dest), timeout=60)
    assert time.monotonic() - started < 60  # a c 1:5 read would fill the disk
    import stat as st

    modes = {p.name: os.lstat(p).st_mode for p in dest.iterdir()}
    assert st.S_ISBLK(modes["hostdisk"]) and st.S_ISCHR(modes["zero"])
    assert st.S_ISFIFO(modes["fifo"])
    single = tmp_path / "single"
    _cli(root, "cp", f"{node_image}:/nodes/zero", str(single), timeout=60)
    assert st.S_ISCHR(os.lstat(single).st_mode)
    exported = _cli(root, "export", node_image, "-o", str(tmp_path / "fs.tar"), timeout=120)
    assert exported.returncode == 0
    with tarfile.open(tmp_path / "fs.tar") as tf:
        members = {m.name: m for m in tf.getmembers() if m.name.startswith("nodes/")}
    assert members["nodes/hostdisk"].isblk() and members["nodes/hostdisk"].size == 0
    assert members["nodes/zero"].ischr() and members["nodes/fifo"].isfifo()
    tar_out = subprocess.run([*dockyard_cli(), "--root", str(root), "cp",
                              f"{node_image}:/nodes", "-"], capture_output=True, timeout=60,
                             check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar_out)) as tf:
        kinds = {m.name: m.type for m in tf.getmembers()}
    assert kinds["nodes/hostdisk"] == tarfile.BLKTYPE
    assert LOOP_MARK not in tar_out


def _layer(*members: tuple[str, bytes, str]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, link in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = link
            info.mode = 0o755
            tf.addfile(info)
    return out.getvalue()


def _hostile_archive(dest: Path) -> Path:
    """A docker-load archive: busybox, then ``s -> /etc``, then ``s/.wh.passwd``."""
    import hashlib
    import json

    layers = [busybox_rootfs_tar().read_bytes(),
              _layer(("s", tarfile.SYMTYPE, "/etc")),
              _layer(("s/.wh.passwd", tarfile.REGTYPE, ""))]
    diff_ids = ["sha256:" + hashlib.sha256(data).hexdigest() for data in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    with tarfile.open(dest, "w") as out:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))

        names = []
        for data, diff_id in zip(layers, diff_ids, strict=True):
            names.append(f"{diff_id[7:]}/layer.tar")
            add(names[-1], data)
        add(config_name, config)
        add("manifest.json", json.dumps([{"Config": config_name, "RepoTags": ["hostile:1"],
                                          "Layers": names}]).encode())
    return dest


def test_hostile_whiteouts_are_refused_by_load_build_and_run(
        root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _hostile_archive(tmp_path / "hostile.tar")
    loaded = _cli(root, "load", "-i", str(archive), check=False)
    assert loaded.returncode != 0
    assert "through the symlink 's'" in loaded.stderr, loaded.stderr
    # An image can reach the store without load's scan (a registry pull): build, run,
    # export and cp refuse it when they unpack it, with the same message.
    from dockyard.exporter import load as load_module
    from dockyard.store.db import Store

    monkeypatch.setattr(load_module, "_check_markers", lambda store, diff_ids: None)
    store = Store.open(root)
    try:
        load_module.load_archive(store, archive)
    finally:
        store.close()
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM hostile:1\nRUN cat /etc/passwd\n"})
    for args in (("build", "--progress", "plain", str(ctx)), ("run", "hostile:1", "true"),
                 ("export", "hostile:1", "-o", str(tmp_path / "x.tar")),
                 ("cp", "hostile:1:/etc/passwd", str(tmp_path / "passwd"))):
        done = _cli(root, *args, check=False)
        assert done.returncode != 0, args
        assert "through the symlink 's'" in done.stderr, (args, done.stderr)
