"""The sandbox of a RUN step, dockyard against BuildKit (issue 11): the capability sets,
seccomp mode, no_new_privs and the flags of every mount, read inside a RUN by both builders.

They must match, or the difference must be one listed in ``KNOWN`` below, which mirrors the
table in docs/security.md (each with its reason). The table of what was compared is printed
(``-s``) and written to ``$CONFORMANCE_WORK/sandbox-diff.txt``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

STATUS_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")

DOCKERFILE = """\
FROM busybox:latest
RUN mkdir /out && grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' \
/proc/self/status > /out/status && awk '{print $5, $6}' /proc/self/mountinfo > /out/mounts
"""

# mount point -> why it differs (docs/security.md, "Compared with BuildKit")
KNOWN: dict[str, str] = {
    "/": "dockyard adds nodev: where no device cgroup applies it is the barrier",
    "/dev": "dockyard adds nodev, and binds the default devices from the host",
    "/dev/null": "a bind of the host's node (the /dev tmpfs is nodev)",
    "/dev/zero": "a bind of the host's node (the /dev tmpfs is nodev)",
    "/dev/full": "a bind of the host's node (the /dev tmpfs is nodev)",
    "/dev/random": "a bind of the host's node (the /dev tmpfs is nodev)",
    "/dev/urandom": "a bind of the host's node (the /dev tmpfs is nodev)",
    "/dev/tty": "a bind of the host's node (the /dev tmpfs is nodev)",
    "/proc/keys": "masked with the bound /dev/null, which carries noexec",
    "/proc/timer_list": "masked with the bound /dev/null, which carries noexec",
    "/proc/bus": "crun (where used) remounts read-only /proc paths without nosuid,nodev,noexec",
    "/proc/fs": "crun (where used) remounts read-only /proc paths without nosuid,nodev,noexec",
    "/proc/irq": "crun (where used) remounts read-only /proc paths without nosuid,nodev,noexec",
    "/proc/sys": "crun (where used) remounts read-only /proc paths without nosuid,nodev,noexec",
    "/proc/acpi": "masked with an empty read-only tmpfs by both; flags as the runtime sets them",
    "/sys/firmware": "masked with an empty read-only tmpfs by both; flags as the runtime sets them",
}
KNOWN_PREFIXES = {
    "/sys/fs/cgroup": "BuildKit mounts the container's cgroups read-only; dockyard mounts no "
                      "cgroup file system (no cgroup namespace, often no cgroup manager)",
}


def _read_outputs(status: str, mounts: str) -> tuple[dict[str, str], dict[str, str]]:
    fields = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    flags = {}
    for line in mounts.splitlines():
        point, _, opts = line.partition(" ")
        flags[point] = ",".join(sorted(opts.split(",")))
    return fields, flags


def _buildkit(env: harness.Environment, ctx: Path) -> tuple[str, str]:
    d = env.daemon
    d.docker("build", "--network", "host", "--no-cache", "-t", "dy-sandbox-probe", str(ctx))
    d.docker("rm", "-f", "dy-sandbox-probe", check=False)
    d.docker("create", "--name", "dy-sandbox-probe", "dy-sandbox-probe", "true")
    try:
        out = ctx / "bk"
        d.docker("cp", "dy-sandbox-probe:/out", str(out))
    finally:
        d.docker("rm", "-f", "dy-sandbox-probe", check=False)
    return (out / "status").read_text(), (out / "mounts").read_text()


def _dockyard(env: harness.Environment, ctx: Path) -> tuple[str, str]:
    cand = env.candidate
    assert isinstance(cand, harness.DockyardBuilder)
    cli = [*cand.cli, "--root", str(cand.root)]
    subprocess.run([*cli, "build", "--no-cache", "-t", "dy-sandbox-probe", str(ctx)],
                   check=True, capture_output=True, text=True)
    out = ctx / "dy"
    subprocess.run([*cli, "cp", "dy-sandbox-probe:/out", str(out)], check=True,
                   capture_output=True, text=True)
    return (out / "status").read_text(), (out / "mounts").read_text()


def _why(point: str) -> str | None:
    if point in KNOWN:
        return KNOWN[point]
    for prefix, reason in KNOWN_PREFIXES.items():
        if point == prefix or point.startswith(prefix + "/"):
            return reason
    return None


def test_sandbox_matches_buildkit(conformance_env: harness.Environment) -> None:
    if not isinstance(conformance_env.candidate, harness.DockyardBuilder):
        pytest.skip("compares dockyard against BuildKit")
    ctx = Path(tempfile.mkdtemp(prefix="sandbox-diff-", dir=conformance_env.session_dir))
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    bk_status, bk_mounts = _read_outputs(*_buildkit(conformance_env, ctx))
    dy_status, dy_mounts = _read_outputs(*_dockyard(conformance_env, ctx))

    rows = ["| what | BuildKit | dockyard | note |", "|---|---|---|---|"]
    unexplained = []
    for name in STATUS_FIELDS:
        same = bk_status.get(name) == dy_status.get(name)
        rows.append(f"| {name} | {bk_status.get(name)} | {dy_status.get(name)} | "
                    f"{'same' if same else 'DIFFERENT'} |")
        if not same:
            unexplained.append(name)
    for point in sorted(set(bk_mounts) | set(dy_mounts)):
        bk, dy = bk_mounts.get(point, "-"), dy_mounts.get(point, "-")
        if bk == dy:
            rows.append(f"| {point} | {bk} | {dy} | same |")
            continue
        reason = _why(point)
        rows.append(f"| {point} | {bk} | {dy} | {reason or 'UNEXPLAINED'} |")
        if reason is None:
            unexplained.append(point)
    table = "\n".join(rows)
    print("\n" + table)
    (harness.WORK / "sandbox-diff.txt").write_text(table + "\n")
    assert not unexplained, f"differences not in docs/security.md: {unexplained}\n{table}"
