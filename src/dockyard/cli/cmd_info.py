"""``dockyard info``: the OCI runtime, cgroup mode, snapshotter and store root in use."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="output format (default: text)")
    parser.add_argument("--runtime", default=None,
                        help="OCI runtime to check (name or path; default: $DOCKYARD_RUNTIME, "
                             "else crun, then runc)")
    parser.add_argument("--snapshotter", choices=("auto", "overlay", "native"), default="auto",
                        help="snapshotter to check (default: auto)")


def collect(root: Path, runtime: str | None, snapshotter: str) -> dict[str, Any]:
    """What ``dockyard info`` reports, as a JSON-able dict (errors become ``error`` fields)."""
    from dockyard.errors import DockyardError
    from dockyard.executor.runtime import cgroup_mode, detect_runtime
    from dockyard.snapshot import open_snapshotter, overlay_supported

    info: dict[str, Any] = {"root": str(root), "cgroup_mode": cgroup_mode()}
    try:
        rt = detect_runtime(runtime, cache_dir=root / "run")
        info["runtime"] = {"name": rt.name, "path": rt.path, "version": rt.version,
                           "args": list(rt.global_args),
                           "cgroup2_hidden": bool(rt.wrapper)}
    except DockyardError as err:
        info["runtime"] = {"error": str(err)}
    try:
        sn = open_snapshotter(root, snapshotter)  # type: ignore[arg-type]
        snap: dict[str, Any] = {"name": sn.name}
        if snapshotter == "auto" and sn.name == "native":
            snap["overlay_error"] = overlay_supported(root)[1]
        info["snapshotter"] = snap
    except DockyardError as err:
        info["snapshotter"] = {"error": str(err)}
    return info


def run(args: argparse.Namespace) -> int:
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    info = collect(root, args.runtime, args.snapshotter)
    if args.format == "json":
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    rt = info["runtime"]
    if "error" in rt:
        rt_line = f"none ({rt['error']})"
    else:
        extra = f" {' '.join(rt['args'])}" if rt["args"] else ""
        rt_line = f"{rt['name']} {rt['version']} ({rt['path']}{extra})"
        if rt.get("cgroup2_hidden"):
            rt_line += ", run with the host's cgroup2 mount hidden (hybrid host)"
    sn = info["snapshotter"]
    sn_line = sn.get("name") or f"none ({sn['error']})"
    if sn.get("overlay_error"):
        sn_line += f" (overlay unavailable: {sn['overlay_error']})"
    print(f"Runtime:      {rt_line}")
    print(f"Cgroups:      {info['cgroup_mode']}")
    print(f"Snapshotter:  {sn_line}")
    print(f"Store root:   {info['root']}")
    return 0
