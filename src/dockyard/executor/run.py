"""Running one process in a root filesystem with crun or runc.

Each run gets a bundle ``<state>/bundles/<owner>/<id>/`` (0700: config.json 0600,
resolv.conf, hosts, and, for a root not already mounted ``nodev``, ``rootfs``: a ``nodev``
bind mount of it) and a container id; the runtime keeps its own state under
``<state>/runtime/<name>``. Whatever happens (exit, error, Ctrl-C, SIGTERM or SIGHUP turned
into an exception, :meth:`Executor.cancel`), the container is killed and deleted and the
bundle removed before :meth:`Executor.run` returns or raises.

``<owner>`` names one process: ``<state>/owners/<owner>`` is a file that process keeps
locked (``flock``) while it lives, and that names its secrets directory (on tmpfs). A
process killed with SIGKILL cannot clean up; :func:`sweep_stale` (run by the next build and
by ``prune``) finds owner files nobody holds and removes their containers, mounts, bundles
and secrets. Mount points the runtime had to create in the rootfs (``/etc/resolv.conf``
in an image without one, ``/run/secrets``...) are removed again when they are still empty,
so they never reach the layer.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import stat
import subprocess
import threading
import time
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dockyard.errors import ExecutorError
from dockyard.executor.runtime import RuntimeInfo
from dockyard.executor.spec import (
    RunSpec,
    UserIds,
    hosts_file_content,
    oci_spec,
    resolve_in_root,
    resolve_user,
    system_mounts,
)

__all__ = [
    "Executor",
    "MountStub",
    "find_mount_stubs",
    "remove_mount_stubs",
    "sigterm_raises",
    "sweep_stale",
]

_SHELLS = ("/bin/sh", "/bin/bash", "/bin/ash", "/usr/bin/sh", "/usr/bin/bash")


@dataclass(frozen=True, slots=True)
class MountStub:
    """A path (relative to the rootfs) missing before a run that a mount point may create,
    with the times of the nearest existing ancestor directory to restore afterwards."""

    path: str
    ancestor: str
    ancestor_atime_ns: int
    ancestor_mtime_ns: int


def find_mount_stubs(rootfs: Path, destinations: list[str]) -> list[MountStub]:
    """The paths that mounting at ``destinations`` would create in ``rootfs``.

    Destinations below another destination (``/dev/pts`` below ``/dev``) live on that mount,
    not in the rootfs, and are skipped. Every missing component is listed (``run``,
    ``run/secrets``, ``run/secrets/x``), shallowest first.
    """
    stubs: list[MountStub] = []
    seen: set[str] = set()
    taken: list[str] = []
    for dest in destinations:
        norm = "/" + "/".join(p for p in dest.split("/") if p not in ("", "."))
        if any(norm == t or norm.startswith(t.rstrip("/") + "/") for t in taken):
            continue
        taken.append(norm)
        parts = [p for p in norm.split("/") if p]
        anchor: MountStub | None = None
        for i in range(len(parts)):
            rel = "/".join(parts[: i + 1])
            target = resolve_in_root(rootfs, rel)
            stub_path = os.path.relpath(target, rootfs)
            if stub_path in seen:
                continue
            if os.path.lexists(target):
                anchor = None
                continue
            if anchor is None:
                anc = target.parent
                while not os.path.isdir(anc) and anc != rootfs:
                    anc = anc.parent  # a stub of an earlier destination
                try:
                    st = os.stat(anc)
                except OSError:
                    break
                anchor = MountStub("", os.path.relpath(anc, rootfs), st.st_atime_ns,
                                   st.st_mtime_ns)
            seen.add(stub_path)
            stubs.append(replace(anchor, path=stub_path))
    return stubs


def remove_mount_stubs(rootfs: Path, stubs: list[MountStub]) -> None:
    """Remove stubs that are still empty files or empty directories, deepest first, and put
    back the times of the directories they were created in."""
    touched: dict[str, tuple[int, int]] = {}
    for stub in sorted(stubs, key=lambda s: s.path.count("/"), reverse=True):
        path = rootfs / stub.path
        try:
            st = os.lstat(path)
        except OSError:
            continue
        try:
            if stat.S_ISDIR(st.st_mode):
                os.rmdir(path)
            elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
                os.unlink(path)
            else:
                continue
        except OSError:
            continue  # not empty: the step put something there, so it stays
        touched[stub.ancestor] = (stub.ancestor_atime_ns, stub.ancestor_mtime_ns)
    for anc, times in touched.items():
        with contextlib.suppress(OSError):
            os.utime(rootfs / anc if anc != "." else rootfs, ns=times, follow_symlinks=False)


def _host_resolv_conf() -> str:
    for candidate in ("/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"):
        try:
            text = Path(candidate).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        # systemd-resolved's stub listens on the host's loopback only.
        if "127.0.0.53" in text and candidate == "/etc/resolv.conf":
            continue
        return text
    return "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"


def _is_executable_in(rootfs: Path, path: str) -> bool:
    try:
        st = os.stat(resolve_in_root(rootfs, path))
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode)


# Linux's execve(2) limits: one argument or environment string (MAX_ARG_STRLEN, 32 pages
# with its NUL), and all of them with their pointers (a quarter of the stack limit; 2 MiB
# with the usual 8 MiB stack).
_MAX_ARG_STRLEN = 32 * 4096
_MAX_ARGS_TOTAL = 2 << 20


def _check_exec_size(spec: RunSpec) -> None:
    """E2BIG said in plain words before the runtime fails with its raw JSON log line."""
    total = 0
    for kind, items in (("argument", spec.args), ("environment variable", spec.env)):
        for item in items:
            size = len(item.encode("utf-8", "surrogateescape")) + 1
            total += size + 8
            if size > _MAX_ARG_STRLEN:
                name = item.split("=", 1)[0] if kind != "argument" else item[:40] + "..."
                raise ExecutorError(
                    f"the {kind} {name} is {size:,} bytes: Linux allows at most "
                    f"{_MAX_ARG_STRLEN:,} bytes for one (E2BIG, argument list too long)")
    if total > _MAX_ARGS_TOTAL:
        raise ExecutorError(
            f"the command and its environment take {total:,} bytes: more than the "
            f"{_MAX_ARGS_TOTAL:,} Linux allows (E2BIG, argument list too long)")


def _check_command(rootfs: Path, spec: RunSpec) -> None:
    if not spec.args:
        raise ExecutorError("no command given")
    _check_exec_size(spec)
    prog = spec.args[0]
    if prog.startswith("/"):
        if _is_executable_in(rootfs, prog):
            return
        if any(m.destination == prog for m in spec.mounts):
            return  # a file mounted there (a #! heredoc at /dev/pipes/<name>)
        if prog in _SHELLS:
            raise ExecutorError(
                f"{prog} not found in the image, so the shell form cannot run",
                hint='use the exec form, e.g. RUN ["/path/to/program", "arg"], or set SHELL',
            )
        raise ExecutorError(f"{prog}: no such file or directory in the image")
    if "/" in prog:
        return  # relative to the working directory; the runtime decides
    path_value = next(
        (e[5:] for e in reversed(spec.env) if e.startswith("PATH=")),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    )
    for d in path_value.split(":"):
        if d and _is_executable_in(rootfs, f"{d.rstrip('/')}/{prog}"):
            return
    raise ExecutorError(f'exec: "{prog}": executable file not found in $PATH')


def _ensure_cwd(rootfs: Path, cwd: str, ids: UserIds) -> None:
    """Create a missing working directory owned by the user, as BuildKit does."""
    parts = [p for p in cwd.split("/") if p not in ("", ".")]
    for i in range(len(parts)):
        target = resolve_in_root(rootfs, "/".join(parts[: i + 1]))
        if os.path.lexists(target):
            continue
        os.mkdir(target, 0o755)
        os.chmod(target, 0o755)  # not the caller's umask
        os.chown(target, ids.uid, ids.gid)


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread (so the
    executor and ``mounted()`` clean up as for Ctrl-C). Only usable from the main thread."""

    def handler(signum: int, frame: types.FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    old_hup = signal.signal(signal.SIGHUP, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGHUP, old_hup)


def tmpfs_dirs() -> list[Path]:
    """Directories on tmpfs where secrets may live, best first (/dev/shm, /run)."""
    found = []
    points = _tmpfs_mount_points()
    for candidate in ("/dev/shm", "/run"):
        if candidate in points and os.path.isdir(candidate) and os.access(candidate, os.W_OK):
            found.append(Path(candidate))
    return found


def _tmpfs_mount_points() -> set[str]:
    points: set[str] = set()
    with contextlib.suppress(OSError), open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split(" ", 1)[0] == "tmpfs":
                points.add(left.split(" ")[4])
    return points


class _Owner:
    """This process's claim on its bundles and secrets: a locked file under ``owners/``."""

    def __init__(self, state_dir: Path) -> None:
        self.token = f"{os.getpid()}-{os.urandom(4).hex()}"
        owners = state_dir / "owners"
        owners.mkdir(parents=True, exist_ok=True)
        os.chmod(owners, 0o700)
        self.path = owners / self.token
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self.bundles = state_dir / "bundles" / self.token
        self._secrets: Path | None = None
        self._state_dir = state_dir

    def secrets_dir(self) -> Path:
        """A fresh 0700 directory on tmpfs for this process's secret files."""
        if self._secrets is None:
            bases = tmpfs_dirs()
            if bases:
                import tempfile

                path = Path(tempfile.mkdtemp(prefix="dockyard-secrets-", dir=bases[0]))
            else:
                path = _mount_private_tmpfs(self._state_dir / "secrets" / self.token)
            os.write(self._fd, str(path).encode())
            os.fsync(self._fd)
            self._secrets = path
        return self._secrets

    def release(self) -> None:
        _remove_owned(self.bundles, self._secrets)
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            os.close(self._fd)


def _mount_private_tmpfs(path: Path) -> Path:
    """A 0700 tmpfs mounted at ``path`` (for hosts without a tmpfs /dev/shm or /run)."""
    from dockyard.snapshot.base import Mount, mount_one

    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    try:
        mount_one(Mount("tmpfs", "tmpfs", ("nosuid", "nodev", "noexec", "mode=0700",
                                           "size=16m")), path)
    except Exception as err:
        with contextlib.suppress(OSError):
            path.rmdir()
        raise ExecutorError(f"no tmpfs for secrets: {err}") from None
    return path


def _remove_owned(bundles: Path, secrets: Path | None, mnt: Path | None = None) -> None:
    """Unmount and remove an owner's bundles directory and its secrets directory. With
    ``mnt`` (a store's mount directory), the snapshots the owner's containers ran on are
    unmounted too (the owner, gone, was their only user): the mounts right below ``mnt``
    named as the root by a bundle's config.json, and the overlay mounts below ``mnt`` with
    the device of a bundle's root view."""
    from dockyard.snapshot.base import our_mounts, unmount

    devices: set[str] = set()
    roots: set[Path] = set()
    if mnt is not None:
        roots = {r for r in map(_bundle_root, _children(bundles)) if r is not None}
    for path in (bundles, secrets):
        if path is None or not path.exists():
            continue
        points = our_mounts(path)
        devices |= {dev for point, dev, fstype in _mount_table() if fstype == "overlay"
                    and Path(point) in points}
        for point in points:
            with contextlib.suppress(Exception):
                unmount(point)
        shutil.rmtree(path, ignore_errors=True)
    if mnt is not None and (devices or roots):
        for where, dev, fstype in _mount_table():
            if Path(where).parent == mnt and (
                    Path(where) in roots or (fstype == "overlay" and dev in devices)):
                with contextlib.suppress(Exception):
                    unmount(Path(where))
                with contextlib.suppress(OSError):
                    os.rmdir(where)


def _children(path: Path) -> list[Path]:
    return [path / name for name in _listdir(path)]


def _bundle_root(bundle: Path) -> Path | None:
    """The root path a bundle's config.json gives the runtime (a snapshot mounted below the
    store's ``mnt``, or the bundle's own root view), if it names one."""
    try:
        with open(bundle / "config.json", "rb") as f:
            root = json.loads(f.read()).get("root", {}).get("path")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(root) if isinstance(root, str) and os.path.isabs(root) else None


def _mount_table() -> list[tuple[str, str, str]]:
    """(mount point, major:minor, fs type) of this process's mounts."""
    from dockyard.snapshot.base import _unescape_mountinfo

    table = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo", encoding="utf-8",
                                            errors="surrogateescape") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split(" ")
            if len(fields) >= 5:
                table.append((_unescape_mountinfo(fields[4]), fields[2],
                              right.split(" ", 1)[0]))
    return table


