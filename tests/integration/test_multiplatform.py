"""Multi-platform builds for real (root, a runtime, QEMU in binfmt_misc): the cross-compiling
example as one index, an emulated RUN, the index in every output and in a registry, and the
build-platform stages shared by the second platform."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from test_build_support import dockyard_cli, write_tree
from test_examples_support import cli, copy_example, make_bases, needs_examples
from test_registry_support import Registry, needs_registry, registry

import dockyard
from bases import busybox_rootfs_tar, need_emulation, need_runtime
from dockyard.errors import ExecutorError
from dockyard.store import Store

__all__ = ["registry"]  # the fixture

pytestmark = [
    pytest.mark.skipif(need_runtime() is not None, reason=need_runtime() or ""),
    pytest.mark.skipif(need_emulation("arm64") is not None,
                       reason=need_emulation("arm64") or ""),
]

BOTH = "linux/amd64,linux/arm64"


def dy(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*dockyard_cli(), "--root", str(root), *args],
                          capture_output=True, text=True, timeout=600, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"dockyard {' '.join(args)}: {proc.returncode}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def busybox_both(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store whose busybox:latest is amd64 and arm64 (the test bases of tests/bases.py)."""
    root = tmp_path_factory.mktemp("mp") / "store"
    dy(root, "import", str(busybox_rootfs_tar()), "bb:amd64")
    dy(root, "import", "--platform", "linux/arm64", str(busybox_rootfs_tar(arch="arm64")),
       "bb:arm64")
    dy(root, "manifest", "create", "busybox:latest", "bb:amd64", "bb:arm64")
    dy(root, "rmi", "bb:amd64", "bb:arm64")
    return root


