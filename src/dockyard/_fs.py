"""File-system helpers that must never fail on what a build can make: removing and measuring
trees of any depth, and turning a full disk into :class:`~dockyard.errors.NoSpaceError`.

``shutil.rmtree`` and ``os.walk`` recurse in Python 3.11: a tree 2,000 levels deep (one
``mkdir -p`` in a RUN, or a crafted layer) raises RecursionError and leaves the tree behind,
and its absolute paths are longer than PATH_MAX. :func:`remove_tree` works with directory file
descriptors and no recursion; past :data:`_MAX_OPEN` open levels it moves the deeper part up
to the top directory (a rename on the same file system) and removes it from there, so it
needs neither deep paths nor many descriptors.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from typing import Any

from dockyard.errors import LayerError, NoSpaceError

__all__ = [
    "as_no_space", "is_no_space", "no_space", "remove_tree", "sync_filesystem", "tree_size",
    "walk",
]

_MAX_OPEN = 64  # directory descriptors held at once while removing or measuring a tree
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def is_no_space(err: BaseException) -> bool:
    """Whether ``err`` (or what it was raised from) says the disk or a quota is full."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, NoSpaceError):
            return True
        if isinstance(cur, OSError) and cur.errno in _NO_SPACE:
            return True
        # sqlite3.OperationalError / DatabaseError, without importing sqlite3
        if type(cur).__module__ == "sqlite3" and "disk is full" in str(cur):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


