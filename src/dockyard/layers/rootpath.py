"""Resolving a path inside a root directory the way the kernel would inside a chroot.

The one implementation behind every "this path, as the image sees it" lookup outside the tar
applier (which has stricter rules of its own, see ``layers/apply.py``): COPY destinations and
sources, USER lookups in /etc/passwd, ``dockyard cp``. Symlinks are followed, but ``..`` stops
at the root and an absolute link target restarts from it, so the result never leaves ``root``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from dockyard.errors import LayerError

__all__ = ["MAX_SYMLINKS", "resolve_in_root"]

MAX_SYMLINKS = 40  # as Linux's MAXSYMLINKS


def resolve_in_root(root: Path, path: str, *, follow_last: bool = True) -> Path:
    """``path`` (absolute or relative to ``root``) resolved below ``root``.

    Components that do not exist are kept as written (the result need not exist). With
    ``follow_last=False`` a symlink in the last component is not followed. Raises LayerError
    after :data:`MAX_SYMLINKS` symlinks (a loop).
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    parts.reverse()  # a stack: the next component is at the end
    resolved: list[str] = []
    hops = 0
    base = os.fspath(root).rstrip("/")  # strings, not a Path per component (hot: RUN steps)
    while parts:
        name = parts.pop()
        if name == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = "/".join((base, *resolved, name))
        try:
            st = os.lstat(candidate)
        except OSError:
            resolved.append(name)
            continue
        if stat.S_ISLNK(st.st_mode) and (parts or follow_last):
            hops += 1
            if hops > MAX_SYMLINKS:
                raise LayerError(f"too many levels of symbolic links resolving {path!r}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts.extend(reversed([p for p in target.split("/") if p not in ("", ".")]))
            continue
        resolved.append(name)
    return root.joinpath(*resolved)
