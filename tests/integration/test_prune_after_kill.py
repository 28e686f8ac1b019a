"""A build killed with SIGKILL (no chance to clean up) leaves mounts and active snapshots;
`dockyard prune` (under the store's exclusive lock) removes them and the store keeps working."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_build_support import dockyard_cli, fresh_store, template_store, write_tree

from bases import need_runtime
from dockyard.snapshot import open_snapshotter
from dockyard.snapshot.base import our_mounts


@pytest.fixture
def root(tmp_path: Path) -> Path:
    reason = need_runtime()
    if reason:
        pytest.skip(reason)
    template_store()
    return fresh_store(tmp_path / "store")


def test_prune_cleans_up_after_sigkill(root: Path, tmp_path: Path) -> None:
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox:latest\nRUN echo started && sleep 31\n",
    })
    proc = subprocess.Popen(
        [*dockyard_cli(), "--root", str(root), "build", "--progress", "plain", str(ctx)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for raw in proc.stdout:
        if b"started" in raw and b"RUN" not in raw:
            break
        assert time.monotonic() < deadline, "the RUN never started"
    # SIGKILL the whole session: dockyard, runc and the container get no chance to clean up
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)
    assert our_mounts(root / "mnt"), "a killed build should have left its mount behind"
    snapshotter = open_snapshotter(root / "snapshots", "auto")
    assert snapshotter.uncommitted(), "a killed build should have left an active snapshot"

    subprocess.run([*dockyard_cli(), "--root", str(root), "prune"], check=True,
                   capture_output=True, timeout=120)
    assert our_mounts(root / "mnt") == []
    assert open_snapshotter(root / "snapshots", "auto").uncommitted() == []
    runc_root = root / "run" / "runtime" / "runc"
    if runc_root.is_dir():
        listed = subprocess.run(["runc", "--root", str(runc_root), "list", "-q"],
                                capture_output=True, text=True, check=False)
        assert listed.stdout.split() == [], "a container of the killed build is still there"
    time.sleep(0.2)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "sleep 31" not in ps, "the killed build's RUN process is still running"

    done = subprocess.run(
        [*dockyard_cli(), "--root", str(root), "build", "--progress", "plain", "-t", "ok",
         str(write_tree(tmp_path / "ctx2", {"Dockerfile": "FROM busybox:latest\nRUN true\n"}))],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
