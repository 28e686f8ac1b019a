"""Multi-platform builds without root: platform args, stage platforms, keys, the store's
indexes (multi-platform names) and what prune keeps of them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from dockyard.dockerfile.stages import Platform as StagePlatform
from dockyard.dockerfile.stages import host_platform, load_dockerfile, resolve
from dockyard.errors import DockerfileError, Location, NotFoundError
from dockyard.image.oci import (
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_LAYER,
    MEDIA_TYPE_OCI_MANIFEST,
    Descriptor,
    HistoryEntry,
    ImageConfig,
    Index,
    Manifest,
    Platform,
)
from dockyard.plan.model import BuildPlan, RunOp
from dockyard.plan.planner import plan_build
from dockyard.store import ImageRecord, Store
from dockyard.store.gc import prune

HOST = str(host_platform())
FOREIGN = "linux/arm64" if host_platform().architecture != "arm64" else "linux/amd64"


def plan(text: str, platform: str, build_args: Mapping[str, str] | None = None,
         asked: list[tuple[str, str]] | None = None) -> BuildPlan:
    args = dict(build_args or {})

    def lookup(ref: str, location: Location, plat: str) -> tuple[str, dict[str, Any]]:
        if asked is not None:
            asked.append((ref, plat))
        return "sha256:" + "1" * 64, {"config": {"Env": ["PATH=/bin"]}}

    graph = resolve(load_dockerfile(text), args, None, platform)
    return plan_build(graph, lookup, platform=platform, build_args=args)


def run_env(plan_: BuildPlan, stage: int, nth: int = 0) -> tuple[dict[str, str], dict[str, str]]:
    """(process env, key env) of the ``nth`` RUN of ``stage``."""
    runs = [s.op for s in plan_.stages[stage].steps if isinstance(s.op, RunOp)]
    op = runs[nth]
    assert isinstance(op, RunOp)
    return (dict(e.partition("=")[::2] for e in op.env),
            dict(e.partition("=")[::2] for e in op.key_env))


CROSS = """\
FROM --platform=$BUILDPLATFORM busybox AS build
ARG TARGETARCH
RUN ./compile.sh
FROM build AS more
RUN echo more
FROM busybox
ARG TARGETPLATFORM
RUN echo hi
FROM scratch AS last
COPY --from=more /out /out
"""


def test_stage_platforms_follow_buildkit() -> None:
    p = plan(CROSS, FOREIGN)
    # pinned to the build platform; a stage on a stage has its platform; others the target
    assert [s.platform for s in p.stages] == [HOST, HOST, FOREIGN, FOREIGN]


def test_base_images_are_asked_for_the_stage_platform() -> None:
    asked: list[tuple[str, str]] = []
    text = "FROM --platform=$BUILDPLATFORM busybox AS b\nFROM busybox\nCOPY --from=b / /\n"
    plan(text, FOREIGN, asked=asked)
    assert asked == [("busybox", HOST), ("busybox", FOREIGN)]


def test_platform_args_are_visible_only_when_declared() -> None:
    text = "FROM busybox\nRUN echo $TARGETARCH\nARG TARGETARCH\nRUN echo $TARGETARCH\n"
    p = plan(text, "linux/arm64")
    env0, key0 = run_env(p, 0, 0)
    env1, key1 = run_env(p, 0, 1)
    assert "TARGETARCH" not in env0 and "TARGETARCH" not in key0
    assert env1["TARGETARCH"] == "arm64" and key1["TARGETARCH"] == "arm64"


def test_a_declared_platform_arg_is_keyed_even_if_the_command_does_not_name_it() -> None:
    # ./compile.sh may read $TARGETARCH: the arm64 step must not reuse the amd64 result
    amd = run_env(plan(CROSS, "linux/amd64"), 0)[1]
    arm = run_env(plan(CROSS, "linux/arm64"), 0)[1]
    assert amd["TARGETARCH"] == "amd64" and arm["TARGETARCH"] == "arm64"
    # a build-platform stage that declares no target arg is the same for every target
    text = "FROM --platform=$BUILDPLATFORM busybox\nRUN make\n"
    assert run_env(plan(text, "linux/amd64"), 0) == run_env(plan(text, "linux/arm64"), 0)


def test_build_and_target_args() -> None:
    text = ("FROM busybox\nARG BUILDPLATFORM BUILDOS BUILDARCH BUILDVARIANT TARGETPLATFORM "
            "TARGETOS TARGETARCH TARGETVARIANT\nRUN env\n")
    env = run_env(plan(text, "linux/arm/v7"), 0)[0]
    host = host_platform()
    assert env["BUILDPLATFORM"] == HOST and env["BUILDOS"] == "linux"
    assert env["BUILDARCH"] == host.architecture and env["BUILDVARIANT"] == host.variant
    assert (env["TARGETPLATFORM"], env["TARGETOS"], env["TARGETARCH"], env["TARGETVARIANT"]) \
        == ("linux/arm/v7", "linux", "arm", "v7")


def test_a_default_value_wins_over_the_automatic_one_and_build_args_win_over_both() -> None:
    text = "FROM busybox\nARG TARGETARCH=riscv64\nRUN echo $TARGETARCH\n"
    assert run_env(plan(text, "linux/arm64"), 0)[0]["TARGETARCH"] == "riscv64"
    got = run_env(plan(text, "linux/arm64", {"TARGETARCH": "s390x"}), 0)[0]
    assert got["TARGETARCH"] == "s390x"


def test_from_platform_is_normalized_and_checked() -> None:
    g = resolve(load_dockerfile("FROM --platform=linux/aarch64 busybox\n"), {}, None, None)
    assert g.stages[0].platform == "linux/arm64"
    g = resolve(load_dockerfile("FROM --platform=linux/arm64/v8 busybox\n"), {}, None, None)
    assert g.stages[0].platform == "linux/arm64"
    with pytest.raises(DockerfileError, match="failed to parse platform"):
        resolve(load_dockerfile("FROM --platform=linux//x busybox\n"), {}, None, None)
    assert str(StagePlatform.parse("linux")) == HOST


# --- the store: multi-platform names --------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "root")
    yield s
    s.close()


def _layer_tar(files: dict[str, bytes]) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def image_for(store: Store, platform: str, label: str = "") -> ImageRecord:
    plat = Platform.parse(platform)
    config = ImageConfig.empty(plat).with_config(labels={"p": platform + label})
    data = _layer_tar({"platform": f"{platform}{label}".encode()})
    digest = store.blobs.put_bytes(data)
    store.put_layer(digest, len(data))
    config = config.add_layer(digest, HistoryEntry(created_by="x"))
    raw = config.to_json()
    manifest = Manifest(Descriptor.of(MEDIA_TYPE_OCI_CONFIG, raw),
                        (Descriptor(MEDIA_TYPE_OCI_LAYER, digest, len(data)),))
    return store.put_image(manifest.to_json(), raw)


def index_of(*images: tuple[str, ImageRecord]) -> bytes:
    return Index(tuple(
        Descriptor(MEDIA_TYPE_OCI_MANIFEST, img.manifest_digest, img.manifest_size,
                   platform=Platform.parse(plat)) for plat, img in images)).to_json()


def test_an_index_under_a_name(store: Store) -> None:
    foreign = image_for(store, FOREIGN)
    host = image_for(store, HOST)
    digest = store.put_index(index_of((FOREIGN, foreign), (HOST, host)), ["app:1"])
    assert store.get_index("app:1") is not None
    assert store.get_index("app:1")[0] == digest  # type: ignore[index]
    # single-platform readers get the host's image; platform readers get theirs
    assert store.get_image("app:1").id == host.id
    assert store.get_image("app:1", platform=FOREIGN).id == foreign.id
    assert store.get_image("app:1", platform=HOST).id == host.id
    assert store.image_platforms("app:1") == [FOREIGN, HOST]
    with pytest.raises(NotFoundError, match="no image for linux/s390x"):
        store.get_image("app:1", platform="linux/s390x")


def test_a_single_platform_name_answers_only_its_platform(store: Store) -> None:
    img = image_for(store, HOST)
    store.tag(img.id, "one:1")
    assert store.get_image("one:1", platform=HOST).id == img.id
    assert store.find_image("one:1", platform=FOREIGN) is None
    with pytest.raises(NotFoundError, match=f"it has {HOST}"):
        store.get_image("one:1", platform=FOREIGN)
    assert store.image_platforms("one:1") == [HOST]


def test_a_partial_index_holds_what_is_here_and_defaults_to_it(store: Store) -> None:
    foreign = image_for(store, FOREIGN)
    missing = image_for(store, HOST, "-gone")
    data = index_of((HOST, missing), (FOREIGN, foreign))
    store.remove_image(missing.id)
    store.put_index(data, ["part:1"])
    assert store.get_image("part:1").id == foreign.id
    assert store.image_platforms("part:1") == [FOREIGN]
    with pytest.raises(NotFoundError):
        store.put_index(index_of((HOST, missing)), ["none:1"])


def test_a_name_moves_between_an_index_and_an_image(store: Store) -> None:
    a, b = image_for(store, FOREIGN), image_for(store, HOST)
    store.put_index(index_of((FOREIGN, a), (HOST, b)), ["app:1"])
    single = image_for(store, HOST, "-single")
    store.tag(single.id, "app:1")  # a single-platform build under the same name
    assert store.get_index("app:1") is None
    assert store.find_image("app:1", platform=FOREIGN) is None
    store.put_index(index_of((FOREIGN, a), (HOST, b)), ["app:1"])
    store.untag("app:1")
    assert store.get_index("app:1") is None
    store.put_index(index_of((FOREIGN, a), (HOST, b)), ["app:2"])
    store.remove_image(b.id)  # rmi of the default image removes the name, index included
    assert store.get_index("app:2") is None


def test_prune_keeps_every_platform_of_a_named_index(store: Store) -> None:
    a, b = image_for(store, FOREIGN), image_for(store, HOST)
    digest = store.put_index(index_of((FOREIGN, a), (HOST, b)), ["app:1"])
    loose = image_for(store, FOREIGN, "-loose")
    prune(store, all_cache=True)
    assert store.find_image(a.id) is not None and store.find_image(b.id) is not None
    assert store.find_image(loose.id) is None
    assert store.blobs.has(digest)
    assert store.get_image("app:1", platform=FOREIGN).id == a.id
    store.untag("app:1")
    prune(store, all_cache=True)
    assert store.find_image(a.id) is None and not store.blobs.has(digest)


def test_a_version_2_store_gets_multi_platform_names(tmp_path: Path) -> None:
    import sqlite3

    root = tmp_path / "root"
    Store.open(root).close()
    with sqlite3.connect(root / "dockyard.db") as db:
        db.execute("DROP TABLE index_names")
        db.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
    with Store.open(root) as store:
        a, b = image_for(store, FOREIGN), image_for(store, HOST)
        store.put_platform_images([(FOREIGN, a.id), (HOST, b.id)], ["app:1"])
        assert store.image_platforms("app:1") == [FOREIGN, HOST]


# --- emulation: what binfmt_misc says ---------------------------------------------------

def fake_binfmt(tmp_path: Path, entries: dict[str, str]) -> Path:
    root = tmp_path / "binfmt_misc"
    root.mkdir(parents=True)
    (root / "register").write_text("")
    (root / "status").write_text("enabled\n")
    for name, flags in entries.items():
        state = "disabled" if flags.startswith("-") else "enabled"
        (root / name).write_text(
            f"{state}\ninterpreter /usr/libexec/qemu-binfmt/{name}\nflags: {flags.lstrip('-')}\n"
            "offset 0\nmagic 7f454c46\nmask ffffffff\n")
    return root


def test_emulation_needs_a_registered_fix_binary_qemu(tmp_path: Path) -> None:
    from dockyard.errors import ExecutorError
    from dockyard.executor.emulation import check_runnable, runnable_platforms, support_for

    foreign_arch = "aarch64" if FOREIGN == "linux/arm64" else "x86_64"
    ok = fake_binfmt(tmp_path / "ok", {f"qemu-{foreign_arch}": "PF"})
    assert support_for(FOREIGN, ok).runnable
    assert support_for(HOST, ok).native
    check_runnable(FOREIGN, ok)
    listed = [p.platform for p in runnable_platforms(ok)]
    assert listed[0] == HOST and FOREIGN in listed
    with pytest.raises(ExecutorError, match="qemu-user-static and binfmt-support"):
        check_runnable(FOREIGN, fake_binfmt(tmp_path / "none", {}))
    with pytest.raises(ExecutorError, match="binfmt_misc is not mounted"):
        check_runnable(FOREIGN, tmp_path / "nowhere")
    with pytest.raises(ExecutorError, match="without the F"):
        check_runnable(FOREIGN, fake_binfmt(tmp_path / "nof", {f"qemu-{foreign_arch}": "P"}))
    with pytest.raises(ExecutorError, match="disabled"):
        check_runnable(FOREIGN, fake_binfmt(tmp_path / "off", {f"qemu-{foreign_arch}": "-PF"}))
    with pytest.raises(ExecutorError, match="windows binaries"):
        check_runnable("windows/amd64", ok)
    assert FOREIGN not in [p.platform for p in runnable_platforms(tmp_path / "nowhere")]


# --- the store commands on multi-platform names --------------------------------------


def _cli(root: Path, *argv: str) -> int:
    from dockyard.cli.main import main

    return main(["--root", str(root), *argv])


def test_manifest_create_tag_images_inspect_save_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    root = tmp_path / "store"
    with Store.open(root) as store:
        a, b = image_for(store, FOREIGN), image_for(store, HOST)
        store.tag(a.id, "x:foreign")
        store.tag(b.id, "x:host")
        store.tag(image_for(store, HOST, "-other").id, "x:other")
    assert _cli(root, "manifest", "create", "app:1", "x:host", "x:foreign") == 0
    assert f"app:1: {HOST}, {FOREIGN}" in capsys.readouterr().out
    # two images of one platform are refused
    assert _cli(root, "manifest", "create", "bad:1", "x:other", "app:1") != 0
    assert "two images for" in capsys.readouterr().err
    assert _cli(root, "tag", "app:1", "copy:2") == 0
    with Store.open(root) as store:
        assert store.image_platforms("copy:2") == [HOST, FOREIGN]
    capsys.readouterr()
    assert _cli(root, "images", "app") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[-1] == "PLATFORM"
    assert sorted(line.split()[-1] for line in table[1:]) == sorted([HOST, FOREIGN])
    assert _cli(root, "inspect", "--platform", FOREIGN, "app:1") == 0
    info = json.loads(capsys.readouterr().out)[0]
    assert info["Id"] == a.id and [p["Platform"] for p in info["Platforms"]] == [HOST, FOREIGN]
    # rmi of the per-platform names keeps the images the multi-platform name holds
    assert _cli(root, "rmi", "x:host", "x:foreign") == 0
    with Store.open(root) as store:
        assert store.get_image("app:1", platform=FOREIGN).id == a.id
    # save and load keep the index (docker format: the OCI part holds it)
    archive = tmp_path / "app.tar"
    assert _cli(root, "save", "-o", str(archive), "app:1") == 0
    other = tmp_path / "other"
    assert _cli(other, "load", "-i", str(archive)) == 0
    with Store.open(other) as loaded:
        assert loaded.image_platforms("app:1") == [HOST, FOREIGN]
        assert loaded.get_image("app:1", platform=FOREIGN).id == a.id
        assert loaded.get_image("app:1").id == b.id
