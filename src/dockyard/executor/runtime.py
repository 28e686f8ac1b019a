"""Finding an OCI runtime that works on this host.

crun is preferred, runc is the fallback; ``--runtime`` / ``DOCKYARD_RUNTIME`` names one. Each
candidate is *probed*: a tiny container running the host's ``true`` (the host's /usr bound
read-only into an empty root). crun refuses hybrid cgroup v1/v2 hosts whose cgroup2 tree has
controllers, even with ``--cgroup-manager=disabled``; the probe finds that out rather than
guessing. Results are cached in the state dir, keyed by the runtime's path and mtime and the
cgroup mode, so a no-op build does not pay for the probe.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

from dockyard.errors import ExecutorError

__all__ = [
    "CgroupMode",
    "RuntimeInfo",
    "cgroup_mode",
    "default_state_dir",
    "detect_runtime",
    "state_dir",
]

CgroupMode = Literal["v1", "v2", "hybrid", "none"]

_PROBE_VERSION = 8


@dataclass(frozen=True, slots=True)
class RuntimeInfo:
    """A runtime that works here: how to call it (``argv_prefix``) and what was found.

    ``argv_prefix`` is the binary plus global options (e.g. crun's
    ``--cgroup-manager=disabled``); the executor adds ``--root`` and the subcommand.
    """

    name: str
    path: str
    version: str
    cgroup_mode: CgroupMode
    global_args: tuple[str, ...]
    wrapper: tuple[str, ...] = ()  # e.g. hide_cgroup2_wrapper() for crun on hybrid hosts
    rootless: bool = False  # runs in dockyard's user namespace (docs/rootless.md)
    # False where sethostname is refused even in a new UTS namespace (a seccomp profile
    # of an unprivileged container): containers then keep the host name they inherit
    hostname: bool = True
    # crun on a hybrid host: dockyard makes each container's v1 device and pids cgroups
    # and the wrapper joins them before it execs the runtime (executor/v1cgroups.py)
    own_cgroups: bool = False

    @property
    def cgroups(self) -> bool:
        """Whether this runtime applies the spec's cgroup resources here (device rules, pids
        limit): not crun with its cgroup manager disabled, nor a host without cgroups, nor a
        user namespace (no cgroup of its own to write to)."""
        return (self.cgroup_mode != "none" and not self.rootless
                and "--cgroup-manager=disabled" not in self.global_args)

    @property
    def nodev_root(self) -> bool:
        """Whether the container's root keeps the ``nodev`` flag of the mount it is given.
        runc keeps it; crun (1.8) remounts the root without it."""
        return self.name != "crun"

    @property
    def device_barrier(self) -> bool:
        """Whether a device node in the rootfs (from mknod or from a layer) cannot be opened:
        a device cgroup applies, or the root is ``nodev``, or (in a user namespace) no
        device node can be made at all."""
        return self.cgroups or self.own_cgroups or self.nodev_root or self.rootless

    @property
    def argv_prefix(self) -> tuple[str, ...]:
        """The wrapper (if any), the binary and its global options."""
        return (*self.wrapper, self.path, *self.global_args)

    def run_argv_prefix(self, cgroups: Sequence[Path]) -> tuple[str, ...]:
        """:attr:`argv_prefix` for ``run``: with :attr:`own_cgroups`, a wrapper that first
        moves itself into ``cgroups`` (the runtime and the container then start there)."""
        if not self.own_cgroups:
            return self.argv_prefix
        if not cgroups:
            raise ExecutorError("the container's cgroups were not made")
        wrapper = hide_cgroup2_wrapper(join=cgroups)
        if not wrapper:  # no unshare, or the cgroup2 mount went away since the probe
            raise ExecutorError("cannot start crun inside its cgroups here",
                                hint="remove runtime-probe-crun.json from the state "
                                     "directory (run/ in the store) to probe again")
        return (*wrapper, self.path, *self.global_args)


def cgroup_mode() -> CgroupMode:
    """``v2`` (unified), ``hybrid`` (v1 controllers plus a cgroup2 mount), ``v1``, or ``none``."""
    v1 = False
    v2_at_root = False
    v2_elsewhere = False
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fstype = right.split(" ", 1)[0]
                point = left.split(" ")[4]
                if fstype == "cgroup2":
                    if point == "/sys/fs/cgroup":
                        v2_at_root = True
                    else:
                        v2_elsewhere = True
                elif fstype == "cgroup":
                    v1 = True
    except OSError:
        return "none"
    if v2_at_root:
        return "v2"
    if v1 and v2_elsewhere:
        return "hybrid"
    if v1:
        return "v1"
    return "v2" if v2_elsewhere else "none"


def default_state_dir() -> Path:
    """Where runtime state lives when the caller gives no store: /run/dockyard for root,
    ``$XDG_RUNTIME_DIR/dockyard`` in rootless mode, else a tmp dir of this user's."""
    from dockyard.rootless.idmap import in_user_namespace

    if in_user_namespace():
        xdg = os.environ.get("XDG_RUNTIME_DIR")
        if xdg and os.path.isdir(xdg):
            return Path(xdg) / "dockyard"
        return Path(tempfile.gettempdir()) / f"dockyard-{os.getuid()}-{_host_uid()}"
    if os.geteuid() == 0:
        return Path("/run/dockyard")
    return Path(tempfile.gettempdir()) / f"dockyard-{os.geteuid()}"


