"""Helpers for scenario setup.py scripts: make context files with exact modes and links.

A scenario's setup.py runs with the context directory as its working directory (and as
``sys.argv[1]``). Git keeps neither modes (beyond +x), empty directories, nor hardlinks,
so contexts are made here instead of being checked in.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def write(path: str, content: str | bytes = "", mode: int = 0o644) -> Path:
    """Write a file (parents 0755), then chmod it exactly."""
    p = Path(path)
    for parent in reversed(p.parents[:-1] if p.parents else []):
        if not parent.exists():
            parent.mkdir()
            os.chmod(parent, 0o755)
    p.write_bytes(content.encode() if isinstance(content, str) else content)
    os.chmod(p, mode)
    return p


def files(spec: Mapping[str, str | bytes]) -> None:
    """Write several 0644 files."""
    for path, content in spec.items():
        write(path, content)


def mkdir(path: str, mode: int = 0o755) -> Path:
    """Make a directory (and 0755 parents), chmod it exactly."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    for parent in p.parents[:-1]:
        os.chmod(parent, 0o755)
    os.chmod(p, mode)
    return p


def symlink(target: str, path: str) -> None:
    """Create a symlink at ``path`` pointing to ``target`` (not resolved)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


def hardlink(existing: str, path: str) -> None:
    """Create a hardlink ``path`` to the existing file."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    os.link(existing, path)


def make_tar(path: str, entries: Iterable[tuple[str, str, Any]], mode: str = "w") -> None:
    """Write a tar archive (``mode`` "w", "w:gz", "w:bz2" or "w:xz") from entries.

    Each entry is (kind, name, data): ("file", name, (content, mode, uid, gid)),
    ("dir", name, (mode, uid, gid)), ("symlink", name, target), ("hardlink", name, target or (target, mode, uid, gid)).
    mtimes are fixed so the archive is reproducible (gzip's header time too: the context is
    made once per builder, and the two must be byte for byte the same).
    """
    if mode == "w:gz":
        plain = io.BytesIO()
        _write_tar(plain, entries, "w")
        with gzip.GzipFile(path, "wb", mtime=0) as gz:
            gz.write(plain.getvalue())
        return
    _write_tar(path, entries, mode)


def _write_tar(target: Any, entries: Iterable[tuple[str, str, Any]], mode: str) -> None:
    kwargs = {"fileobj": target} if not isinstance(target, str) else {"name": target}
    with tarfile.open(mode=mode, format=tarfile.PAX_FORMAT, **kwargs) as tar:  # type: ignore[call-overload]
        for kind, name, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1700000000
            if kind == "file":
                content, fmode, uid, gid = data
                raw = content.encode() if isinstance(content, str) else content
                info.size, info.mode, info.uid, info.gid = len(raw), fmode, uid, gid
                tar.addfile(info, io.BytesIO(raw))
                continue
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode, info.uid, info.gid = data
            elif kind == "symlink":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, str(data), 0o777
            elif kind == "hardlink":
                # As tar(1) writes them: the link header repeats the target's metadata
                # (appliers chmod/chown the shared inode from it). (target, mode, uid, gid)
                # sets the header explicitly.
                target, *meta = data if isinstance(data, tuple) else (data,)
                info.type, info.linkname = tarfile.LNKTYPE, str(target)
                first = next((m for m in tar.getmembers() if m.name == target), None)
                if meta:
                    info.mode, info.uid, info.gid = meta
                elif first is not None:
                    info.mode, info.uid, info.gid = first.mode, first.uid, first.gid
            else:
                raise ValueError(kind)
            tar.addfile(info)
