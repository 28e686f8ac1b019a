"""``dockyard cache ls|du|prune`` on a store filled by real builds (root, a runtime)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bases import busybox_rootfs_tar, need_runtime
from dockyard.image.oci import chain_ids
from dockyard.snapshot import open_snapshotter
from dockyard.store import Store

pytestmark = pytest.mark.skipif(need_runtime() is not None, reason=str(need_runtime()))

DOCKERFILE = """\
FROM busybox
COPY app.txt /app.txt
RUN cp /app.txt /copy.txt && echo ran >> /copy.txt
CMD ["cat", "/copy.txt"]
"""


def dy(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dockyard.cli.main", "--root", str(root), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )


def ok(root: Path, *args: str) -> str:
    proc = dy(root, *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def build(root: Path, ctx: Path, content: str) -> str:
    (ctx / "app.txt").write_text(content)
    proc = dy(root, "build", "-t", "app:1", "--progress", "plain", str(ctx))
    assert proc.returncode == 0, proc.stderr
    return proc.stderr + proc.stdout


def ls(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in ok(root, "cache", "ls", "--format", "json").splitlines()]


def committed(root: Path) -> set[str]:
    return set(open_snapshotter(root / "snapshots", "auto").committed())


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    ok(root, "import", str(busybox_rootfs_tar()), "busybox:latest")
    return root


def test_prune_default_all_and_images_survive(root: Path, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    build(root, ctx, "one\n")
    first = {r["Key"]: r for r in ls(root)}
    assert {r["Kind"] for r in first.values()} == {"COPY", "RUN"}
    assert all(r["InUse"] and r["Shared"] for r in first.values())
    build(root, ctx, "two\n")
    assert ok(root, "run", "app:1") == "two\nran\n"
    records = ls(root)
    assert len(records) == 4
    stale = [r for r in records if r["Key"] in first]
    assert stale and not any(r["InUse"] for r in stale)  # app:1 moved on
    # ... but the first image is still in the store, untagged, and holds their layers
    assert all(r["Shared"] for r in stale)
    assert json.loads(ok(root, "cache", "du", "--format", "json"))["Reclaimable"] == 0
    store = Store.open(root)
    (dangling,) = [i for i in store.list_images() if not i.names]
    ok(root, "rmi", dangling.id)
    stale = [r for r in ls(root) if r["Key"] in first]
    assert not any(r["Shared"] for r in stale)

    du = json.loads(ok(root, "cache", "du", "--format", "json"))
    assert du["Records"] == 4
    assert du["Reclaimable"] == sum(r["Size"] for r in stale) > 0
    assert "Total:" in ok(root, "cache", "du")

    # Nothing is older than a day, and everything fits in 1GB: only nothing goes.
    assert "records: 0" in ok(root, "cache", "prune", "--older-than", "24h")
    assert "records: 0" in ok(root, "cache", "prune", "--keep-storage", "1GB")
    assert len(ls(root)) == 4

    stale_chains = {r["ChainID"] for r in stale}
    stale_layers = {r["DiffID"] for r in stale}
    assert stale_chains <= committed(root)
    out = ok(root, "cache", "prune")
    assert "Deleted build cache records: 2" in out
    assert {r["Key"] for r in ls(root)}.isdisjoint(first)
    assert not any(store.layer_present(d) for d in stale_layers)
    assert stale_chains.isdisjoint(committed(root))
    image = store.get_image("app:1")
    image_chains = set(chain_ids(list(store.read_config(image).diff_ids)))
    assert image_chains <= committed(root)  # the image's own snapshots stay
    # the current build is still fully cached, and the image still runs
    again = build(root, ctx, "two\n")
    assert "CACHE MISS" not in again and again.count("CACHED") >= 2
    assert ok(root, "run", "app:1") == "two\nran\n"

    out = ok(root, "cache", "prune", "--all")
    assert "Deleted build cache records: 2" in out
    assert ls(root) == []
    assert ok(root, "run", "app:1") == "two\nran\n"  # tagged images always stay
    assert all(store.layer_present(d) for d in store.read_config(image).diff_ids)
    rebuilt = build(root, ctx, "two\n")
    assert "CACHE MISS" in rebuilt  # the cache really is gone
    assert ok(root, "run", "app:1") == "two\nran\n"
    store.close()


def test_prune_waits_for_a_running_container(root: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "dockyard.cli.main", "--root", str(root), "run", "busybox",
         "sh", "-c", "echo started; exec sleep 30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"started\n"
        busy = dy(root, "cache", "prune", "--all", "--timeout", "0.3")
        assert busy.returncode == 1
        assert "a build is using it" in busy.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert "Deleted build cache records" in ok(root, "cache", "prune", "--all")
    assert ok(root, "run", "busybox", "echo", "fine") == "fine\n"
