"""docs/rootless.md's Docker form, run for real: dockyard inside a container that dockerd
20.10 (the reference daemon of this suite) starts without privileges.

The image is the suite's busybox base; dockyard, its python and crun come from the host,
bound read-only (``/usr``, and ``/lib``, ``/lib64`` for the loader), so the test needs no
image with python in it. The security options are exactly the documented ones; the
negative case (Docker's own seccomp profile) must fail in one line that points at the docs.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import harness

from rootless_support import readable_venv

SECCOMP = Path("/usr/share/containers/seccomp.json")  # podman's profile (golang-github-containers-common)
# The documented options (docs/rootless.md, "In an unprivileged container").
DOCUMENTED = ["--security-opt", f"seccomp={SECCOMP}", "--security-opt", "systempaths=unconfined",
              "--security-opt", "apparmor=unconfined"]
DOCKERFILE = """\
FROM busybox:latest AS build
RUN mkdir /out && echo built-in-a-container > /out/msg && chown 1000:1000 /out/msg
FROM busybox:latest
COPY --from=build /out/msg /msg
CMD ["sh", "-c", "cat /msg; stat -c %u:%g /msg"]
"""


@pytest.fixture(scope="module")
def work(conformance_env: harness.Environment) -> Iterator[tuple[harness.Environment, Path, Path]]:
    if not SECCOMP.exists():
        pytest.skip(f"no {SECCOMP} (apt-get install golang-github-containers-common)")
    if Path("/usr/lib64").is_symlink() or not Path("/lib").is_symlink():
        pytest.skip("the host is not merged-/usr: its python cannot be bound into busybox")
    base = conformance_env.ensure_base(harness.BUSYBOX_REF)
    venv = readable_venv()
    d = Path(tempfile.mkdtemp(prefix="dockyard-in-docker-", dir="/var/tmp"))
    try:
        shutil.copy(base.archive, d / "busybox.tar")
        (d / "ctx").mkdir()
        (d / "ctx" / "Dockerfile").write_text(DOCKERFILE)
        yield conformance_env, d, venv
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _docker_run(env: harness.Environment, d: Path, venv: Path, opts: list[str],
                script: str) -> tuple[int, str]:
    """``docker run`` of ``script``: its status and output (stderr merged, in order)."""
    proc = env.daemon.docker(
        "run", "--rm", *opts,
        "-v", "/usr:/usr:ro", "-v", "/usr/lib:/lib:ro", "-v", "/usr/lib64:/lib64:ro",
        "-v", f"{venv.parent}:{venv.parent}:ro", "-v", f"{d}:/w",
        harness.BUSYBOX_REF, "sh", "-c", script, check=False)
    return proc.returncode, proc.stdout


def test_the_documented_docker_form_builds(
        work: tuple[harness.Environment, Path, Path]) -> None:
    env, d, venv = work
    dy = f"{venv}/bin/dockyard --root /w/store"
    script = ("set -e; grep CapEff /proc/self/status; "
              f"{dy} load -i /w/busybox.tar >/dev/null; "
              f"{dy} info --format json > /w/info.json; "
              f"{dy} build -q -t ct /w/ctx; {dy} run ct")
    rc, out = _docker_run(env, d, venv, DOCUMENTED, script)
    assert rc == 0, out
    lines = out.splitlines()
    caps = int(next(ln for ln in lines if ln.startswith("CapEff:")).split()[1], 16)
    assert not caps >> 21 & 1, "the container has no CAP_SYS_ADMIN"
    # the ids the Dockerfile asked for (the container's ids are mapped onto themselves)
    assert lines[-2:] == ["built-in-a-container", "1000:1000"]
    info = json.loads((d / "info.json").read_text())
    assert info["rootless"]["rootless"] is True
    assert info["rootless"]["mapping_kind"] == "identity"
    assert info["snapshotter"]["name"] == "overlay"


def test_docker_default_seccomp_says_so_in_one_line(
        work: tuple[harness.Environment, Path, Path]) -> None:
    env, d, venv = work
    rc, out = _docker_run(env, d, venv, ["--security-opt", "systempaths=unconfined"],
                               f"{venv}/bin/dockyard --root /w/store2 build /w/ctx")
    assert rc != 0
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1, out
    assert "cannot create a user namespace" in lines[0]
    assert "docs/rootless.md" in lines[0]
