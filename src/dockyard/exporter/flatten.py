"""An image's final filesystem: flattened into a directory, written as a tar, or one path
copied out (``dockyard cp``).

Every unpack goes through the one safe applier (``layers.apply.apply_layer``), which applies
whiteouts and never writes outside the root.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, cast

from dockyard._fs import remove_tree, walk
from dockyard.errors import LayerError, NotFoundError, UsageError
from dockyard.exporter._stored import StoredImage, open_layer
from dockyard.layers.apply import apply_layer
from dockyard.layers.rootpath import resolve_in_root as _resolve_in_root
from dockyard.layers.tarwriter import TarWriter, write_layer_from_dir
from dockyard.store.db import Store

__all__ = [
    "copy_from_image",
    "flatten_to_dir",
    "resolve_in_root",
    "scratch_dir",
    "write_rootfs_tar",
]

_WH = ".wh."
_OPQ = ".wh..wh..opq"


def flatten_to_dir(store: Store, image: StoredImage, root: Path) -> None:
    """Apply every layer of ``image`` in order onto ``root`` (created if missing)."""
    root.mkdir(parents=True, exist_ok=True)
    for layer in image.layers:
        with open_layer(store, layer.diff_id) as f:
            apply_layer(f, root)


@contextlib.contextmanager
def scratch_dir(store: Store) -> Iterator[Path]:
    """A temporary directory on the store's file system, always removed."""
    tmp_root = store.root / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="flatten-", dir=tmp_root)
    try:
        yield Path(tmp)
    finally:
        remove_tree(tmp, ignore_errors=True)  # any depth (shutil.rmtree recurses)


def write_rootfs_tar(
    store: Store, image: StoredImage, out: BinaryIO,
    platforms: Sequence[tuple[str, StoredImage]] = (),
) -> None:
    """Write the flattened filesystem of ``image`` as one tar stream; with ``platforms``,
    each platform's filesystem under its own directory (``linux_arm64/...``), as BuildKit."""
    with scratch_dir(store) as tmp:
        rootfs = tmp / "rootfs"
        if platforms:
            for plat, one in platforms:
                flatten_to_dir(store, one, rootfs / plat.replace("/", "_"))
        else:
            flatten_to_dir(store, image, rootfs)
        write_layer_from_dir(rootfs, out)


def resolve_in_root(root: Path, path: str, *, follow_last: bool) -> Path:
    """``path`` (absolute, inside the image) resolved under ``root`` the way the kernel would
    inside a chroot: symlinks are followed, but ``..`` and absolute links stay in ``root``."""
    try:
        return _resolve_in_root(root, path, follow_last=follow_last)
    except LayerError as err:
        raise UsageError(str(err)) from None


def _ancestors_and_self(path: str) -> set[str]:
    parts = path.split("/")
    return {"/".join(parts[:i]) for i in range(1, len(parts) + 1)}


def _keep(name: str, target: str, wanted: set[str]) -> bool:
    """Whether a layer entry can affect ``target``: an ancestor, the target, a descendant, or
    a whiteout / opaque marker of one of them."""
    name = name.strip("/")
    while name.startswith("./"):
        name = name[2:]
    if name in ("", "."):
        return False
    base = posixpath.basename(name)
    parent = posixpath.dirname(name)
    if base == _OPQ:
        return parent in wanted or parent.startswith(target + "/") or parent == ""
    if base.startswith(_WH):
        name = posixpath.join(parent, base[len(_WH):]) if parent else base[len(_WH):]
    return name in wanted or name.startswith(target + "/")


