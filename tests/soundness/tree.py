"""Build contexts on disk: writing entries with fixed times, and the digest of a whole tree.

Every entry of a context carries the mtime :data:`T0`, and mutations put it back after they
touched an entry (and its parent directory). So times never differ between two contexts with
the same content, and a content edit keeps size *and* mtime: the adversarial case for a cache
that trusts ``stat``. Only what a mutation touches is re-timed, so the ctimes of untouched
entries stay as they were and the stat caches under test keep their chance to be wrong.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterable
from pathlib import Path

T0 = 1_600_000_000  # 2020-09-13: every context entry's mtime
T0_NS = T0 * 1_000_000_000


def retime(ctx: Path, *rels: str) -> None:
    """Put the mtime of ``rels`` (relative to ``ctx``) and of their parent directories back
    to :data:`T0`, without following symlinks. Missing entries are skipped."""
    seen: set[Path] = set()
    for rel in rels:
        p = ctx / rel
        chain = [p, *[q for q in p.parents if q == ctx or ctx in q.parents]]
        for q in chain:
            if q in seen:
                continue
            seen.add(q)
            # only where the time moved: a utime is a ctime change the caches would see
            if os.path.lexists(q) and os.lstat(q).st_mtime_ns != T0_NS:
                os.utime(q, ns=(T0_NS, T0_NS), follow_symlinks=False)


def write(ctx: Path, rel: str, content: str | bytes, mode: int = 0o644) -> None:
    """Write a regular file (parents 0755), exact mode, mtime T0."""
    p = ctx / rel
    for parent in reversed(p.relative_to(ctx).parents[:-1]):
        d = ctx / parent
        if not d.exists():
            d.mkdir()
            os.chmod(d, 0o755)
    data = content.encode() if isinstance(content, str) else content
    if p.is_symlink():
        p.unlink()
    p.write_bytes(data)
    os.chmod(p, mode)
    retime(ctx, rel)


def overwrite_in_place(ctx: Path, rel: str, content: str | bytes) -> None:
    """Rewrite a file's bytes in place (same inode) and put its mtime back: size and mtime
    stay as they were when ``content`` has the old length; only the ctime moves."""
    p = ctx / rel
    data = content.encode() if isinstance(content, str) else content
    st = p.stat()
    with open(p, "r+b") as f:
        f.write(data)
        f.truncate(len(data))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


def symlink(ctx: Path, rel: str, target: str) -> None:
    """Make ``rel`` a symlink to ``target`` (replacing what is there)."""
    p = ctx / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(p):
        p.unlink()
    os.symlink(target, p)
    retime(ctx, rel)


def hardlink(ctx: Path, existing: str, rel: str) -> None:
    """Make ``rel`` another name of ``existing``."""
    p = ctx / rel
    if os.path.lexists(p):
        p.unlink()
    os.link(ctx / existing, p)
    retime(ctx, rel)


def mkdir(ctx: Path, rel: str, mode: int = 0o755) -> None:
    p = ctx / rel
    p.mkdir(parents=True, exist_ok=True)
    os.chmod(p, mode)
    retime(ctx, rel)


def tar_bytes(entries: Iterable[tuple[str, str | bytes, int]], compress: bool = False) -> bytes:
    """A reproducible tar (gzip when ``compress``) of ``(name, content, mode)`` files; a name
    ending in ``/`` is a directory."""
    raw = io.BytesIO()
    mode = "w:gz" if compress else "w"
    fileobj: io.BytesIO = raw
    if compress:
        import gzip

        gz = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0)
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _add(tar, entries)
        gz.close()
        return raw.getvalue()
    with tarfile.open(fileobj=fileobj, mode=mode, format=tarfile.PAX_FORMAT) as tar:
        _add(tar, entries)
    return raw.getvalue()


def _add(tar: tarfile.TarFile, entries: Iterable[tuple[str, str | bytes, int]]) -> None:
    for name, content, mode in entries:
        info = tarfile.TarInfo(name.rstrip("/"))
        info.mtime = T0
        info.mode = mode
        if name.endswith("/"):
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
            continue
        data = content.encode() if isinstance(content, str) else content
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def tree_digest(ctx: Path) -> str:
    """The digest of everything a build could read from ``ctx``: per entry its path, type,
    mode, owner, size, mtime, content, link target, xattrs and which entries share an inode."""
    h = hashlib.sha256()
    inodes: dict[tuple[int, int], str] = {}
    for rel, st in walk(ctx):
        p = ctx / rel if rel else ctx
        fields = [rel, oct(st.st_mode), str(st.st_uid), str(st.st_gid), str(st.st_mtime_ns)]
        if stat.S_ISREG(st.st_mode):
            fields += [str(st.st_size), hashlib.sha256(p.read_bytes()).hexdigest()]
            ino = (st.st_dev, st.st_ino)
            fields.append("link:" + inodes.setdefault(ino, rel))
        elif stat.S_ISLNK(st.st_mode):
            fields.append(os.readlink(p))
        fields += [f"{k}={v.hex()}" for k, v in xattrs(p)]
        h.update("\0".join(fields).encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def walk(ctx: Path) -> list[tuple[str, os.stat_result]]:
    """Every entry below and including ``ctx`` (``""``), sorted, not following symlinks."""
    out: list[tuple[str, os.stat_result]] = [("", os.lstat(ctx))]
    for dirpath, dirnames, filenames in os.walk(ctx):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted([*dirnames, *filenames]):
            p = base / name
            out.append((str(p.relative_to(ctx)), os.lstat(p)))
    out.sort(key=lambda e: e[0])
    return out


def xattrs(p: Path) -> list[tuple[str, bytes]]:
    """The xattrs of ``p`` (not following a symlink), sorted."""
    try:
        names = os.listxattr(p, follow_symlinks=False)
    except OSError:
        return []
    return sorted((n, os.getxattr(p, n, follow_symlinks=False)) for n in names)