def fresh(busybox_both: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "store"
    subprocess.run(["cp", "-a", str(busybox_both), str(dest)], check=True)
    return dest


EMULATED = """\
FROM busybox
ARG TARGETARCH
RUN uname -m > /machine && echo "$TARGETARCH" > /targetarch
"""


def test_an_emulated_run_step_runs_as_aarch64(busybox_both: Path, tmp_path: Path) -> None:
    root = fresh(busybox_both, tmp_path)
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": EMULATED})
    result = dockyard.build(ctx, tags=["emu:1"], root=root, platform="linux/arm64")
    store = Store.open(root)
    config = store.read_config(store.get_image(result.image_id))
    assert (config.os, config.architecture) == ("linux", "arm64")
    out = dy(root, "run", "emu:1", "cat", "/machine", "/targetarch").stdout.split()
    assert out == ["aarch64", "arm64"]
    # the same Dockerfile for the host: its own result, never the arm64 one
    host = dockyard.build(ctx, tags=["emu:host"], root=root, platform="linux/amd64")
    assert not any(s.cached for s in host.steps)
    assert dy(root, "run", "emu:host", "cat", "/machine").stdout.split() == ["x86_64"]


def test_platform_builds_share_only_what_is_platform_independent(
    busybox_both: Path, tmp_path: Path
) -> None:
    root = fresh(busybox_both, tmp_path)
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": """\
FROM --platform=$BUILDPLATFORM busybox AS tools
RUN echo tool > /tool
ARG TARGETPLATFORM
RUN echo "$TARGETPLATFORM" > /target
FROM busybox
COPY --from=tools /tool /target /
RUN uname -m > /machine
""", "data.txt": "x"})
    meta = tmp_path / "meta.json"
    result = dockyard.build(ctx, tags=["share:1"], root=root, platform=BOTH,
                            metadata_file=str(meta))
    doc = json.loads(meta.read_text())
    steps = [(s["platform"], s["stage"], s["location"]["line"], s["cached"])
             for s in doc["steps"]]
    assert steps == [
        ("linux/amd64", "tools", 2, False), ("linux/amd64", "tools", 4, False),
        ("linux/amd64", "stage-1", 6, False), ("linux/amd64", "stage-1", 7, False),
        # the build-platform stage's target-independent step is shared; the one that
        # declares TARGETPLATFORM and the target stage's steps are not
        ("linux/arm64", "tools", 2, True), ("linux/arm64", "tools", 4, False),
        ("linux/arm64", "stage-1", 6, False), ("linux/arm64", "stage-1", 7, False),
    ]
    assert doc["containerimage.digest"] == result.image_id
    assert [p["platform"] for p in doc["platforms"]] == ["linux/amd64", "linux/arm64"]
    for plat, machine in (("linux/amd64", "x86_64"), ("linux/arm64", "aarch64")):
        out = dy(root, "run", "--platform", plat, "share:1", "cat", "/tool", "/target",
                 "/machine").stdout.split()
        assert out == ["tool", plat, machine]
    # a rebuild of both is all cached
    again = dockyard.build(ctx, tags=["share:1"], root=root, platform=BOTH)
    assert again.cached_all and again.image_id == result.image_id


def test_a_missing_emulator_fails_the_run_step_naming_the_packages(
    busybox_both: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dockyard.executor import emulation

    root = fresh(busybox_both, tmp_path)
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": EMULATED})
    empty = tmp_path / "binfmt_misc"
    empty.mkdir()
    (empty / "register").write_text("")
    monkeypatch.setattr(emulation, "BINFMT", empty)
    with pytest.raises(ExecutorError) as info:
        dockyard.build(ctx, root=root, platform="linux/arm64")
    text = info.value.render() if hasattr(info.value, "render") else str(info.value)
    assert "qemu-user-static" in text and "binfmt-support" in text
    assert "Dockerfile:3" in text  # located at the RUN
    # cross-compiling needs no emulator: a build with no foreign RUN still works
    ctx2 = write_tree(tmp_path / "ctx2", {"Dockerfile": "FROM --platform=$BUILDPLATFORM "
                                          "busybox AS b\nRUN echo hi > /hi\nFROM busybox\n"
                                          "COPY --from=b /hi /\n"})
    dockyard.build(ctx2, root=root, platform="linux/arm64", tags=["cross:1"])


def _index_of_layout(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    with tarfile.open(path) as tar:
        def read(name: str) -> dict[str, Any]:
            f = tar.extractfile(name)
            assert f is not None
            data: dict[str, Any] = json.loads(f.read())
            return data
        top = read("index.json")
        entry = top["manifests"][0]
        return top, read("blobs/sha256/" + entry["digest"].removeprefix("sha256:"))


def test_every_output_holds_the_index(busybox_both: Path, tmp_path: Path) -> None:
    root = fresh(busybox_both, tmp_path)
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": EMULATED})
    out = tmp_path / "out"
    result = dockyard.build(ctx, tags=["outs:1"], root=root, platform=BOTH, outputs=[
        f"type=oci,dest={out}/oci.tar", f"type=docker,dest={out}/docker.tar",
        f"type=local,dest={out}/local", f"type=tar,dest={out}/fs.tar"])
    for archive in ("oci.tar", "docker.tar"):
        top, index = _index_of_layout(out / archive)
        assert top["manifests"][0]["mediaType"] == "application/vnd.oci.image.index.v1+json"
        assert top["manifests"][0]["annotations"]["io.containerd.image.name"] == \
            "docker.io/library/outs:1"
        assert [(m["platform"]["os"], m["platform"]["architecture"])
                for m in index["manifests"]] == [("linux", "amd64"), ("linux", "arm64")]
    # docker's manifest.json: every image, the name on the host's
    with tarfile.open(out / "docker.tar") as tar:
        f = tar.extractfile("manifest.json")
        assert f is not None
        entries = json.loads(f.read())
    assert [e["RepoTags"] for e in entries] == [["outs:1"], []]
    # local and tar: one directory per platform, as BuildKit's exporters
    for plat, machine in (("linux_amd64", "x86_64"), ("linux_arm64", "aarch64")):
        assert (out / "local" / plat / "machine").read_text().strip() == machine
    with tarfile.open(out / "fs.tar") as tar:
        names = set(tar.getnames())
    assert {"linux_amd64/machine", "linux_arm64/machine"} <= {n.lstrip("./") for n in names}
    # the OCI archive loads back as the same multi-platform image; skopeo reads it
    other = tmp_path / "other"
    dy(other, "load", "-i", str(out / "oci.tar"))
    loaded = Store.open(other)
    assert loaded.image_platforms("outs:1") == ["linux/amd64", "linux/arm64"]
    assert {p.image_id for p in result.platforms} == {
        img.id for _plat, img in loaded.index_images("outs:1")}
    raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci-archive:{out}/oci.tar"],
                         capture_output=True, text=True, check=True).stdout
    assert len(json.loads(raw)["manifests"]) == 2
    # cp, export and history pick a platform's image of the name as run does
    ids = {p.platform: p.image_id for p in result.platforms}
    for plat, machine in (("linux/amd64", "x86_64"), ("linux/arm64", "aarch64")):
        dest = tmp_path / f"machine-{plat.replace('/', '_')}"
        dy(root, "cp", "--platform", plat, "outs:1:/machine", str(dest))
        assert dest.read_text().strip() == machine
        fs = tmp_path / f"fs-{plat.replace('/', '_')}.tar"
        dy(root, "export", "--platform", plat, "-o", str(fs), "outs:1")
        with tarfile.open(fs) as tar:
            member = tar.extractfile("machine")
            assert member is not None and member.read().strip() == machine.encode()
        top = json.loads(dy(root, "history", "--platform", plat, "--no-trunc", "--format",
                            "json", "outs:1").stdout.splitlines()[0])
        assert top["ID"] == ids[plat]
    # without --platform: the host's image; a platform the name lacks: a one-line error
    assert dy(root, "cp", "outs:1:/machine", "-").returncode == 0
    missing = dy(root, "cp", "--platform", "linux/s390x", "outs:1:/machine", str(tmp_path / "x"),
                 check=False)
    assert missing.returncode == 1
    assert "no image for linux/s390x in outs:1 (it has linux/amd64, linux/arm64)" in \
        missing.stderr and "Traceback" not in missing.stderr


@needs_registry
def test_push_an_index_that_skopeo_reads(busybox_both: Path, tmp_path: Path,
                                         registry: Registry) -> None:
    root = fresh(busybox_both, tmp_path)
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": EMULATED})
    name = f"{registry.host}/multi/emu:1"
    dockyard.build(ctx, tags=[name], root=root, platform=BOTH,
                   outputs=["type=registry,registry.insecure=true"])
    raw = json.loads(subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{name}"],
        capture_output=True, text=True, check=True).stdout)
    assert raw["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [m["platform"]["architecture"] for m in raw["manifests"]] == ["amd64", "arm64"]
    dest = tmp_path / "copied"
    subprocess.run(["skopeo", "copy", "--override-arch", "arm64", "--src-tls-verify=false",
                    f"docker://{name}", f"oci:{dest}:x"], capture_output=True, check=True)
    index = json.loads((dest / "index.json").read_text())
    manifest = json.loads((dest / "blobs" / "sha256" / index["manifests"][0]["digest"][7:])
                          .read_text())
    config = json.loads((dest / "blobs" / "sha256" / manifest["config"]["digest"][7:])
                        .read_text())
    assert config["architecture"] == "arm64"
    # and pulls pick each platform from it, both under the one name
    other = tmp_path / "pulled"
    for plat in ("linux/arm64", "linux/amd64"):
        dy(other, "pull", "--tls-verify=false", "--platform", plat, name)
    pulled = Store.open(other)
    assert pulled.image_platforms(name) == ["linux/amd64", "linux/arm64"]
    assert dy(other, "run", "--platform", "linux/arm64", name, "cat", "/machine"
              ).stdout.split() == ["aarch64"]


@needs_examples
def test_the_cross_compiling_example(tmp_path: Path) -> None:
    root = make_bases(tmp_path / "store")
    ctx = copy_example("multiplatform", tmp_path)
    meta = tmp_path / "meta.json"
    result = dockyard.build(ctx, tags=["hello:mp"], root=root, platform=BOTH,
                            metadata_file=str(meta))
    store = Store.open(root)
    found = store.get_index("hello:mp")
    assert found is not None and found[0] == result.image_id
    assert [str(d.platform) for d in found[1].manifests] == ["linux/amd64", "linux/arm64"]
    # run each platform's binary: the arm64 one under QEMU, and it says so
    arm = cli(root, "run", "--platform", "linux/arm64", "hello:mp").stdout
    assert arm.strip() == "hello from aarch64: compiled for arm64 on x86_64"
    amd = cli(root, "run", "--platform", "linux/amd64", "hello:mp").stdout
    assert amd.strip() == "hello from x86_64: compiled for amd64 on x86_64"
    # the second platform reuses the build-platform stage's target-independent steps
    steps = json.loads(meta.read_text())["steps"]
    arm_build = [(s["instruction"], s["cached"]) for s in steps
                 if s["platform"] == "linux/arm64" and s["stage"] == "build"]
    assert arm_build == [("WORKDIR", True), ("COPY", True), ("RUN", True), ("RUN", False)]
    # the images hold only busybox and the binary of their own architecture
    for plat, machine in (("linux/amd64", "x86-64"), ("linux/arm64", "aarch64")):
        image = store.get_image("hello:mp", platform=plat)
        binary = tmp_path / f"hello-{plat.replace('/', '_')}"
        cli(root, "cp", f"{image.id}:/usr/local/bin/hello", str(binary))
        kind = subprocess.run(["file", "-b", str(binary)], capture_output=True,
                              text=True, check=False).stdout
        assert machine in kind.replace("_", "-") or not kind


def test_no_cache_still_builds_a_shared_step_once_and_images_follow_the_target(
    busybox_both: Path, tmp_path: Path
) -> None:
    root = fresh(busybox_both, tmp_path)
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": """\
FROM --platform=$BUILDPLATFORM busybox AS tools
RUN echo tool > /tool
FROM scratch
COPY --from=tools /tool /
COPY --from=busybox /bin/busybox /busybox
"""})
    meta = tmp_path / "meta.json"
    dockyard.build(ctx, tags=["nc:1"], root=root, platform=BOTH, no_cache=True,
                   metadata_file=str(meta))
    steps = [(s["platform"], s["line"] if "line" in s else s["location"]["line"], s["cached"])
             for s in json.loads(meta.read_text())["steps"]]
    # --no-cache reruns what earlier builds made, but this build's own results are shared:
    # the build-platform RUN runs once, for the first platform
    assert steps[0] == ("linux/amd64", 2, False)
    assert ("linux/arm64", 2, True) in steps
    # COPY --from=<image> takes the target platform's image of a multi-platform name
    store = Store.open(root)
    for plat, machine in (("linux/amd64", "x86-64"), ("linux/arm64", "aarch64")):
        image = store.get_image("nc:1", platform=plat)
        dest = tmp_path / f"bb-{plat.replace('/', '_')}"
        dy(root, "cp", f"{image.id}:/busybox", str(dest))
        kind = subprocess.run(["file", "-b", str(dest)], capture_output=True, text=True,
                              check=False).stdout
        header = dest.read_bytes()[18:20]  # e_machine: 0x3e x86-64, 0xb7 aarch64
        assert header == (b"\x3e\x00" if machine == "x86-64" else b"\xb7\x00"), kind