class Executor:
    """Runs processes in root filesystems with one OCI runtime; safe to share across threads."""

    def __init__(self, runtime: RuntimeInfo, state_dir: Path) -> None:
        self.runtime = runtime
        self.state_dir = state_dir
        self._runtime_root = state_dir / "runtime" / runtime.name
        self._bundles = state_dir / "bundles"
        self._lock = threading.Lock()
        self._running: dict[str, subprocess.Popen[bytes]] = {}
        self._cancelled = False
        self._owner: _Owner | None = None
        # rootless, where the host's network cannot be shared: slirp4netns or pasta
        self.network: Any = None

    def _claim(self) -> _Owner:
        with self._lock:
            if self._owner is None:
                self._owner = _Owner(self.state_dir)
            return self._owner

    def secrets_dir(self) -> Path:
        """This process's private secrets directory: 0700, on tmpfs, removed by
        :meth:`close` (or, after a crash, by :func:`sweep_stale`)."""
        return self._claim().secrets_dir()

    def close(self) -> None:
        """Remove this executor's bundles directory, secrets directory and owner file (and
        stop its network helper, if any)."""
        with self._lock:
            owner, self._owner = self._owner, None
            network, self.network = self.network, None
        if owner is not None:
            owner.release()
        if network is not None:
            network.close()

    def _network_path(self, spec: RunSpec) -> str | None:
        """The network namespace a ``host``-network step joins when the host's cannot be
        used (rootless, through slirp4netns or pasta), else None."""
        if spec.network != "host" or self.network is None:
            return None
        with self._lock:
            if self._cancelled:
                raise ExecutorError("cancelled")
            return str(self.network.path())

    def _cmd(self, *args: str) -> list[str]:
        return [*self.runtime.argv_prefix, "--root", str(self._runtime_root), *args]

    def run(self, rootfs: Path, spec: RunSpec, *, on_output: Callable[[bytes], None],
            attach: bool = False, name: str | None = None) -> int:
        """Run ``spec`` in ``rootfs`` (a mounted snapshot); stream its merged stdout and stderr
        to ``on_output``; return its exit status (128+N when killed by signal N).

        ``attach`` (``dockyard run -i``/``-t``): the runtime gets this process's standard
        input, output and error instead (``on_output`` is not called); with
        ``spec.terminal`` the runtime makes the pseudo-terminal and copies between it and
        ours (raw mode on ours, window size followed). ``name`` is the container's id in
        the runtime (default: a random ``dockyard-...``).

        Raises ExecutorError when the process cannot be started (missing shell or program,
        unknown user, runtime failure) or when :meth:`cancel` was called.
        """
        if self._cancelled:
            raise ExecutorError("cancelled")
        _check_command(rootfs, spec)
        ids = UserIds(*resolve_user(rootfs, spec.user))
        if self.runtime.rootless:
            from dockyard.rootless.idmap import check_ids

            check_ids(f"USER {spec.user}", ids.uid, ids.gid, ids.groups)
        cid = name or f"dockyard-{os.urandom(8).hex()}"
        if name is not None and (self._runtime_root / name).exists():
            raise ExecutorError(f"the container name {name!r} is already in use")
        owner = self._claim()
        owner.bundles.mkdir(parents=True, exist_ok=True)
        os.chmod(owner.bundles.parent, 0o700)
        bundle = owner.bundles / cid
        bundle.mkdir(0o700)
        os.chmod(bundle, 0o700)  # whatever the umask
        self._runtime_root.mkdir(parents=True, exist_ok=True)
        stubs: list[MountStub] = []
        root_view: Path | None = None
        privileged = spec.security == "insecure"
        cgroup_dirs: list[Path] = []
        try:
            resolv = bundle / "resolv.conf"
            resolv.write_text(_host_resolv_conf())
            hosts = bundle / "hosts"
            hosts.write_text(hosts_file_content(spec.hostname, spec.extra_hosts))
            for f in (resolv, hosts):
                f.chmod(0o644)
            network_path = self._network_path(spec)
            mounts = system_mounts(
                privileged=privileged, resolv_conf=resolv, hosts=hosts, shm_size=spec.shm_size,
                rootless=self.runtime.rootless,
                own_network=spec.network == "none" or network_path is not None,
                tty_gid=_tty_gid() if self.runtime.rootless else 5,
            )
            mounts += list(spec.mounts)
            stubs = find_mount_stubs(rootfs, [m.destination for m in mounts])
            if spec.cwd not in ("", "/"):
                _ensure_cwd(rootfs, spec.cwd, ids)
            container_root = rootfs
            if not privileged and not os.statvfs(rootfs).f_flag & os.ST_NODEV:
                root_view = bundle / "rootfs"
                container_root = _nodev_view(rootfs, root_view)
            if self.runtime.own_cgroups:
                from dockyard.executor import v1cgroups

                cgroup_dirs = v1cgroups.create(cid, devices=not privileged)
            config = oci_spec(container_root, spec, ids, mounts, cgroups=self.runtime.cgroups,
                              pids_cgroup=self.runtime.own_cgroups,
                              device_barrier=self.runtime.device_barrier,
                              rootless=self.runtime.rootless, network_path=network_path,
                              hostname=self.runtime.hostname)
            fd = os.open(bundle / "config.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:  # one write (json.dump makes one per token)
                out.write(json.dumps(config).encode())
            return self._run_container(cid, bundle, on_output, attach=attach,
                                       cgroups=cgroup_dirs)
        finally:
            if cgroup_dirs:
                from dockyard.executor import v1cgroups

                v1cgroups.remove(cgroup_dirs)
            if root_view is not None:
                from dockyard.snapshot.base import unmount

                with contextlib.suppress(Exception):
                    unmount(root_view)
            _remove_bundle(bundle)
            with contextlib.suppress(OSError):
                owner.bundles.rmdir()  # when no other run of ours is using it
            remove_mount_stubs(rootfs, stubs)

    def _run_container(
        self, cid: str, bundle: Path, on_output: Callable[[bytes], None], *,
        attach: bool = False, cgroups: Sequence[Path] = (),
    ) -> int:
        log = bundle / "runtime.log"
        argv = [
            *self.runtime.run_argv_prefix(cgroups),
            "--root", str(self._runtime_root),
            f"--log={log}", "--log-format=json",
            "run", "--bundle", str(bundle), cid,
        ]
        proc: subprocess.Popen[bytes] | None = None
        try:
            with self._lock:
                if self._cancelled:
                    raise ExecutorError("cancelled")
                # A session of its own: a terminal's Ctrl-C reaches us, and we stop the
                # container deliberately rather than racing the runtime's signal forwarding.
                # Attached, the runtime reads and writes our own descriptors (a terminal the
                # new session does not control: no job-control stops).
                proc = subprocess.Popen(
                    argv,
                    stdin=None if attach else subprocess.DEVNULL,
                    stdout=None if attach else subprocess.PIPE,
                    stderr=None if attach else subprocess.STDOUT,
                    start_new_session=True,
                    # what the runtime creates (mount points, /dev) must not take the
                    # caller's umask; the process itself gets the runtime's 0022
                    umask=0o022,
                )
                self._running[cid] = proc
            if proc.stdout is not None:
                fd = proc.stdout.fileno()
                while True:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    on_output(chunk)
            code = proc.wait()
            if self._cancelled:
                raise ExecutorError("cancelled")
            if code != 0:
                err = self._runtime_error(log)
                if err:
                    raise ExecutorError(err)
            return code if code >= 0 else 128 - code
        finally:
            with self._lock:
                self._running.pop(cid, None)
            if proc is not None:
                if proc.poll() is None:
                    self._kill(cid)
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()
            if (self._runtime_root / cid).exists():
                subprocess.run(self._cmd("delete", "--force", cid), capture_output=True, check=False)

    @staticmethod
    def _runtime_error(log: Path) -> str | None:
        """The runtime's own error (not the container's exit), from its JSON log."""
        try:
            lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return None
        for line in reversed(lines):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("level") in ("error", "fatal") and entry.get("msg"):
                return str(entry["msg"])
        return None

    def _kill(self, cid: str) -> None:
        # A kill sent before `runc run` has created the container fails: retry while the
        # runtime process is alive (up to 5 s), so an early Ctrl-C/SIGTERM is never lost.
        deadline = time.monotonic() + 5.0
        while True:
            done = subprocess.run(
                self._cmd("kill", cid, "KILL"), capture_output=True, check=False
            ).returncode == 0
            with self._lock:
                proc = self._running.get(cid)
            if done or proc is None or proc.poll() is not None or time.monotonic() > deadline:
                return
            time.sleep(0.02)

    def cancel(self) -> None:
        """Kill every running container of this executor; later runs raise at once."""
        with self._lock:
            self._cancelled = True
            running = list(self._running)
        for cid in running:
            self._kill(cid)


# What a bundle holds after a run: the files written above, the runtime's log, the root
# view's (unmounted) mount point.
_BUNDLE_FILES = ("config.json", "resolv.conf", "hosts", "runtime.log")


def _remove_bundle(bundle: Path) -> None:
    """Remove a container's bundle: its known entries one by one (a fifth of what a
    recursive removal costs per RUN step), else whatever else is in it, recursively."""
    try:
        for name in _BUNDLE_FILES:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{bundle}/{name}")
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(f"{bundle}/rootfs")
        os.rmdir(bundle)
    except OSError:
        if os.path.ismount(f"{bundle}/rootfs"):
            return  # a root view that would not unmount: never recurse into a snapshot
        shutil.rmtree(bundle, ignore_errors=True)


def _tty_gid() -> int | None:
    """The group of /dev/pts nodes (5, tty) when it exists in this user namespace."""
    from dockyard.rootless.idmap import current_map

    return 5 if any(r.inside <= 5 < r.inside + r.count for r in current_map("gid")) else None


def _nodev_view(rootfs: Path, target: Path) -> Path:
    """Bind ``rootfs`` at ``target`` with ``nodev``: the runtime binds the container's root
    from there, and the flag stays, so no device node in the image or made by the step can
    be opened, whether or not a device cgroup applies."""
    from dockyard.snapshot.base import Mount, mount_one

    target.mkdir()
    try:
        mount_one(Mount("bind", str(rootfs), ("bind", "nodev")), target)
    except OSError as err:
        raise ExecutorError(f"cannot prepare the container's root: {err.strerror}") from None
    return target


def _stale_owners(state_dir: Path) -> Iterator[tuple[Path, Path | None]]:
    """Owner files of dockyard processes that are gone, each locked while the caller looks
    at it: (owner file, its secrets directory if it names a valid one)."""
    owners = state_dir / "owners"
    for name in _listdir(owners):
        path = owners / name
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # alive
            secrets_text = os.read(fd, 4096).decode(errors="replace").strip()
            secrets = Path(secrets_text) if secrets_text else None
            if secrets is not None and not _is_secrets_dir(secrets, state_dir, name):
                secrets = None
            yield path, secrets
        finally:
            os.close(fd)


def _ownerless_bundles(state_dir: Path) -> list[Path]:
    """Bundle directories with no owner file at all (older dockyard versions); leftovers
    only while no dockyard process runs."""
    owners = state_dir / "owners"
    return [state_dir / "bundles" / name for name in _listdir(state_dir / "bundles")
            if not (owners / name).exists()]


def stale_leftovers(state_dir: Path, *, exclusive: bool = False) -> list[Path]:
    """What :func:`sweep_stale` would remove, without removing it: the owner files, bundle
    directories and secrets directories of processes that are gone (with ``exclusive``,
    ownerless bundles too)."""
    found: list[Path] = []
    for owner, secrets in _stale_owners(state_dir):
        found.append(owner)
        bundles = state_dir / "bundles" / owner.name
        found += [p for p in (bundles, secrets) if p is not None and p.exists()]
    if exclusive:
        found += _ownerless_bundles(state_dir)
    return found


def sweep_stale(state_dir: Path, *, exclusive: bool = False) -> int:
    """Remove what dockyard processes that are gone (SIGKILL, power loss) left in
    ``state_dir``: their containers (killed and deleted), mounts, bundles (with the env
    secrets in their config.json) and secrets directories. Safe while other dockyard
    processes run: an owner still holding its lock is left alone. With ``exclusive`` (the
    caller holds the store's exclusive lock, so no dockyard process runs) bundles with no
    owner file at all (older dockyard versions) go too. Returns how many owners were
    cleaned up. (``store check`` lists the same with :func:`stale_leftovers`.)"""
    cleaned = 0
    for owner, secrets in _stale_owners(state_dir):
        bundles = state_dir / "bundles" / owner.name
        _kill_containers(state_dir, _listdir(bundles))
        _remove_owned(bundles, secrets, state_dir.parent / "mnt")
        with contextlib.suppress(OSError):
            owner.unlink()
        cleaned += 1
    if exclusive:
        for bundle in _ownerless_bundles(state_dir):
            _kill_containers(state_dir, [bundle.name, *_listdir(bundle)])
            _remove_owned(bundle, None)
        if cgroup_mode_is_hybrid():
            from dockyard.executor import v1cgroups

            v1cgroups.remove_abandoned()
    _sweep_legacy_secrets()
    return cleaned


def _is_secrets_dir(path: Path, state_dir: Path, token: str) -> bool:
    """Whether an owner file's secrets path is one dockyard makes (never rmtree anything
    else, whatever the file says)."""
    if path == state_dir / "secrets" / token:
        return True
    return path.name.startswith("dockyard-secrets-") and any(
        path.parent == base for base in (Path("/dev/shm"), Path("/run")))


def _sweep_legacy_secrets() -> None:
    """``/dev/shm/dockyard-secrets-<pid>`` of dockyard versions before owner files, when that
    process is gone."""
    with contextlib.suppress(OSError):
        for name in os.listdir("/dev/shm"):
            pid = name.removeprefix("dockyard-secrets-")
            if pid != name and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                shutil.rmtree(Path("/dev/shm") / name, ignore_errors=True)


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _kill_containers(state_dir: Path, cids: list[str]) -> None:
    runtimes = state_dir / "runtime"
    for name in _listdir(runtimes):
        present = [c for c in cids if (runtimes / name / c).exists()]
        if not present:
            continue
        base = _runtime_argv(runtimes / name)
        if base is None:
            continue
        for cid in present:
            subprocess.run([*base, "kill", cid, "KILL"], capture_output=True, check=False)
            subprocess.run([*base, "delete", "--force", cid], capture_output=True, check=False)
    _remove_own_cgroups(cids)


def _remove_own_cgroups(cids: list[str]) -> None:
    """The v1 cgroups dockyard made for these containers (crun on a hybrid host), if any."""
    if cids and cgroup_mode_is_hybrid():
        from dockyard.executor import v1cgroups

        v1cgroups.remove_named(cids)


def cgroup_mode_is_hybrid() -> bool:
    from dockyard.executor.runtime import cgroup_mode

    return cgroup_mode() == "hybrid"


def _runtime_argv(runtime_root: Path) -> list[str] | None:
    binary = shutil.which(runtime_root.name)
    if binary is None or not runtime_root.is_dir():
        return None
    from dockyard.executor.runtime import cgroup_mode, hide_cgroup2_wrapper
    from dockyard.rootless.idmap import in_user_namespace

    if in_user_namespace():
        extra = ["--rootless=true"] if runtime_root.name == "runc" else [
            "--cgroup-manager=disabled"]
        return [binary, *extra, "--root", str(runtime_root)]
    wrapper = hide_cgroup2_wrapper() if (
        runtime_root.name == "crun" and cgroup_mode() == "hybrid") else ()
    return [*wrapper, binary, "--root", str(runtime_root)]


def cleanup_stale_containers(state_dir: Path) -> int:
    """Kill and delete every container left in dockyard's runtime state under ``state_dir``
    (a killed process's). Returns how many were removed. Call only while no other dockyard
    process uses the store (under its exclusive lock)."""
    removed = 0
    runtimes = state_dir / "runtime"
    if not runtimes.is_dir():
        return 0
    for runtime_root in sorted(runtimes.iterdir()):
        base = _runtime_argv(runtime_root)
        if base is None:
            continue
        listed = subprocess.run([*base, "list", "-q"], capture_output=True, text=True,
                                check=False)
        for cid in listed.stdout.split():
            subprocess.run([*base, "kill", cid, "KILL"], capture_output=True, check=False)
            subprocess.run([*base, "delete", "--force", cid], capture_output=True, check=False)
            removed += 1
        _remove_own_cgroups(listed.stdout.split())
    return removed

