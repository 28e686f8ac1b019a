"""Real tools read dockyard's archives: skopeo (oci-archive, docker-archive) and umoci."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dockyard.exporter import export as export_image
from dockyard.exporter import parse_output
from dockyard.store.db import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_exporter import BASE, make_image

NAME = "example.com/team/app:1.0"


@pytest.fixture
def built(tmp_path: Path) -> tuple[Store, str]:
    store = Store.open(tmp_path / "root")
    return store, make_image(store, BASE, names=(NAME,), cmd=["/bin/tool"])


def _skopeo(*args: str) -> dict[str, object]:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    res = subprocess.run(["skopeo", "inspect", *args], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    out: dict[str, object] = json.loads(res.stdout)
    return out


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_skopeo_reads_oci_archive(built: tuple[Store, str], tmp_path: Path,
                                  compression: str) -> None:
    store, image_id = built
    dest = tmp_path / "oci.tar"
    export_image(store, image_id,
                 parse_output(f"type=oci,dest={dest},compression={compression}"), [NAME])
    info = _skopeo(f"oci-archive:{dest}:1.0")
    assert info["Os"] == "linux" and info["Architecture"] == "amd64"
    layers = info["Layers"]
    assert isinstance(layers, list) and len(layers) == 2
    raw = _skopeo("--config", f"oci-archive:{dest}:1.0")
    assert raw["rootfs"] == json.loads(store.blobs.read_bytes(image_id))["rootfs"]


def test_skopeo_reads_docker_archive(built: tuple[Store, str], tmp_path: Path) -> None:
    store, image_id = built
    dest = tmp_path / "docker.tar"
    export_image(store, image_id, parse_output(f"type=docker,dest={dest}"), [NAME])
    info = _skopeo(f"docker-archive:{dest}")
    assert info["Digest"]
    assert info["Os"] == "linux"
    raw = _skopeo("--config", f"docker-archive:{dest}:{NAME}")
    config = raw["config"]
    assert isinstance(config, dict) and config["Cmd"] == ["/bin/tool"]


def test_umoci_unpacks_oci_layout(built: tuple[Store, str], tmp_path: Path) -> None:
    if shutil.which("umoci") is None:
        pytest.skip("umoci is not installed")
    if os.geteuid() != 0:
        pytest.skip("umoci unpack without --rootless needs root")
    store, image_id = built
    layout = tmp_path / "layout"
    export_image(store, image_id, parse_output(f"type=oci,dest={layout},tar=false"), [NAME])
    bundle = tmp_path / "bundle"
    res = subprocess.run(["umoci", "unpack", "--image", f"{layout}:1.0", str(bundle)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    rootfs = bundle / "rootfs"
    assert (rootfs / "app" / "new.txt").read_bytes() == b"new\n"
    assert not (rootfs / "app" / "old.txt").exists()
    assert sorted(p.name for p in (rootfs / "opt").iterdir()) == ["b"]
    assert os.readlink(rootfs / "link") == "/app"
    spec = json.loads((bundle / "config.json").read_text())
    assert spec["process"]["args"] == ["/bin/tool"]