def _host_uid() -> int:
    """This process's uid outside its user namespace (as the host sees it)."""
    from dockyard.rootless.idmap import current_map

    uid = os.getuid()
    for r in current_map("uid"):
        if r.inside <= uid < r.inside + r.count:
            return r.outside + uid - r.inside
    return uid


def state_dir(store_root: Path) -> Path:
    """Where a store's containers keep their run files (bundles, runtime state, owner
    locks): ``<root>/run`` for root; in rootless mode ``$XDG_RUNTIME_DIR/dockyard/<id>``
    (one per store, ``<id>`` a digest of the store's path), else ``<root>/run``."""
    from dockyard.rootless.idmap import in_user_namespace

    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg) and in_user_namespace():
        import hashlib

        ident = hashlib.sha256(os.fsencode(os.path.abspath(store_root))).hexdigest()[:16]
        return Path(xdg) / "dockyard" / f"run-{ident}"
    return store_root / "run"


def _version(path: str) -> str:
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    first = out.splitlines()[0] if out else ""
    return first.split("version", 1)[-1].strip() or "unknown"


def cgroup2_mounts_outside_root() -> list[str]:
    """Mount points of cgroup2 file systems other than /sys/fs/cgroup (hybrid hosts)."""
    points: list[str] = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split(" ", 1)[0] == "cgroup2":
                point = left.split(" ")[4]
                if point != "/sys/fs/cgroup":
                    points.append(point)
    return points


def hide_cgroup2_wrapper(join: Sequence[Path] = ()) -> tuple[str, ...]:
    """A command prefix that runs the rest in a private mount namespace without the cgroup2
    mounts of a hybrid host.

    crun (1.8) refuses to start on a hybrid cgroup v1/v2 host whose cgroup2 tree has
    controllers enabled ("cgroups in hybrid mode not supported"), even with its cgroup manager
    disabled; with the cgroup2 mount out of sight it sees a plain v1 host and, with
    ``--cgroup-manager=disabled``, leaves cgroups alone. The container gets its own mount
    namespace from crun anyway; only crun's view changes. With ``join`` (cgroup directories),
    the shell first writes its own pid to each one's ``cgroup.procs``: the runtime it execs
    and the container's processes start in them; if a write fails, nothing runs.
    """
    unshare = shutil.which("unshare")
    points = cgroup2_mounts_outside_root()
    if unshare is None or not points:
        return ()
    steps = [f"echo $$ > {shlex.quote(str(Path(g) / 'cgroup.procs'))}" for g in join]
    steps += [f"umount -l {shlex.quote(p)}" for p in points]
    # unshare makes the new namespace's mounts private itself, so the unmount stays inside
    # (one `mount --make-rprivate /` process less per RUN: ~2.7 ms)
    script = " && ".join(steps) + ' && exec "$0" "$@"'
    return (unshare, "-m", "--propagation", "private", "--", "/bin/sh", "-c", script)


