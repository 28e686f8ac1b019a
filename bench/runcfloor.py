"""The runtime's floor for a chain of RUN steps: each RUN of a Dockerfile as one bare
`runc run` (or `crun run`: `--runtime`, default the runtime dockyard chooses here, in the
cgroups dockyard makes for it on a hybrid host) on one overlay mount, nothing else (no snapshot per step, no diff, no commit,
no cache, no bundle made per step): what any builder that runs its steps in runc pays.

    sudo .venv/bin/python bench/runcfloor.py DOCKERFILE ROOTFS.tar [--runs N]

The spec is dockyard's own (`executor.spec.oci_spec` with the same system mounts, seccomp
profile, capabilities, masked paths and device rules as a sandboxed RUN step) on a `nodev`
bind of the overlay, as `Executor.run` makes it; only the command changes from step to step.
Prints one line per run (total seconds for all steps) and, on the last line, the median
total as `floor_s=`. bench/run.sh's layers100 case compares dockyard and BuildKit with it
(issue 18: the cold build's target against what the runtime alone takes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run_lines(dockerfile: Path) -> list[str]:
    """The shell-form RUN commands of ``dockerfile`` (one line each, as the cases write them)."""
    out = []
    for line in dockerfile.read_text().splitlines():
        if line.startswith("RUN "):
            out.append(line[4:].strip())
    return out


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


RUNTIME: str | None = None  # --runtime


def one_run(commands: list[str], rootfs_tar: Path, work: Path) -> float:
    """Seconds for every command, each one `runc run` on a fresh overlay over the rootfs."""
    from dockyard.executor import v1cgroups
    from dockyard.executor.run import _host_resolv_conf
    from dockyard.executor.runtime import detect_runtime
    from dockyard.executor.spec import (
        RunSpec,
        UserIds,
        hosts_file_content,
        oci_spec,
        system_mounts,
    )

    runtime = detect_runtime(RUNTIME)
    lower, upper, wd, merged, view, bundle, state = (
        work / n for n in ("lower", "upper", "work", "merged", "view", "bundle", "state"))
    for d in (lower, upper, wd, merged, view, bundle, state):
        d.mkdir(parents=True, exist_ok=True)
    if not any(lower.iterdir()):
        _sh("tar", "-xf", str(rootfs_tar), "-C", str(lower))
    _sh("mount", "-t", "overlay", "overlay", "-o",
        f"lowerdir={lower},upperdir={upper},workdir={wd}", str(merged))
    try:
        _sh("mount", "--bind", str(merged), str(view))
        _sh("mount", "-o", "remount,bind,nodev", str(view))
        resolv, hosts = bundle / "resolv.conf", bundle / "hosts"
        resolv.write_text(_host_resolv_conf())
        hosts.write_text(hosts_file_content("dockyard", ()))
        mounts = system_mounts(privileged=False, resolv_conf=resolv, hosts=hosts,
                               rootless=False, own_network=False)
        total = 0.0
        for i, command in enumerate(commands):
            spec = RunSpec(args=("/bin/sh", "-c", command),
                           env=("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                                "/sbin:/bin",),
                           cwd="/", user="", network="host", mounts=())
            config = oci_spec(view, spec, UserIds(0, 0, ()), mounts, cgroups=runtime.cgroups,
                              pids_cgroup=runtime.own_cgroups,
                              device_barrier=runtime.device_barrier, hostname=runtime.hostname)
            (bundle / "config.json").write_text(json.dumps(config))
            cid = f"floor-{os.getpid()}-{i}"
            t0 = time.perf_counter()
            # crun on a hybrid host: in the cgroups dockyard makes for it (timed, as they
            # are part of what a step costs with this runtime)
            cgroups = v1cgroups.create(cid) if runtime.own_cgroups else []
            argv = [*runtime.run_argv_prefix(cgroups), "--root", str(state), "run",
                    "--bundle", str(bundle), cid]
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                  check=False)
            v1cgroups.remove(cgroups)
            total += time.perf_counter() - t0
            if proc.returncode != 0:
                raise SystemExit(f"runc failed on {command!r}: {proc.stdout!r} {proc.stderr!r}")
        return total
    finally:
        subprocess.run(["umount", str(view)], check=False, capture_output=True)
        subprocess.run(["umount", str(merged)], check=False, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dockerfile", type=Path)
    parser.add_argument("rootfs_tar", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--runtime", default=None,
                        help="crun or runc (default: the one dockyard chooses here)")
    args = parser.parse_args()
    global RUNTIME
    RUNTIME = args.runtime
    commands = _run_lines(args.dockerfile)
    totals = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="dy-runcfloor-", dir="/var/tmp") as tmp:
            subprocess.run(["sync"], check=False)
            totals.append(one_run(commands, args.rootfs_tar, Path(tmp)))
        print(f"{RUNTIME or 'runtime'} alone, {len(commands)} RUN steps: {totals[-1]:.2f} s",
              file=sys.stderr)
    print(f"floor_s={statistics.median(totals):.3f}")


if __name__ == "__main__":
    main()