@contextlib.contextmanager
def no_space(what: str, path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a full disk met inside the block into ``NoSpaceError(what, path)``."""
    try:
        yield
    except NoSpaceError:
        raise
    except Exception as err:
        if is_no_space(err):
            raise NoSpaceError(what, os.fspath(path)) from err
        raise


_STORE_PARTS = {
    "blobs": "a blob",
    "tmp": "a temp file",
    "snapshots": "a snapshot",
    "cache": "a cache mount",
    "mnt": "a mount point",
    "run": "a container bundle",
    "quick": "an up-to-date record",
}


def as_no_space(err: BaseException, store_root: str | None = None) -> NoSpaceError | None:
    """``err`` as a NoSpaceError if it says the disk is full (else None), saying what was
    being written from the file it names (or the store database, for SQLite's error)."""
    if not is_no_space(err):
        return None
    cur: BaseException | None = err
    while cur is not None:
        if isinstance(cur, NoSpaceError):
            return cur
        cur = cur.__cause__ or cur.__context__
    path = None
    cur = err
    while cur is not None and path is None:
        if isinstance(cur, OSError) and cur.filename:
            path = os.fsdecode(cur.filename)
        cur = cur.__cause__ or cur.__context__
    if path is None:
        if store_root is None:
            return NoSpaceError("a file", "unknown path")
        return NoSpaceError("the store database", os.path.join(store_root, "dockyard.db"))
    what = "a file"
    if store_root is not None:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(store_root))
        if not rel.startswith(".."):
            first = rel.split(os.sep, 1)[0]
            if first.startswith("statcache.db"):
                what = "the stat cache"
            elif first.startswith("dockyard.db"):
                what = "the store database"
            else:
                what = _STORE_PARTS.get(first, "the store")
    return NoSpaceError(what, path)


def _blocks(st: os.stat_result) -> int:
    return st.st_blocks * 512 if st.st_blocks else st.st_size


def _open_dir(name: str, dir_fd: int | None) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:
        # A directory a layer made 0000 (only matters without CAP_DAC_OVERRIDE).
        os.chmod(name, 0o700, dir_fd=dir_fd, follow_symlinks=False)
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def remove_tree(path: str | os.PathLike[str], *, ignore_errors: bool = False) -> int:
    """Delete ``path`` (a file, a symlink or a directory tree of any depth); returns the bytes
    it held (allocated blocks). A missing ``path`` is no error. Symlinks are never followed.
    With ``ignore_errors`` what cannot be removed stays and the rest goes."""
    p = os.fspath(path).rstrip("/") or "/"
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return 0
    except OSError:
        if ignore_errors:
            return 0
        raise
    if not stat.S_ISDIR(st.st_mode):
        try:
            os.unlink(p)
        except FileNotFoundError:
            return 0
        except OSError:
            if ignore_errors:
                return 0
            raise
        return _blocks(st)
    parent, name = os.path.split(p)
    parent_fd = os.open(parent or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return _remove_dir(parent_fd, name, ignore_errors)
    finally:
        os.close(parent_fd)


class _Frame:
    __slots__ = ("entries", "fd", "name", "parent_fd")

    def __init__(self, fd: int, parent_fd: int, name: str) -> None:
        self.fd = fd
        self.parent_fd = parent_fd
        self.name = name
        self.entries: Iterator[os.DirEntry[str]] = os.scandir(fd)


def _remove_dir(parent_fd: int, name: str, ignore_errors: bool) -> int:
    freed = 0
    try:
        top_fd = _open_dir(name, parent_fd)
    except FileNotFoundError:
        return 0
    except OSError:
        if ignore_errors:
            return 0
        raise
    stack = [_Frame(top_fd, parent_fd, name)]
    spilled: list[str] = []
    spill_no = 0
    try:
        while stack:
            frame = stack[-1]
            entry = next(frame.entries, None)
            if entry is None and len(stack) == 1 and spilled:
                # The parts moved up from deep down: remove them from the top.
                spill = spilled.pop()
                try:
                    stack.append(_Frame(_open_dir(spill, top_fd), top_fd, spill))
                except OSError:
                    if not ignore_errors:
                        raise
                continue
            if entry is None:
                stack.pop()
                with contextlib.suppress(OSError):
                    frame.entries.close()  # type: ignore[attr-defined]
                os.close(frame.fd)
                try:
                    freed += _blocks(os.lstat(frame.name, dir_fd=frame.parent_fd))
                    os.rmdir(frame.name, dir_fd=frame.parent_fd)
                except FileNotFoundError:
                    pass
                except OSError:
                    if not ignore_errors:
                        raise
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    if len(stack) < _MAX_OPEN:
                        stack.append(_Frame(_open_dir(entry.name, frame.fd), frame.fd,
                                            entry.name))
                        continue
                    while True:
                        spill_no += 1
                        spill = f".dockyard-rm-{os.getpid()}-{spill_no}"
                        try:
                            os.stat(spill, dir_fd=top_fd, follow_symlinks=False)
                        except FileNotFoundError:
                            break
                    os.rename(entry.name, spill, src_dir_fd=frame.fd, dst_dir_fd=top_fd)
                    spilled.append(spill)
                    continue
                freed += _blocks(entry.stat(follow_symlinks=False))
                os.unlink(entry.name, dir_fd=frame.fd)
            except FileNotFoundError:
                continue
            except OSError:
                if not ignore_errors:
                    raise
    finally:
        for frame in stack:
            with contextlib.suppress(OSError):
                frame.entries.close()  # type: ignore[attr-defined]
            os.close(frame.fd)
    return freed


def tree_size(path: str | os.PathLike[str]) -> int:
    """Bytes allocated to ``path`` and everything below it (0 if it is missing). Entries more
    than 64 directory levels below ``path`` are not counted."""
    p = os.fspath(path)
    try:
        st = os.lstat(p)
    except OSError:
        return 0
    total = _blocks(st)
    if not stat.S_ISDIR(st.st_mode):
        return total
    try:
        fd = os.open(p, _DIR_FLAGS)
    except OSError:
        return total
    stack: list[tuple[int, Iterator[os.DirEntry[str]]]] = [(fd, os.scandir(fd))]
    try:
        while stack:
            dir_fd, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                os.close(dir_fd)
                continue
            try:
                total += _blocks(entry.stat(follow_symlinks=False))
                if entry.is_dir(follow_symlinks=False) and len(stack) < _MAX_OPEN:
                    child = os.open(entry.name, _DIR_FLAGS, dir_fd=dir_fd)
                    stack.append((child, os.scandir(child)))
            except OSError:
                continue
    finally:
        for dir_fd, _ in stack:
            os.close(dir_fd)
    return total



def walk(
    top: str | os.PathLike[str], *, topdown: bool = True, max_depth: int = 0,
) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk`` without recursion (3.11's recurses): ``(dirpath, dirnames, filenames)``,
    symlinks to directories listed in ``dirnames`` and not followed, unreadable directories
    skipped. With ``topdown`` the caller may prune ``dirnames``. A directory more than
    ``max_depth`` levels below ``top`` is a LayerError (0: no limit)."""
    root = os.fspath(top)
    # (path, depth, dirnames once listed, filenames)
    stack: list[tuple[str, int, list[str] | None, list[str]]] = [(root, 0, None, [])]
    while stack:
        path, depth, dirnames, filenames = stack.pop()
        if dirnames is None:
            if max_depth and depth > max_depth:
                rel = os.path.relpath(path, root)
                raise LayerError(f"a path more than {max_depth} levels deep: {rel[:60]!r}... "
                                 "(raise it with --max-path-depth or DOCKYARD_MAX_PATH_DEPTH)")
            dirnames, filenames = [], []
            try:
                with os.scandir(path) as it:
                    for entry in it:
                        try:
                            is_dir = entry.is_dir()
                        except OSError:
                            is_dir = False
                        (dirnames if is_dir else filenames).append(entry.name)
            except OSError:
                continue
            if topdown:
                yield path, dirnames, filenames
            else:
                stack.append((path, depth, dirnames, filenames))
            for name in reversed(dirnames):
                child = os.path.join(path, name)
                if not os.path.islink(child):
                    stack.append((child, depth + 1, None, []))
            continue
        yield path, dirnames, filenames


def sync_filesystem(path: str | os.PathLike[str]) -> None:
    """``syncfs(2)`` the file system holding ``path``: every file written to it so far is on
    disk when this returns (about 0.1 ms when nothing is dirty). Raises OSError when the
    kernel reports a write-back error (EIO, ENOSPC) for that file system."""
    global _syncfs
    if _syncfs is None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        _syncfs = libc.syncfs
        _syncfs.argtypes = [ctypes.c_int]
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _syncfs(fd) != 0:
            import ctypes

            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), os.fspath(path))
    finally:
        os.close(fd)


_syncfs: Any = None
