"""ADD's archive handling: detect a (compressed) tar the way Docker does, and unpack it safely.

Docker treats a local ADD source as an archive when it decompresses (gzip, bzip2, xz, zstd or
plain) and its first tar header reads; anything else is copied as a plain file. Entries
keep the ownership recorded in the archive (``--chown`` only applies to the destination
directory), ``.wh.`` whiteouts delete, and no entry can write outside the destination.
``dockyard.layers.apply.apply_layer`` does the unpacking when that module exists; the
extractor here is the stand-in until then.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import importlib
import lzma
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from dockyard.context._paths import root_path, root_path_nofollow
from dockyard.context.dockerignore import go_clean
from dockyard.errors import ContextError, LayerError

__all__ = ["extract_archive", "is_archive", "open_decompressed"]

_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"


def _sniff(head: bytes) -> str:
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    return "none"


def open_decompressed(f: BinaryIO) -> IO[bytes]:
    """Wrap a seekable binary file in the decompressor its magic bytes call for."""
    head = f.read(6)
    f.seek(0)
    kind = _sniff(head)
    if kind == "gzip":
        try:
            from isal import igzip  # faster than zlib; optional at runtime

            return cast(IO[bytes], igzip.GzipFile(fileobj=f, mode="rb"))  # type: ignore[no-untyped-call]
        except ImportError:
            return cast(IO[bytes], gzip.GzipFile(fileobj=f, mode="rb"))
    if kind == "bzip2":
        return bz2.BZ2File(f, "rb")
    if kind == "xz":
        return lzma.LZMAFile(f, "rb")
    if kind == "zstd":
        import zstandard

        return cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(f))
    return f


_READ_ERRORS = (
    tarfile.TarError,
    EOFError,
    OSError,
    zlib.error,
    lzma.LZMAError,
    ValueError,
)


def is_archive(path: Path) -> bool:
    """Docker's isArchivePath: decompresses and has a readable first tar header."""
    try:
        with (
            open(path, "rb") as raw,
            open_decompressed(raw) as stream,
            tarfile.open(fileobj=stream, mode="r|") as tar,
        ):
            return tar.next() is not None
    except _READ_ERRORS:
        return False
    except Exception as err:  # zstandard raises its own ZstdError
        if type(err).__name__ == "ZstdError":
            return False
        raise


def _apply_layer_function() -> Any:
    try:
        module = importlib.import_module("dockyard.layers.apply")
    except ImportError:
        return None
    return getattr(module, "apply_layer", None)


def extract_archive(archive: Path, dest: Path) -> None:
    """Unpack ``archive`` (any compression) into the existing directory ``dest``, safely."""
    apply_layer = _apply_layer_function()
    try:
        with open(archive, "rb") as raw, open_decompressed(raw) as stream:
            if apply_layer is not None:
                apply_layer(stream, dest, overlay_whiteouts=False)
            else:
                _extract(cast(BinaryIO, stream), dest)
    except LayerError as err:
        raise ContextError(
            f"failed to extract {archive.name}: corrupt or unsafe archive: {err}"
        ) from None
    except ContextError:
        raise
    except _READ_ERRORS as err:
        raise ContextError(
            f"failed to extract {archive.name}: corrupt or truncated archive ({err})"
        ) from None
    except Exception as err:
        if type(err).__name__ == "ZstdError":
            raise ContextError(
                f"failed to extract {archive.name}: corrupt archive ({err})"
            ) from None
        raise


def _remove(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        path.unlink()


def _ensure_dirs(root: Path, rel: str) -> Path:
    """Resolve directory ``rel`` inside ``root``, creating what is missing (0755)."""
    current = root
    for comp in [c for c in rel.split("/") if c]:
        nxt = root_path(root, os.path.relpath(current / comp, root))
        if not nxt.exists():
            nxt.mkdir(mode=0o755, parents=True)
        elif not nxt.is_dir():
            raise ContextError(f"cannot extract below {rel!r}: not a directory")
        current = nxt
    return current


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while True:
        member = tar.next()
        if member is None:
            return
        yield member


def _extract(stream: BinaryIO, dest: Path) -> None:
    """Stand-in safe applier: root-scoped paths, whiteouts, directory times last."""
    is_root = os.geteuid() == 0
    dir_times: list[tuple[Path, int]] = []
    created: set[str] = set()
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in _members(tar):
            name = go_clean("/" + member.name).lstrip("/")
            if not name or name == ".":
                continue
            parent_rel, _, base = name.rpartition("/")
            parent = _ensure_dirs(dest, parent_rel)
            if base == _OPAQUE:
                for child in list(parent.iterdir()):
                    if os.path.relpath(child, dest) not in created:
                        _remove(child)
                continue
            if base.startswith(_WHITEOUT):
                _remove(parent / base[len(_WHITEOUT) :])
                continue
            target = parent / base
            created.add(os.path.relpath(target, dest))
            if member.isdir():
                if target.is_symlink() or (target.exists() and not target.is_dir()):
                    _remove(target)
                if not target.exists():
                    target.mkdir(mode=0o700)
                dir_times.append((target, int(member.mtime)))
            else:
                _remove(target)
                if member.issym():
                    os.symlink(member.linkname, target)
                elif member.islnk():
                    link_rel = go_clean("/" + member.linkname).lstrip("/")
                    source = root_path_nofollow(dest, link_rel)
                    if not source.exists() or source.is_dir():
                        raise ContextError(f"bad hardlink {member.name} -> {member.linkname}")
                    os.link(source, target)
                    continue
                elif member.isfile():
                    fileobj = tar.extractfile(member)
                    assert fileobj is not None
                    with open(target, "wb") as out:
                        shutil.copyfileobj(fileobj, out, 1 << 20)
                elif member.ischr() or member.isblk():
                    if not is_root:
                        continue
                    kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
                    os.mknod(target, kind | 0o600, os.makedev(member.devmajor, member.devminor))
                elif member.isfifo():
                    os.mkfifo(target)
                else:
                    continue
            if is_root:
                with contextlib.suppress(OSError):
                    os.lchown(target, member.uid, member.gid)
            if not member.issym():
                os.chmod(target, member.mode & 0o7777)
                if not member.isdir():
                    os.utime(target, (member.mtime, member.mtime))
            for key, value in member.pax_headers.items():
                if key.startswith("SCHILY.xattr."):
                    with contextlib.suppress(OSError):
                        os.setxattr(
                            target,
                            key[len("SCHILY.xattr.") :],
                            value.encode("utf-8", "surrogateescape"),
                            follow_symlinks=False,
                        )
    for path, mtime in reversed(dir_times):
        os.utime(path, (mtime, mtime))