def _candidate_args(
    name: str, mode: CgroupMode, rootless: bool = False,
) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """(wrapper, global args) to try, in order."""
    if rootless:
        # No cgroup of our own to manage, and no cgroup2 mount to hide (mounts that came
        # from the host are locked in a user namespace).
        if name == "crun":
            return [((), ("--cgroup-manager=disabled",))]
        return [((), ("--rootless=true",))]
    if name == "crun":
        # crun's own cgroup manager cannot handle hybrid hosts; try without it there first,
        # then with the cgroup2 mount hidden from crun.
        if mode == "hybrid":
            hidden = hide_cgroup2_wrapper()
            tries: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
                ((), ("--cgroup-manager=disabled",)), ((), ())]
            if hidden:
                tries.append((hidden, ("--cgroup-manager=disabled",)))
            return tries
        return [((), ()), ((), ("--cgroup-manager=disabled",))]
    return [((), ())]


def _probe(argv: tuple[str, ...], work: Path, *, hostname: bool = True) -> str | None:
    """Run the host's ``true`` in a throwaway container; None on success, else the error."""
    true_bin = shutil.which("true") or "/bin/true"
    bundle = work / f"probe-{os.urandom(4).hex()}"
    rootfs = bundle / "rootfs"
    (rootfs / "proc").mkdir(parents=True)
    (rootfs / "dev").mkdir()  # crun (unlike runc) needs the mount point in a read-only root
    mounts: list[dict[str, object]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": []}
    ]
    for top in ("usr", "bin", "lib", "lib64", "sbin"):
        host = Path("/") / top
        if host.is_symlink():
            os.symlink(os.readlink(host), rootfs / top)
        elif host.is_dir():
            (rootfs / top).mkdir()
            mounts.append(
                # nosuid, nodev: flags the host's mount may have locked in a user namespace
                {"destination": f"/{top}", "type": "bind", "source": str(host),
                 "options": ["rbind", "ro", "nosuid", "nodev"]}
            )
    config = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": [true_bin],
            "env": ["PATH=/usr/bin:/bin"],
            "cwd": "/",
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        **({"hostname": "probe"} if hostname else {}),
        "mounts": mounts,
        "linux": {"namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")]},
    }
    (bundle / "config.json").write_text(json.dumps(config))
    state = work / "probe-state"
    cid = f"dockyard-probe-{os.urandom(6).hex()}"
    base = (*argv, "--root", str(state))
    try:
        proc = subprocess.run(
            [*base, "run", "--bundle", str(bundle), cid],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return str(err)
    finally:
        subprocess.run([*base, "delete", "--force", cid], capture_output=True, check=False)
        shutil.rmtree(bundle, ignore_errors=True)
        _remove_probe_cgroups(cid)
    if proc.returncode != 0:
        return (proc.stderr.strip() or f"exit status {proc.returncode}").splitlines()[-1]
    return None


def _with_own_cgroups(info: RuntimeInfo, work: Path) -> RuntimeInfo:
    """``info`` with :attr:`RuntimeInfo.own_cgroups` if a probe container started inside
    cgroups dockyard made (crun with the cgroup2 mount hidden on a hybrid host); else as is."""
    from dockyard.executor import v1cgroups

    if not v1cgroups.available():
        return info
    cid = f"dockyard-probe-{os.urandom(6).hex()}"
    try:
        dirs = v1cgroups.create(cid)
    except ExecutorError:
        return info
    try:
        trial = replace(info, own_cgroups=True)
        if _probe(trial.run_argv_prefix(dirs), work, hostname=info.hostname) is None:
            return trial
        return info
    finally:
        v1cgroups.remove(dirs)


def _remove_probe_cgroups(cid: str) -> None:
    """The cgroups named after a probe container that a failed try left (crun with its
    cgroup manager on a hybrid host makes them in every hierarchy before it gives up)."""
    points: list[str] = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = [line.partition(" - ")[0].split(" ")[4] for line in f
                  if line.partition(" - ")[2].split(" ", 1)[0] in ("cgroup", "cgroup2")]
    for point in points:
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(point, cid))


