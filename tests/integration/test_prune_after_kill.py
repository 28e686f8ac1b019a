"""A build killed with SIGKILL (no chance to clean up) leaves mounts and active snapshots;
`dockyard prune` (under the store's exclusive lock) removes them and the store keeps working."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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


# A process that mounts a view under <store>/mnt as dockyard does (mounted(), under the
# store's shared build lock), prints the mount point and holds it until its stdin closes.
_MOUNTER = """
import sys
from pathlib import Path
from dockyard.snapshot.base import Mount, mounted
from dockyard.store.db import Store

store = Store.open(Path(sys.argv[1]))
with store.build_lock(), mounted([Mount("bind", sys.argv[2], ("bind", "ro"))],
                                 under=store.root / "mnt") as point:
    print(point, flush=True)
    sys.stdin.read()
"""


def _mounter(root: Path, source: Path) -> tuple[subprocess.Popen[str], Path]:
    source.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", _MOUNTER, str(root), str(source)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    point = Path(proc.stdout.readline().strip())
    assert point in our_mounts(root / "mnt")
    return proc, point


def _build(root: Path, ctx: Path, n: int) -> None:
    """A build of ``ctx`` that takes the full path (a new ``--build-arg``: no up-to-date
    check record answers it; a no-op rebuild answered by one sweeps nothing)."""
    done = subprocess.run([*dockyard_cli(), "--root", str(root), "build", "--progress", "plain",
                           "--build-arg", f"N={n}", str(ctx)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_next_build_unmounts_any_mount_a_killed_process_left(root: Path,
                                                                 tmp_path: Path) -> None:
    """A mount no container of the killed process ran on (a COPY --from view, a snapshot
    mounted before its RUN started) goes with the next build on an idle store; while another
    dockyard process uses the store, its mounts are left alone."""
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM busybox:latest\nRUN true\n"})
    killed, left = _mounter(root, tmp_path / "a")
    killed.kill()
    killed.wait()
    live, used = _mounter(root, tmp_path / "b")
    try:
        _build(root, ctx, 1)
        assert used in our_mounts(root / "mnt"), "a running process's mount was unmounted"
    finally:
        assert live.stdin is not None
        live.stdin.close()
        live.wait(timeout=60)
    assert left in our_mounts(root / "mnt")
    _build(root, ctx, 2)
    assert our_mounts(root / "mnt") == []
    assert not left.exists() and not used.exists()


def test_file_systems_mounted_on_the_store_stay(tmp_path: Path) -> None:
    """The store's directory may be a file system of its own (a volume for
    /var/lib/dockyard): builds, prune and store check --repair never unmount it (prune and
    store check unmounted every mount below the store, the store itself included)."""
    reason = need_runtime()
    if reason:
        pytest.skip(reason)
    vol = tmp_path / "vol"
    vol.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(vol)], check=True)
    try:
        subprocess.run(["cp", "-a", f"{template_store()}/.", str(vol)], check=True)
        ctx = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM busybox:latest\nRUN true\n"})
        _build(vol, ctx, 1)
        for args in (["prune"], ["store", "check", "--repair"], ["prune", "-a"]):
            done = subprocess.run([*dockyard_cli(), "--root", str(vol), *args],
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stdout + done.stderr
            assert our_mounts(tmp_path) == [vol], f"dockyard {' '.join(args)} unmounted it"
        _build(vol, ctx, 2)
        assert our_mounts(tmp_path) == [vol]
    finally:
        subprocess.run(["umount", "-l", str(vol)], check=False, capture_output=True)
