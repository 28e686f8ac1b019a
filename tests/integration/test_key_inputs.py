"""Issue 12's key soundness fixes, each proved the same way: build, change one input, build
again in the same store, and read the file in the image (it must be what a fresh build of the
new inputs gives).

- every build arg in scope is in a RUN's key, named in the command or not (item 3);
- ``RUN --mount=type=bind,from=IMAGE`` is keyed by the image's id, a named build context
  (directory or ``docker-image://``) by its content (item 4);
- the build-wide ``--network`` is in the RUN key (item 5);
- SOURCE_DATE_EPOCH is in the key of every layer step (item 7);
- a read-write bind mount of a stage or an image may be written; the writes are discarded;
- a miss reason never shows the value of a build arg whose name looks secret (issue 11).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_build_support import build, flatten, fresh_store, needs_runtime, write_tree

from dockyard.progress.events import CacheMissExplained, VertexLog

pytestmark = needs_runtime


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return fresh_store(tmp_path / "store")


def read(root: Path, tag: str, path: str, dest: Path) -> str:
    return (flatten(root, tag, dest) / path.lstrip("/")).read_text()


def test_arg_read_by_a_script_not_by_the_command_text(root: Path, tmp_path: Path) -> None:
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\n"
                      "COPY build.sh /build.sh\n"
                      "ARG GOOS\n"
                      "ARG NAME\n"
                      "RUN sh /build.sh > /out\n"
                      'RUN echo "${#NAME}" > /len\n',
        "build.sh": 'echo "target=$GOOS"\n',
    })
    build(ctx, root, tags=["img"], build_args={"GOOS": "linux", "NAME": "ab"})
    assert read(root, "img", "/out", tmp_path / "a") == "target=linux\n"
    second = build(ctx, root, tags=["img"], build_args={"GOOS": "darwin", "NAME": "abc"})
    assert not second.step(5).cached and not second.step(6).cached
    assert (second.step(5).reason or "").endswith("ARG GOOS changed linux -> darwin")
    assert read(root, "img", "/out", tmp_path / "b") == "target=darwin\n"
    assert read(root, "img", "/len", tmp_path / "b") == "3\n"


def _source_image(root: Path, tmp_path: Path, content: str, tag: str = "mnt:src") -> None:
    ctx = write_tree(tmp_path / f"src-{content}", {
        "Dockerfile": "FROM busybox\nRUN mkdir -p /data && echo " + content + " > /data/f\n",
    })
    build(ctx, root, tags=[tag])


def test_bind_from_image_is_keyed_by_the_image_not_its_name(root: Path, tmp_path: Path) -> None:
    _source_image(root, tmp_path, "one")
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\n"
                      "RUN --mount=type=bind,from=mnt:src,source=/data,target=/m cat /m/f > /out\n",
    })
    first = build(ctx, root, tags=["img"])
    assert read(root, "img", "/out", tmp_path / "a") == "one\n"
    _source_image(root, tmp_path, "two")  # the same name, another image
    second = build(ctx, root, tags=["img"])
    assert not second.step(2).cached
    assert second.step(2).key != first.step(2).key
    assert "the mounts changed" in (second.step(2).reason or "")
    assert read(root, "img", "/out", tmp_path / "b") == "two\n"
    assert build(ctx, root, tags=["img"]).result.cached_all


def test_named_directory_context_is_keyed_by_content(root: Path, tmp_path: Path) -> None:
    data = write_tree(tmp_path / "data", {"f": "one\n"})
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\n"
                      "RUN --mount=type=bind,from=data,target=/d cat /d/f > /out\n",
    })
    contexts = {"data": str(data)}
    build(ctx, root, tags=["img"], build_contexts=contexts)
    assert read(root, "img", "/out", tmp_path / "a") == "one\n"
    (data / "f").write_text("two\n")
    second = build(ctx, root, tags=["img"], build_contexts=contexts)
    assert not second.step(2).cached
    assert read(root, "img", "/out", tmp_path / "b") == "two\n"
    # the same content elsewhere: the key does not depend on the path
    elsewhere = write_tree(tmp_path / "elsewhere", {"f": "two\n"})
    assert build(ctx, root, tags=["img"],
                 build_contexts={"data": str(elsewhere)}).result.cached_all


def test_named_image_context_is_keyed_by_the_image(root: Path, tmp_path: Path) -> None:
    _source_image(root, tmp_path, "one")
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\n"
                      "RUN --mount=type=bind,from=base,source=/data,target=/m cat /m/f > /out\n"
                      "COPY --from=base /data/f /copied\n",
    })
    contexts = {"base": "docker-image://mnt:src"}
    build(ctx, root, tags=["img"], build_contexts=contexts)
    assert read(root, "img", "/out", tmp_path / "a") == "one\n"
    _source_image(root, tmp_path, "two")
    second = build(ctx, root, tags=["img"], build_contexts=contexts)
    assert [s.cached for s in second.steps] == [False, False]
    assert read(root, "img", "/out", tmp_path / "b") == "two\n"
    assert read(root, "img", "/copied", tmp_path / "b") == "two\n"


def test_build_network_is_in_the_run_key(root: Path, tmp_path: Path) -> None:
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\nRUN tail -n +3 /proc/net/dev | cut -d: -f1 > /ifs\n",
    })
    build(ctx, root, tags=["img"], network="none")
    assert read(root, "img", "/ifs", tmp_path / "a").split() == ["lo"]
    second = build(ctx, root, tags=["img"], network="host")
    assert not second.step(2).cached
    assert "the network mode changed none -> host" in (second.step(2).reason or "")
    host_ifs = sorted(line.split(":")[0].strip()
                      for line in Path("/proc/net/dev").read_text().splitlines()[2:])
    assert sorted(read(root, "img", "/ifs", tmp_path / "b").split()) == host_ifs
    third = build(ctx, root, tags=["img"], network="none")
    assert third.result.cached_all


def test_source_date_epoch_is_in_every_layer_key(root: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\nWORKDIR /w\nCOPY f /w/f\nRUN echo x > /w/r\n",
        "f": "f\n",
    })
    build(ctx, root, tags=["img"])
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1000000000")
    second = build(ctx, root, tags=["img"])
    assert [s.cached for s in second.steps] == [False, False, False]
    assert all("SOURCE_DATE_EPOCH changed" in (s.reason or "") for s in second.steps)
    fs = flatten(root, "img", tmp_path / "fs")
    for path in ("w", "w/f", "w/r"):
        assert os.lstat(fs / path).st_mtime == 1000000000, path
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    third = build(ctx, root, tags=["img"])
    assert third.result.cached_all  # the build without it is still cached
    fs = flatten(root, "img", tmp_path / "fs3")
    assert os.lstat(fs / "w/r").st_mtime != 1000000000


@pytest.mark.parametrize("source", ["stage", "image"])
def test_rw_bind_from_a_stage_or_image_discards_writes(root: Path, tmp_path: Path,
                                                       source: str) -> None:
    _source_image(root, tmp_path, "one")
    src = "base" if source == "stage" else "mnt:src"
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM mnt:src AS base\n"
                      "FROM busybox\n"
                      f"RUN --mount=type=bind,from={src},target=/m,rw "
                      "echo written > /m/data/f && echo new > /m/new && cat /m/data/f > /out\n"
                      f"RUN --mount=type=bind,from={src},target=/m "
                      "cat /m/data/f > /after && ls /m > /listing\n",
    })
    build(ctx, root, tags=["img"])
    fs = flatten(root, "img", tmp_path / "fs")
    assert (fs / "out").read_text() == "written\n"
    assert (fs / "after").read_text() == "one\n"  # the write was discarded
    assert "new" not in (fs / "listing").read_text().split()
    assert read(root, "mnt:src", "/data/f", tmp_path / "src") == "one\n"


def test_secret_looking_arg_values_are_never_shown(root: Path, tmp_path: Path) -> None:
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\nARG NPM_TOKEN\nARG VERSION\nRUN echo building\n",
    })
    build(ctx, root, build_args={"NPM_TOKEN": "old-s3cret-123", "VERSION": "1"})
    second = build(ctx, root, build_args={"NPM_TOKEN": "new-s3cret-456", "VERSION": "1"})
    step = second.step(4)
    assert not step.cached
    assert step.reason is not None and "ARG NPM_TOKEN changed" in step.reason
    shown = [step.reason] + [str(e) for e in second.events
                             if isinstance(e, CacheMissExplained | VertexLog)]
    assert not any("s3cret" in text for text in shown)
    third = build(ctx, root, build_args={"NPM_TOKEN": "new-s3cret-456", "VERSION": "2"})
    assert (third.step(4).reason or "").endswith("ARG VERSION changed 1 -> 2")


def test_inserted_step_is_explained_by_identity(root: Path, tmp_path: Path) -> None:
    text = "FROM busybox\nRUN echo a > /a\n{extra}RUN echo b > /b\nRUN echo c > /c\n"
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": text.format(extra="")})
    build(ctx, root)
    (ctx / "Dockerfile").write_text(text.format(extra="RUN echo new > /new\n"))
    second = build(ctx, root, tags=["img"])
    assert second.cached_by_line() == {2: True, 3: False, 4: False, 5: False}
    assert (second.step(3).reason or "").endswith("no earlier build of this step in this store")
    assert (second.step(4).reason or "").endswith("an earlier step changed (line 3)")
    assert (second.step(5).reason or "").endswith("an earlier step changed (line 3)")
    assert read(root, "img", "/new", tmp_path / "fs") == "new\n"
    (ctx / "Dockerfile").write_text(text.format(extra=""))  # and deleted again
    third = build(ctx, root)
    assert third.result.cached_all  # the first build's results are still there


def test_sbom_scan_args_are_not_in_the_run_environment(root: Path, tmp_path: Path) -> None:
    """As BuildKit (its ``nonEnvArgs``): ``ARG BUILDKIT_SBOM_SCAN_STAGE`` and ``..._CONTEXT``
    reach no RUN, so changing them re-runs nothing, and the image is a fresh build's."""
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": "ARG BUILDKIT_SBOM_SCAN_CONTEXT=true\n"
                      "FROM busybox\n"
                      "ARG BUILDKIT_SBOM_SCAN_STAGE=true\n"
                      "ARG BUILDKIT_SBOM_SCAN_CONTEXT\n"
                      "RUN env | sort | grep -v -e ^HOSTNAME= -e ^PWD= -e ^SHLVL= > /env\n",
    })
    first = build(ctx, root, tags=["img"], build_args={"SOURCE_DATE_EPOCH": "1700000000"})
    seen = read(root, "img", "/env", tmp_path / "a")
    assert "BUILDKIT_SBOM" not in seen and "PATH=" in seen
    second = build(ctx, root, tags=["img"], build_args={
        "SOURCE_DATE_EPOCH": "1700000000", "BUILDKIT_SBOM_SCAN_STAGE": "false",
        "BUILDKIT_SBOM_SCAN_CONTEXT": "false"})
    assert second.step(5).cached
    fresh = fresh_store(tmp_path / "fresh")
    again = build(ctx, fresh, tags=["img"], no_cache=True,
                  build_args={"SOURCE_DATE_EPOCH": "1700000000"})
    assert again.result.image_id == first.result.image_id


def test_an_undeclared_proxy_arg_is_in_the_run_key(root: Path, tmp_path: Path) -> None:
    """FINDINGS soundness-3 (cache table row arg-proxy): BuildKit keeps a RUN that reads a
    --build-arg HTTP_PROXY no ARG declares; dockyard keys the proxies' digest, and the miss
    reason never shows a proxy URL (it may hold a password)."""
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox\nRUN echo \"$HTTP_PROXY\" > /proxy\n",
    })
    build(ctx, root, tags=["img"], build_args={"HTTP_PROXY": "http://u:pw1@p1.invalid:1"})
    assert read(root, "img", "/proxy", tmp_path / "a") == "http://u:pw1@p1.invalid:1\n"
    second = build(ctx, root, tags=["img"],
                   build_args={"HTTP_PROXY": "http://u:pw2@p2.invalid:2"})
    assert not second.step(2).cached
    assert "proxy" in (second.step(2).reason or "") and "pw" not in (second.step(2).reason or "")
    assert read(root, "img", "/proxy", tmp_path / "b") == "http://u:pw2@p2.invalid:2\n"
    assert build(ctx, root, tags=["img"],
                 build_args={"HTTP_PROXY": "http://u:pw2@p2.invalid:2"}).result.cached_all
