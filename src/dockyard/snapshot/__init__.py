"""snapshot room: copy-on-write root filesystems for build steps, and their diffs.

``open_snapshotter(root, "auto")`` picks the kernel overlayfs snapshotter when an overlay
mount works under ``root`` (probed once, remembered per kernel and filesystem), else the
copy-based ``native`` one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dockyard.errors import UsageError
from dockyard.snapshot._meta import MetaTable

if TYPE_CHECKING:
    from dockyard.snapshot.base import (
        Mount,
        Snapshotter,
        cleanup_stale_mounts,
        mounted,
        our_mounts,
    )
    from dockyard.snapshot.native import NativeSnapshotter
    from dockyard.snapshot.overlay import OverlaySnapshotter

# Imported on first use (PEP 562): the store imports ``dockyard.snapshot.topdir``, which
# runs this package first, and a build must not load the mount code (ctypes, subprocess) and
# the tar writer before its first cache lookup (issue 18). The copy-based snapshotter is
# only ever imported when used: with overlay it never is.
_LAZY = {
    "Mount": "base", "Snapshotter": "base", "cleanup_stale_mounts": "base",
    "mounted": "base", "our_mounts": "base",
    "NativeSnapshotter": "native", "OverlaySnapshotter": "overlay",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "Mount",
    "NativeSnapshotter",
    "OverlaySnapshotter",
    "Snapshotter",
    "cleanup_stale_mounts",
    "mounted",
    "open_snapshotter",
    "our_mounts",
    "overlay_supported",
]


def _probe_overlay(work: Path) -> str | None:
    """Mount a two-layer overlay under ``work``, write through it, delete through it.

    Returns None when it works, else why not.
    """
    from dockyard.snapshot.base import Mount, mount_one, unmount

    shutil.rmtree(work, ignore_errors=True)
    dirs = {n: work / n for n in ("lower", "upper", "work", "mnt")}
    for d in dirs.values():
        d.mkdir(parents=True)
    (dirs["lower"] / "gone").write_bytes(b"x")
    from dockyard.snapshot.overlay import _feature_options

    m = Mount(
        "overlay",
        "overlay",
        (f"lowerdir={dirs['lower']}", f"upperdir={dirs['upper']}", f"workdir={dirs['work']}",
         *_feature_options()),
    )
    try:
        mount_one(m, dirs["mnt"])
    except Exception as err:
        return str(err)
    try:
        (dirs["mnt"] / "new").write_bytes(b"y")
        (dirs["mnt"] / "gone").unlink()
        st = os.lstat(dirs["upper"] / "gone")
        if os.major(st.st_rdev) != 0 or os.minor(st.st_rdev) != 0:
            return "overlay did not record a whiteout"
    except OSError as err:
        return f"writing through overlay: {err}"
    finally:
        unmount(dirs["mnt"])
        shutil.rmtree(work, ignore_errors=True)
    return None


def overlay_supported(root: Path) -> tuple[bool, str]:
    """Whether overlay snapshots work under ``root`` (probed once, then cached).

    The cached answer is keyed by kernel release and the filesystem device of ``root``.
    Returns ``(ok, reason)``; ``reason`` explains a failure.
    """
    snaps = root / "snapshots"
    snaps.mkdir(parents=True, exist_ok=True)
    cache = snaps / "overlay-probe.json"
    from dockyard.rootless.idmap import in_user_namespace

    ident = {"kernel": os.uname().release, "dev": os.stat(snaps).st_dev, "euid": os.geteuid(),
             "userns": in_user_namespace()}
    try:
        saved = json.loads(cache.read_text())
        if saved.get("ident") == ident:
            return bool(saved["ok"]), str(saved.get("reason", ""))
    except (OSError, ValueError, KeyError):
        pass
    reason = _probe_overlay(snaps / "probe")
    ok = reason is None
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps({"ident": ident, "ok": ok, "reason": reason or ""}))
    os.replace(tmp, cache)
    return ok, reason or ""


def open_snapshotter(
    root: Path, kind: Literal["auto", "overlay", "native"]
) -> OverlaySnapshotter | NativeSnapshotter:
    """The snapshotter for store ``root``: ``overlay``, ``native``, or ``auto`` (probe)."""
    from dockyard.snapshot.overlay import OverlaySnapshotter

    if kind == "native":
        return _native(root)
    if kind == "overlay":
        ok, reason = overlay_supported(root)
        if not ok:
            raise UsageError(f"--snapshotter overlay: overlayfs does not work here: {reason}")
        return OverlaySnapshotter(root)
    if kind != "auto":
        raise UsageError(f"unknown snapshotter {kind!r} (want auto, overlay or native)")
    # Keep using whichever kind made the snapshots already there.
    recorded = MetaTable(root).recorded_driver()
    if recorded == "native":
        return _native(root)
    ok, _ = overlay_supported(root)
    return OverlaySnapshotter(root) if ok or recorded == "overlay" else _native(root)


def _native(root: Path) -> NativeSnapshotter:
    from dockyard.snapshot.native import NativeSnapshotter

    return NativeSnapshotter(root)