def _filtered_layer(f: BinaryIO, target: str, wanted: set[str]) -> BinaryIO | None:
    """A tar of only the entries of a layer that can affect ``target``, or None when the
    layer has a hardlink into the kept part from outside it (then we flatten everything)."""
    out = cast(BinaryIO, tempfile.SpooledTemporaryFile(max_size=64 << 20))  # noqa: SIM115
    kept_names: set[str] = set()
    try:
        with tarfile.open(fileobj=f, mode="r|*") as src, \
                tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as dst:
            for member in src:
                # symlinks and whiteouts anywhere stay, so a whiteout reached through a
                # symlink is refused here as in a full unpack
                if not (_keep(member.name, target, wanted) or member.issym()
                        or posixpath.basename(member.name.rstrip("/")).startswith(_WH)):
                    continue
                if member.islnk() and member.linkname.strip("/") not in kept_names:
                    out.close()
                    return None
                kept_names.add(member.name.strip("/"))
                dst.addfile(member, src.extractfile(member) if member.isreg() else None)
    except tarfile.TarError as err:
        out.close()
        raise LayerError(f"corrupt layer: {err}") from err
    out.seek(0)
    return out


def _unpack_path(store: Store, image: StoredImage, path: str, root: Path,
                 follow_last: bool = False) -> None:
    """Unpack into ``root`` enough of the image to read ``path`` correctly.

    Only entries on the way to ``path`` and below it are applied. If a directory on the way
    turns out to be a symlink (which may point anywhere in the image), or ``path`` itself is
    one that is to be followed (``cp -L``), or a hardlink reaches outside the selection, the
    whole image is flattened instead."""
    target = path.strip("/")
    if not target:
        flatten_to_dir(store, image, root)
        return
    wanted = _ancestors_and_self(target)
    root.mkdir(parents=True, exist_ok=True)
    for layer in image.layers:
        with open_layer(store, layer.diff_id) as f:
            filtered = _filtered_layer(f, target, wanted)
        if filtered is None:
            break
        with filtered:
            apply_layer(filtered, root)
    else:
        parts = target.split("/")
        on_the_way = [root.joinpath(*parts[:i]) for i in range(1, len(parts))]
        if follow_last:
            on_the_way.append(root.joinpath(*parts))
        if not any(p.is_symlink() for p in on_the_way):
            return
    shutil.rmtree(root)
    flatten_to_dir(store, image, root)


def _tar_tree(src: Path, arcname: str, out: BinaryIO) -> None:
    writer = TarWriter(out)
    writer.add_path(src, arcname)
    if src.is_dir() and not src.is_symlink():
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames.sort()
            rel = os.path.relpath(dirpath, src)
            prefix = arcname if rel == "." else f"{arcname}/{rel}"
            for name in sorted(dirnames + filenames):
                writer.add_path(Path(dirpath) / name, f"{prefix}/{name}")
    writer.close()


def _copy_entry(src: Path, dest: Path, warn: Callable[[str], None]) -> None:
    if src.is_symlink():
        _replace(dest)
        os.symlink(os.readlink(src), dest)
    elif src.is_dir():
        _copy_tree(src, dest, warn)
    elif stat.S_ISREG(src.lstat().st_mode):
        _replace(dest)
        shutil.copy2(src, dest)
    else:
        _replace(dest)
        _make_node(src, dest, warn)


def _make_node(src: Path, dest: Path, warn: Callable[[str], None]) -> None:
    """A device node or FIFO of the image, made anew at ``dest`` (as ``docker cp`` extracts
    one) and never opened; device nodes only by root, else skipped with a warning. Sockets
    are skipped."""
    from dockyard.rootless.idmap import in_user_namespace

    st = src.lstat()
    mode = st.st_mode
    # rootless (dockyard's user namespace): root there makes no device node, and the files
    # it writes for the caller stay the caller's
    real_root = os.geteuid() == 0 and not in_user_namespace()
    if stat.S_ISFIFO(mode):
        os.mkfifo(dest, stat.S_IMODE(mode))
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        if not real_root:
            warn(f"skipped device node {src.name}: creating it needs root")
            return
        os.mknod(dest, mode, st.st_rdev)
    else:
        warn(f"skipped {src.name}: not a regular file, directory, symlink, device or FIFO")
        return
    if real_root:
        os.lchown(dest, st.st_uid, st.st_gid)
    os.chmod(dest, stat.S_IMODE(mode))
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _replace(dest: Path) -> None:
    """Make room for a new entry at ``dest``: what is there goes (as ``docker cp`` does),
    except a directory, which only a directory may merge into."""
    try:
        st = dest.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"cannot overwrite directory {dest} with a non-directory")
    dest.unlink()


