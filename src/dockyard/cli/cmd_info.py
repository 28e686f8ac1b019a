"""``dockyard info``: the OCI runtime, cgroup mode, the sandbox and limits RUN steps get on
this host, the snapshotter and the store root."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="output format (default: text)")
    parser.add_argument("--runtime", default=None,
                        help="OCI runtime to check (name or path; default: $DOCKYARD_RUNTIME, "
                             "else crun, then runc)")
    parser.add_argument("--snapshotter", choices=("auto", "overlay", "native"), default="auto",
                        help="snapshotter to check (default: auto)")


def run(args: argparse.Namespace) -> int:
    from dockyard import info as system_info

    result = system_info(runtime=args.runtime, snapshotter=args.snapshotter, root=args.root)
    if args.format == "json":
        print(json.dumps(result.to_dict(), indent=2, sort_keys=True))
        return 0
    rt = result.runtime
    if rt.error is not None:
        rt_line = f"none ({rt.error})"
    else:
        extra = f" {' '.join(rt.args)}" if rt.args else ""
        rt_line = f"{rt.name} {rt.version} ({rt.path}{extra})"
        if rt.cgroup2_hidden:
            rt_line += ", run with the host's cgroup2 mount hidden (hybrid host)"
    sn = result.snapshotter
    sn_line = sn.name or f"none ({sn.error})"
    if sn.overlay_error:
        sn_line += f" (overlay unavailable: {sn.overlay_error})"
    print(f"Runtime:      {rt_line}")
    print(f"Cgroups:      {result.cgroup_mode}")
    sandbox = result.sandbox
    if sandbox is not None:
        print(f"Sandbox:      {sandbox.capabilities}, {sandbox.seccomp}, masked /proc and "
              "/sys paths")
        print(f"Devices:      {sandbox.devices}")
        print(f"Pids limit:   {sandbox.pids}")
    print(f"Snapshotter:  {sn_line}")
    rl = result.rootless
    if rl.rootless and rl.id_mapping:
        print(f"Rootless:     yes, user namespace ({rl.mapping_kind} ids: {rl.id_mapping})")
    elif rl.rootless:
        print(f"Rootless:     no user namespace here ({rl.error})")
    else:
        print("Rootless:     no (root)")
    net = rl.network if rl.error is None or not rl.id_mapping else f"none ({rl.error})"
    print(f"Network:      {net} (networked RUN steps; --network none always works)")
    print(f"Store root:   {result.root}")
    native = [p.platform for p in result.platforms if p.native]
    emulated = [f"{p.platform} ({p.emulator})" for p in result.platforms if not p.native]
    print(f"Platforms:    {', '.join(native)}" + (" (native)" if native else ""))
    print(f"Emulated:     {', '.join(emulated) if emulated else 'none'}"
          + ("" if emulated else " (apt-get install qemu-user-static binfmt-support)"))
    return 0
