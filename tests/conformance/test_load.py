"""``dockyard build --load`` into a real dockerd (the harness's private 20.10 daemon), and
the image it got is the image dockyard built."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import harness
import pytest

pytestmark = pytest.mark.conformance


def test_build_load_into_dockerd(conformance_env: harness.Environment, tmp_path: Path) -> None:
    env = conformance_env
    if not isinstance(env.candidate, harness.DockyardBuilder):
        pytest.skip("--load is dockyard's")
    builder = env.candidate
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {harness.BUSYBOX_REF}\nRUN echo loaded > /hello\n"
                                    'CMD ["cat", "/hello"]\n')
    tag = f"dockyard-load-test:{os.getpid()}"
    client_env = {**os.environ, **env.daemon.env}
    proc = subprocess.run([*builder.cli, "--root", str(builder.root), "build", "--load",
                           "-t", tag, "--iidfile", str(tmp_path / "iid"), str(ctx)],
                          env=client_env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert f"Loaded image: {tag}" in proc.stderr
    try:
        inspected = json.loads(env.daemon.docker("image", "inspect", tag).stdout)[0]
        # docker's image id is the config digest, as dockyard's
        assert inspected["Id"] == (tmp_path / "iid").read_text()
        # one definition of size, as docker: uncompressed (docker counts the unpacked files'
        # bytes; dockyard the uncompressed layer tars, their headers and padding too: a few
        # percent more, never the compressed size)
        ours = subprocess.run([*builder.cli, "--root", str(builder.root), "inspect", "-f",
                               "{{.Size}}", tag], capture_output=True, text=True, check=True)
        assert inspected["Size"] <= int(ours.stdout) <= inspected["Size"] * 1.1
        ran = env.daemon.docker("run", "--rm", "--network", "none", tag, check=False)
        if ran.returncode == 0:  # a daemon without a bridge may still refuse to run
            assert ran.stdout == "loaded\n"
    finally:
        env.daemon.docker("rmi", "-f", tag, check=False)


def test_load_with_no_daemon_fails_before_building(conformance_env: harness.Environment,
                                                   tmp_path: Path) -> None:
    builder = conformance_env.candidate
    if not isinstance(builder, harness.DockyardBuilder):
        pytest.skip("--load is dockyard's")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {harness.BUSYBOX_REF}\nRUN echo never\n")
    proc = subprocess.run(
        [*builder.cli, "--root", str(builder.root), "build", "--load", str(ctx)],
        env={**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/none.sock"},
        capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "no Docker daemon answers" in proc.stderr and "#1" not in proc.stderr