def _copy_tree(src: Path, dest: Path, warn: Callable[[str], None]) -> None:
    """Copy directory ``src`` to ``dest``, merging into what is there and replacing files
    and symlinks of the same name (no recursion, no symlink followed)."""
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        _replace(dest)
    dest.mkdir(exist_ok=True)
    shutil.copystat(src, dest, follow_symlinks=False)
    for dirpath, dirnames, filenames in walk(src):
        rel = os.path.relpath(dirpath, src)
        out = dest if rel == "." else dest / rel
        for name in dirnames:
            s, d = Path(dirpath, name), out / name
            if s.is_symlink():
                _copy_entry(s, d, warn)
                continue
            if d.is_symlink() or (d.exists() and not d.is_dir()):
                d.unlink()
            d.mkdir(exist_ok=True)
        for name in filenames:
            _copy_entry(Path(dirpath, name), out / name, warn)
    # directory times last, children first, as the copy changed them
    for dirpath, _dirnames, _filenames in walk(src, topdown=False):
        rel = os.path.relpath(dirpath, src)
        with contextlib.suppress(OSError):
            shutil.copystat(dirpath, dest if rel == "." else dest / rel, follow_symlinks=False)


def copy_from_image(
    store: Store, image: StoredImage, path: str, dest: str, *, stdout: BinaryIO | None = None,
    follow_link: bool = False, warn: Callable[[str], None] | None = None,
) -> None:
    """``docker cp`` out of an image: ``path`` (absolute in the image) to ``dest``.

    ``dest`` of ``-`` writes a tar of the path (its base name as the top entry) to
    ``stdout``. A file goes to ``dest`` (or inside it, if it is a directory); a directory
    to a missing ``dest`` becomes ``dest``, to an existing directory goes inside it (its
    contents only when ``path`` ends with ``/.``). A device node or FIFO of the image is
    never opened: it is made anew as a node (root), or skipped with a ``warn``ing."""
    warn = warn or (lambda message: None)
    if not path.startswith("/"):
        path = "/" + path
    contents_only = path.endswith("/.")
    want_dir = path.endswith("/")
    with scratch_dir(store) as tmp:
        root = tmp / "rootfs"
        follow = follow_link or contents_only or want_dir
        _unpack_path(store, image, posixpath.normpath(path), root, follow_last=follow)
        src = resolve_in_root(root, path, follow_last=follow)
        if not os.path.lexists(src):
            raise NotFoundError(f"could not find the file {path} in the image")
        if want_dir and not src.is_dir():
            raise UsageError(f"{path}: not a directory")
        # the name asked for, not the link's target's (docker cp -L keeps it too)
        name = posixpath.basename(posixpath.normpath(path)) if src != root else "/"
        if dest == "-":
            if stdout is None:
                raise UsageError("cp: no stdout to write the tar to")
            _tar_tree(src, "." if name == "/" or contents_only else name, stdout)
            return
        target = Path(dest)
        src_is_dir = src.is_dir() and not src.is_symlink()
        if not src_is_dir:
            if dest.endswith("/") and not target.is_dir():
                raise UsageError(f"destination directory {dest} must exist")
            if target.is_dir():
                target = target / name
            elif not target.parent.is_dir():
                raise UsageError(f"destination directory {target.parent} must exist")
            if os.path.lexists(target) and not target.is_dir():
                target.unlink()
            _copy_entry(src, target, warn)
            return
        if target.exists() and not target.is_dir():
            raise UsageError(f"cannot copy a directory to a file: {dest}")
        if target.is_dir() and not contents_only and name != "/":
            target = target / name
        if not target.parent.is_dir():
            raise UsageError(f"destination directory {target.parent} must exist")
        try:
            _copy_tree(src, target, warn)
        except OSError as err:
            raise LayerError(f"copy to {dest} failed: {err.strerror} "
                             f"({err.filename or dest})") from err