def _probe_cached(name: str, path: str, mode: CgroupMode, cache_dir: Path) -> RuntimeInfo:
    from dockyard.rootless.idmap import in_user_namespace

    rootless = in_user_namespace()
    st = os.stat(path)
    key: dict[str, object] = {"v": _PROBE_VERSION, "path": path, "mtime_ns": st.st_mtime_ns,
                              "cgroup": mode, "rootless": rootless}
    if mode == "hybrid" and not rootless:
        from dockyard.executor import v1cgroups

        # whether dockyard may make cgroups itself decides between crun and runc here: a
        # change (the hierarchies made read-only, say) probes again rather than failing
        key["own_cgroups"] = v1cgroups.available()
    cache = cache_dir / f"runtime-probe-{name}.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        saved = json.loads(cache.read_text())
        if saved["key"] == key:
            if saved["error"]:
                raise ExecutorError(saved["error"])
            info = saved["info"]
            return RuntimeInfo(
                info["name"], info["path"], info["version"], info["cgroup_mode"],
                tuple(info["global_args"]), tuple(info.get("wrapper") or ()),
                bool(info.get("rootless")), bool(info.get("hostname", True)),
                bool(info.get("own_cgroups")),
            )
    errors = []
    found: RuntimeInfo | None = None
    cache_dir.mkdir(parents=True, exist_ok=True)
    for wrapper, args in _candidate_args(name, mode, rootless):
        err = _probe((*wrapper, path, *args), cache_dir)
        if err is None:
            found = RuntimeInfo(name, path, _version(path), mode, args, wrapper, rootless)
            break
        if "sethostname" in err and _probe((*wrapper, path, *args), cache_dir,
                                           hostname=False) is None:
            found = RuntimeInfo(name, path, _version(path), mode, args, wrapper, rootless,
                                hostname=False)
            break
        how = " (cgroup2 hidden)" if wrapper else ""
        errors.append(f"{' '.join((name, *args))}{how}: {err}")
    if found is not None and found.wrapper and not found.cgroups and not rootless:
        found = _with_own_cgroups(found, cache_dir)
    message = "" if found else f"{name} does not work here: " + "; ".join(errors)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(
        json.dumps({"key": key, "error": message, "info": asdict(found) if found else None})
    )
    os.replace(tmp, cache)
    if found is None:
        raise ExecutorError(message)
    return found


def detect_runtime(preferred: str | None = None, *, cache_dir: Path | None = None) -> RuntimeInfo:
    """The runtime to use: ``preferred`` (a name or path), else ``DOCKYARD_RUNTIME``, else the
    first of crun, runc that works on this host and keeps device nodes in the rootfs from
    being opened (:attr:`RuntimeInfo.device_barrier`); crun with its cgroup manager disabled
    (hybrid hosts) has neither a device cgroup nor a ``nodev`` root, so runc is preferred
    there, and crun is used only when runc does not work. Raises ExecutorError naming what
    failed."""
    choice = preferred or os.environ.get("DOCKYARD_RUNTIME") or None
    cache_dir = cache_dir or default_state_dir()
    mode = cgroup_mode()
    names = [choice] if choice else ["crun", "runc"]
    errors = []
    weaker: RuntimeInfo | None = None
    for name in names:
        path = shutil.which(name)
        if path is None:
            errors.append(f"{name}: not found on PATH")
            continue
        path = os.path.realpath(path)
        label = Path(name).name
        try:
            info = _probe_cached(label, path, mode, cache_dir)
        except ExecutorError as err:
            errors.append(str(err))
            continue
        if choice or info.device_barrier:
            return info
        weaker = weaker or info
    if weaker is not None:
        return weaker
    hint = "install crun or runc (Debian: apt-get install crun runc)"
    raise ExecutorError("no working OCI runtime: " + "; ".join(errors), hint=hint)
