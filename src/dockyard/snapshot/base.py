"""Mount data, the Snapshotter protocol, and mounting with guaranteed cleanup.

A snapshotter returns *data* (:class:`Mount`), as containerd's do; only :func:`mounted` and
:func:`cleanup_stale_mounts` touch the kernel's mount table.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, runtime_checkable

from dockyard.errors import StoreError

if TYPE_CHECKING:
    from dockyard.layers.tarwriter import LayerStats

__all__ = [
    "HasUpperDirs",
    "Mount",
    "Snapshotter",
    "cleanup_stale_mounts",
    "mount_all",
    "mounted",
    "our_mounts",
    "unmount",
]

# The kernel copies mount options into one page; longer strings fail with EINVAL.
MOUNT_OPTIONS_LIMIT = 4096 - 1

_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_NOEXEC = 8
_MS_REMOUNT = 32
_MS_BIND = 4096
_MS_REC = 16384
_MNT_DETACH = 2

_FLAG_OPTIONS = {
    "ro": _MS_RDONLY,
    "nosuid": _MS_NOSUID,
    "nodev": _MS_NODEV,
    "noexec": _MS_NOEXEC,
    "bind": _MS_BIND,
    "rbind": _MS_BIND | _MS_REC,
}
_IGNORED_OPTIONS = {"rw", "suid", "dev", "exec"}


@dataclass(frozen=True, slots=True)
class Mount:
    """One mount as data: ``type`` (``overlay``, ``bind``), ``source`` and ``options``."""

    type: str
    source: str
    options: tuple[str, ...]

    def option_string(self) -> str:
        """The options that go to mount(2) as data (flag options removed)."""
        return ",".join(
            o for o in self.options if o not in _FLAG_OPTIONS and o not in _IGNORED_OPTIONS
        )

    def with_nodev(self) -> Mount:
        """The same mount with ``nodev``: no device node under it can be opened (a bind
        takes it in its remount; an overlay in its one mount call)."""
        return self if "nodev" in self.options else Mount(self.type, self.source,
                                                          (*self.options, "nodev"))


class Snapshotter(Protocol):
    """Copy-on-write root filesystems for build steps (containerd's snapshotter shape).

    Keys name active snapshots (being written) and views; names of committed snapshots are
    chosen by the caller (chain ids, cache keys) and are the only valid ``parent`` values.
    """

    name: str

    def prepare(self, key: str, parent: str | None) -> list[Mount]:
        """Create a writable snapshot ``key`` on top of committed ``parent``; its mounts."""
        ...

    def view(self, key: str, parent: str | None) -> list[Mount]:
        """Create a read-only view ``key`` of committed ``parent``; its mounts."""
        ...

    def mounts(self, key: str) -> list[Mount]:
        """The mounts of an existing active snapshot or view."""
        ...

    def commit(self, name: str, key: str) -> None:
        """Turn active snapshot ``key`` into committed snapshot ``name`` (``key`` is gone)."""
        ...

    def remove(self, key: str) -> None:
        """Delete an active snapshot, a view or a committed snapshot without children."""
        ...

    def diff(self, key: str, out: BinaryIO, *, source_date_epoch: int | None,
             opaque_markers: bool = False) -> LayerStats:
        """Write what active snapshot ``key`` changed, as an uncompressed layer tar. A
        directory that replaced one of the parent's (``rm -rf d && mkdir d``) is written as
        a whiteout for each name that went, as BuildKit writes it; ``opaque_markers``: as a
        ``.wh..wh..opq`` marker instead, where a snapshotter recorded layers in that form
        (``dockyard.store.layers.TAR_FORMAT`` 1)."""
        ...

    def apply(self, key: str, stream: BinaryIO) -> None:
        """Unpack a layer (any compression) into active snapshot ``key``."""
        ...


@runtime_checkable
class HasUpperDirs(Protocol):
    """A snapshotter whose active snapshots keep their own changes in a directory of their
    own (overlay's upper dir), which a step may write to directly while no mount of the
    snapshot exists (overlayfs allows changes to the upper tree while it is not mounted)."""

    def upper_dir(self, key: str) -> Path:
        """The directory holding active snapshot ``key``'s own changes."""
        ...


_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        try:  # the usual name first: find_library runs ldconfig in a subprocess
            _libc = ctypes.CDLL("libc.so.6", use_errno=True)
        except OSError:
            from ctypes.util import find_library

            _libc = ctypes.CDLL(find_library("c"), use_errno=True)
        _libc.mount.argtypes = [
            ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p,
        ]
        _libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return _libc


def _sys_mount(source: str, target: str, fstype: str | None, flags: int, data: str) -> None:
    rc = _lib().mount(
        source.encode(),
        target.encode(),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def _compact_overlay(m: Mount) -> tuple[Mount, str] | None:
    """Rewrite an overlay mount with paths relative to their common directory.

    Returns the rewritten mount and that directory (the cwd to mount from), or None when the
    options cannot be shortened enough.
    """
    dirs: list[str] = []
    for opt in m.options:
        key, _, value = opt.partition("=")
        if key == "lowerdir":
            dirs.extend(value.split(":"))
        elif key in ("upperdir", "workdir"):
            dirs.append(value)
    if not dirs:
        return None
    common = os.path.commonpath(dirs)
    new_opts: list[str] = []
    for opt in m.options:
        key, _, value = opt.partition("=")
        if key == "lowerdir":
            rel = [os.path.relpath(d, common) for d in value.split(":")]
            new_opts.append("lowerdir=" + ":".join(rel))
        elif key in ("upperdir", "workdir"):
            new_opts.append(f"{key}={os.path.relpath(value, common)}")
        else:
            new_opts.append(opt)
    compact = Mount(m.type, m.source, tuple(new_opts))
    if len(compact.option_string()) > MOUNT_OPTIONS_LIMIT:
        return None
    return compact, common


def mount_one(m: Mount, target: Path) -> None:
    """Mount ``m`` on ``target`` (an existing directory)."""
    flags = 0
    for opt in m.options:
        flags |= _FLAG_OPTIONS.get(opt, 0)
    data = m.option_string()
    if m.type == "bind" or flags & _MS_BIND:
        _sys_mount(m.source, str(target), None, flags & (_MS_BIND | _MS_REC), "")
        extra = flags & ~(_MS_BIND | _MS_REC)
        if extra:
            # Bind mounts ignore ro/nosuid... on the first call; they need a remount. In a
            # user namespace the flags the source's mount came with are locked: a remount
            # must repeat them (it may only add).
            extra |= _locked_flags(target)
            _sys_mount("none", str(target), None, _MS_REMOUNT | _MS_BIND | extra, "")
        return
    if len(data) > MOUNT_OPTIONS_LIMIT and m.type == "overlay":
        if _mount_overlay_by_layers(m, target, flags):
            return
        compact = _compact_overlay(m)
        if compact is None:
            raise StoreError(f"overlay mount options too long ({len(data)} bytes)")
        cm, cwd = compact
        # The kernel resolves relative layer paths against the mounting process's cwd; a
        # child process keeps our own cwd (shared by all threads) untouched.
        # mount(8) takes the flags (ro, nodev...) in the same option list
        flag_opts = [o for o in m.options if o in _FLAG_OPTIONS and not _FLAG_OPTIONS[o] & _MS_BIND]
        proc = subprocess.run(
            ["mount", "-t", "overlay", m.source, "-o", ",".join([*flag_opts, cm.option_string()]),
             str(target)],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise StoreError(f"mounting overlay on {target}: {proc.stderr.strip()}")
        return
    try:
        _sys_mount(m.source, str(target), m.type, flags, data)
    except OSError as err:
        raise StoreError(f"mounting {m.type} on {target}: {err.strerror}") from err


# The new mount API (Linux 5.2+; the same numbers on every architecture) and overlay's
# ``lowerdir+`` (Linux 6.8+), which takes one lower layer per call instead of one option
# string for all of them, so a deep stack needs no string over a page.
_SYS_MOVE_MOUNT, _SYS_FSOPEN, _SYS_FSCONFIG, _SYS_FSMOUNT = 429, 430, 431, 432
_FSCONFIG_SET_FLAG, _FSCONFIG_SET_STRING, _FSCONFIG_CMD_CREATE = 0, 1, 6
_MOUNT_ATTRS = {_MS_RDONLY: 0x1, _MS_NOSUID: 0x2, _MS_NODEV: 0x4, _MS_NOEXEC: 0x8}
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_AT_FDCWD = -100
_layers_api = True  # False once the kernel said it has no fsopen or no ``lowerdir+``


def _fs_log(fd: int) -> str:
    """What the file system said about a failed ``fsconfig`` (its context's log)."""
    lines = []
    with contextlib.suppress(OSError):
        while msg := os.read(fd, 4096):
            lines.append(msg.decode(errors="replace").strip())
    return "; ".join(lines)


def _mount_overlay_by_layers(m: Mount, target: Path, flags: int) -> bool:
    """Mount overlay ``m`` through ``fsopen``/``fsconfig``, one ``lowerdir+`` per layer, and
    ``move_mount`` it onto ``target``. False (nothing mounted) where the kernel lacks the
    API or ``lowerdir+`` (the caller then shortens the option string instead); StoreError
    for any other refusal."""
    global _layers_api
    if not _layers_api:
        return False
    libc = _lib()
    fd = libc.syscall(_SYS_FSOPEN, b"overlay", 1)  # FSOPEN_CLOEXEC
    if fd < 0:
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EPERM):  # EPERM: a seccomp filter that denies it
            _layers_api = False
            return False
        raise StoreError(f"mounting overlay on {target}: {os.strerror(err)}")
    try:
        def config(cmd: int, key: str | None, value: str | None) -> int:
            rc = libc.syscall(_SYS_FSCONFIG, fd, cmd, key.encode() if key else None,
                              value.encode() if value else None, 0)
            return 0 if rc == 0 else ctypes.get_errno()

        settings: list[tuple[int, str | None, str | None]] = []
        for opt in m.options:
            key, eq, value = opt.partition("=")
            if key == "lowerdir":
                settings += [(_FSCONFIG_SET_STRING, "lowerdir+", d) for d in value.split(":")]
            elif opt == "ro":
                settings.append((_FSCONFIG_SET_FLAG, "ro", None))
            elif opt in _FLAG_OPTIONS or opt in _IGNORED_OPTIONS:
                continue  # mount attributes, set on the mount below
            else:
                settings.append((_FSCONFIG_SET_STRING, key, value) if eq
                                else (_FSCONFIG_SET_FLAG, key, None))
        for i, (cmd, name, setting) in enumerate(settings):
            err = config(cmd, name, setting)
            if err and i == 0 and name == "lowerdir+" and err == errno.EINVAL:
                _layers_api = False  # an overlay that predates lowerdir+
                return False
            if err:
                raise StoreError(f"mounting overlay on {target}: {name}: "
                                 f"{_fs_log(fd) or os.strerror(err)}")
        err = config(_FSCONFIG_CMD_CREATE, None, None)
        if err:
            raise StoreError(f"mounting overlay on {target}: {_fs_log(fd) or os.strerror(err)}")
        attrs = 0
        for ms_flag, attr in _MOUNT_ATTRS.items():
            if flags & ms_flag:
                attrs |= attr
        mfd = libc.syscall(_SYS_FSMOUNT, fd, 1, attrs)  # FSMOUNT_CLOEXEC
        if mfd < 0:
            raise StoreError(f"mounting overlay on {target}: "
                             f"{os.strerror(ctypes.get_errno())}")
        try:
            if libc.syscall(_SYS_MOVE_MOUNT, mfd, b"", _AT_FDCWD, os.fsencode(target),
                            _MOVE_MOUNT_F_EMPTY_PATH) != 0:
                raise StoreError(f"mounting overlay on {target}: "
                                 f"{os.strerror(ctypes.get_errno())}")
        finally:
            os.close(mfd)
    finally:
        os.close(fd)
    return True


def _locked_flags(target: Path) -> int:
    """ro/nosuid/nodev/noexec of the mount at ``target``, in a user namespace (where a
    remount may not clear them); 0 elsewhere."""
    from dockyard.rootless.idmap import in_user_namespace

    if not in_user_namespace():
        return 0
    try:
        st = os.statvfs(target)
    except OSError:
        return 0
    flags = 0
    for st_flag, ms_flag in ((os.ST_RDONLY, _MS_RDONLY), (os.ST_NOSUID, _MS_NOSUID),
                             (os.ST_NODEV, _MS_NODEV), (os.ST_NOEXEC, _MS_NOEXEC)):
        if st.f_flag & st_flag:
            flags |= ms_flag
    return flags


def unmount(target: Path) -> None:
    """Unmount ``target``; fall back to a lazy (detached) unmount if it is busy."""
    path = str(target).encode()
    if _lib().umount2(path, 0) == 0:
        return
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOENT):
        return  # not mounted
    if _lib().umount2(path, _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise StoreError(f"cannot unmount {target}: {os.strerror(err)}")


def make_root_dir(path: Path) -> None:
    """Create a snapshot's file system directory: it is ``/`` in a container, so it is
    0755 as BuildKit's, whatever the caller's umask."""
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)


def mount_all(mounts: list[Mount], target: Path) -> None:
    """Mount a list of mounts on ``target`` in order; on failure undo what was mounted."""
    done = 0
    try:
        for m in mounts:
            mount_one(m, target)
            done += 1
    except BaseException:
        for _ in range(done):
            unmount(target)
        raise


def _default_mount_parent(mounts: list[Mount]) -> Path:
    """``<root>/mnt`` for mounts of a snapshotter under ``<root>/snapshots``, else the tmpdir."""
    for m in mounts:
        paths = [m.source] + [o.partition("=")[2] for o in m.options if "=" in o]
        for p in paths:
            parts = Path(p.split(":")[0]).parts
            if "snapshots" in parts:
                idx = len(parts) - 1 - parts[::-1].index("snapshots")
                return Path(*parts[:idx]) / "mnt"
    return Path(tempfile.gettempdir())


@contextlib.contextmanager
def mounted(mounts: list[Mount], *, under: Path | None = None) -> Iterator[Path]:
    """Mount ``mounts`` at a fresh directory (under ``<root>/mnt/``), always unmount after."""
    parent = under if under is not None else _default_mount_parent(mounts)
    parent.mkdir(parents=True, exist_ok=True)
    target = Path(tempfile.mkdtemp(prefix="m", dir=parent))
    try:
        mount_all(mounts, target)
    except BaseException:
        os.rmdir(target)
        raise
    try:
        yield target
    finally:
        for _ in mounts:
            unmount(target)
        with contextlib.suppress(OSError):
            os.rmdir(target)


def _unescape_mountinfo(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal \ooo.
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def our_mounts(root: Path) -> list[Path]:
    """Mount points at or below ``root`` in this process's mount namespace, deepest first."""
    prefix = str(root.resolve()).rstrip("/")
    found: list[Path] = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split(" ")
            if len(fields) < 5:
                continue
            point = _unescape_mountinfo(fields[4])
            if point == prefix or point.startswith(prefix + "/"):
                found.append(Path(point))
    found.sort(key=lambda p: len(p.parts), reverse=True)
    return found


def cleanup_stale_mounts(root: Path) -> int:
    """Unmount everything dockyard left mounted under ``<root>/mnt`` (a killed process's).

    Returns how many mount points were unmounted. Only call this while no other dockyard
    process uses the same root (e.g. under the store's exclusive lock).
    """
    count = 0
    mnt = root / "mnt"
    if not mnt.exists():
        return 0
    for point in our_mounts(mnt):
        unmount(point)
        count += 1
    for child in mnt.iterdir():
        with contextlib.suppress(OSError):
            child.rmdir()
    return count
