"""Stages, global ARGs, build args and the stage dependency graph."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dockyard.cli.main import main
from dockyard.dockerfile.stages import (
    Platform,
    StageGraph,
    host_platform,
    load_dockerfile,
    parse_build_args,
    parse_mount_from,
    resolve,
)
from dockyard.errors import DockerfileError, ExpansionError, UsageError


def graph(text: str, build_args: dict[str, str] | None = None, target: str | None = None,
          platform: str | None = None) -> StageGraph:
    return resolve(load_dockerfile(text), build_args or {}, target, platform)


MULTI = """\
ARG BASE=alpine:3.19
FROM ${BASE} AS deps
RUN echo deps

FROM golang:1.22 AS Builder
COPY --from=deps /x /x
RUN --mount=type=cache,target=/root/.cache true

FROM scratch AS unused
COPY --from=0 /a /a

FROM builder AS test
RUN true

FROM busybox:1.36
COPY --from=builder /bin/app /app
COPY --from=nginx:latest /etc/nginx /etc/nginx
"""


def test_stages_names_bases_and_graph() -> None:
    df = load_dockerfile(MULTI)
    assert [s.name for s in df.stages] == ["deps", "builder", "unused", "test", None]
    assert df.stages[1].written_name == "Builder"
    assert [a.args for a in df.meta_args] == [(("BASE", "alpine:3.19"),)]
    g = resolve(df, {}, None)
    by = {s.index: s for s in g.stages}
    assert by[0].base == "alpine:3.19" and by[0].base_kind == "image"
    assert by[1].base_kind == "image"
    assert by[2].base_kind == "scratch"
    assert by[3].base_kind == "stage" and by[3].base_stage == 1
    assert by[1].depends_on == (0,)
    assert by[2].depends_on == (0,)
    assert by[3].depends_on == (1,)
    assert by[4].depends_on == (1,)
    assert by[4].images == ("nginx:latest",)
    assert g.target == 4
    assert [s.needed for s in g.stages] == [True, True, False, False, True]
    assert by[0].location.start_line == 2


def test_target_needs_transitively() -> None:
    g = graph(MULTI, target="TEST")
    assert g.target == 3
    assert [s.index for s in g.needed_stages()] == [0, 1, 3]
    g = graph(MULTI, target="deps")
    assert [s.index for s in g.needed_stages()] == [0]


def test_unknown_target_lists_stage_names() -> None:
    with pytest.raises(UsageError) as info:
        graph(MULTI, target="nope")
    assert "nope" in str(info.value)
    assert "deps, builder, unused, test" in str(info.value)


def test_build_arg_overrides_meta_arg() -> None:
    g = graph(MULTI, {"BASE": "debian:12"})
    assert g.stages[0].base == "debian:12"
    assert g.unused_build_args == ()


def test_meta_args_chain_and_platform_args() -> None:
    text = """\
ARG REG=docker.io
ARG IMG=${REG}/library/alpine
ARG TAG
FROM $IMG:${TAG:-latest}
FROM --platform=$BUILDPLATFORM busybox:${TARGETARCH}
"""
    g = graph(text)
    assert g.stages[0].base == "docker.io/library/alpine:latest"
    host = host_platform()
    assert g.stages[1].platform == str(host)
    assert g.stages[1].base == f"busybox:{host.architecture}"
    assert dict(g.global_args)["TARGETPLATFORM"] == str(host)
    assert "TAG" not in dict(g.global_args)
    g = graph(text, {"TAG": "3"}, platform="linux/arm64")
    assert g.stages[0].base == "docker.io/library/alpine:3"
    assert g.stages[1].base == "busybox:arm64"
    assert g.stages[1].platform == str(host)


def test_host_platform_here() -> None:
    host = host_platform()
    assert host.os == "linux"
    assert str(Platform.parse(str(host))) == str(host)
    assert str(Platform.parse("linux/aarch64")) == "linux/arm64"
    assert str(Platform.parse("linux/arm/v7")) == "linux/arm/v7"
    with pytest.raises(UsageError):
        Platform.parse("linux/")


def test_blank_base_is_an_error() -> None:
    with pytest.raises(DockerfileError) as info:
        graph("ARG X\nFROM $X\n")
    assert "base name ($X) should not be blank" in str(info.value)
    assert info.value.location is not None and info.value.location.start_line == 2


def test_required_arg_in_from() -> None:
    with pytest.raises(ExpansionError) as info:
        graph("ARG V\nFROM alpine:${V:?setV}\n")
    assert "V: setV" in str(info.value)
    assert info.value.location is not None and info.value.location.start_line == 2
    assert graph("ARG V\nFROM alpine:${V:?setV}\n", {"V": "3"}).stages[0].base == "alpine:3"


def test_unused_build_arg_warning() -> None:
    g = graph("ARG A\nFROM alpine\nARG B\nRUN true\n", {"A": "1", "B": "2", "ZZ": "3", "C": "4",
                                                      "HTTP_PROXY": "x", "TARGETARCH": "y"})
    assert g.unused_build_args == ("C", "ZZ")
    assert g.warnings == ("[Warning] One or more build-args [C ZZ] were not consumed",)


def test_build_arg_in_unneeded_stage_is_unused() -> None:
    text = "FROM alpine AS a\nARG ONLY_A\nFROM alpine AS b\nRUN true\n"
    assert graph(text, {"ONLY_A": "1"}).unused_build_args == ("ONLY_A",)
    assert graph(text, {"ONLY_A": "1"}, target="a").unused_build_args == ()


def test_parse_build_args_from_environment() -> None:
    env = {"FROM_ENV": "e", "EMPTY": ""}
    assert parse_build_args(["A=1", "B=", "C=x=y", "FROM_ENV", "EMPTY", "MISSING"], env) == {
        "A": "1", "B": "", "C": "x=y", "FROM_ENV": "e", "EMPTY": "",
    }
    with pytest.raises(UsageError):
        parse_build_args(["=x"], env)


def test_stage_name_rules() -> None:
    with pytest.raises(DockerfileError) as info:
        load_dockerfile("FROM alpine AS 1abc\n")
    assert "invalid name for build stage" in str(info.value)
    with pytest.raises(DockerfileError) as info:
        load_dockerfile("FROM alpine AS a$b\n")
    assert "invalid name" in str(info.value)
    with pytest.raises(DockerfileError) as info:
        load_dockerfile("FROM alpine AS x\nRUN true\nFROM alpine AS X\n")
    assert "duplicate stage name" in str(info.value)
    assert info.value.location is not None and info.value.location.start_line == 3
    df = load_dockerfile("FROM alpine AS a.b-c_d\n")
    assert df.stages[0].name == "a.b-c_d"


def test_instruction_before_from() -> None:
    with pytest.raises(DockerfileError) as info:
        load_dockerfile("RUN true\nFROM alpine\n")
    assert "no build stage in current context" in str(info.value)


def test_only_args_is_no_stage() -> None:
    with pytest.raises(DockerfileError) as info:
        load_dockerfile("ARG A=1\n")
    assert "no stages" in str(info.value)


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("FROM alpine AS a\nCOPY --from=a /x /x\n", 'cannot copy from stage "a"', 2),
        ("FROM alpine AS a\nCOPY --from=b /x /x\nFROM alpine AS b\n",
         'cannot copy from stage "b"', 2),
        ("FROM alpine\nCOPY --from=0 /x /x\n", 'cannot copy from stage "0"', 2),
        ("FROM alpine\nFROM alpine\nCOPY --from=5 /x /x\n", "invalid stage index 5", 3),
        ("FROM alpine\nCOPY --from=-1 /x /x\n", "invalid stage index -1", 2),
        ("FROM alpine AS a\nRUN --mount=from=a,target=/x true\n", 'cannot copy from stage "a"', 2),
        ("FROM b AS a\nFROM alpine AS b\n", "defined later", 1),
        ("ARG S=x\nFROM alpine\nCOPY --from=$S /x /x\n", "variable expansion is not supported", 3),
    ],
)
def test_bad_stage_references(text: str, message: str, line: int) -> None:
    with pytest.raises(DockerfileError) as info:
        graph(text)
    assert message in str(info.value)
    assert info.value.location is not None
    assert info.value.location.start_line == line
    assert info.value.source == text


def test_from_own_name_is_an_image() -> None:
    g = graph("FROM golang AS golang\nRUN true\n")
    assert g.stages[0].base_kind == "image"


def test_from_stage_name_is_case_insensitive() -> None:
    g = graph("FROM alpine AS Base\nFROM base\nFROM BASE\nFROM scratch\n")
    assert [s.base_kind for s in g.stages] == ["image", "stage", "stage", "scratch"]
    assert g.stages[2].depends_on == (0,)


def test_run_mount_from_stage_image_and_variable() -> None:
    text = """\
FROM alpine AS tools
FROM alpine
ARG SRC=tools
RUN --mount=type=bind,from=$SRC,source=/bin,target=/t true
RUN --mount=from=busybox,target=/b true
RUN --mount=type=tmpfs,target=/tmp true
RUN --mount=type=cache,target=/c,from=tools true
"""
    g = graph(text)
    assert g.stages[1].depends_on == (0,)
    assert g.stages[1].images == ("busybox",)
    assert g.stages[0].needed


def test_onbuild_copy_from_of_base_stage() -> None:
    text = """\
FROM alpine AS assets
FROM alpine AS base
ONBUILD COPY --from=assets /a /a
FROM base
"""
    g = graph(text)
    assert g.stages[2].depends_on == (1, 0)
    assert all(s.needed for s in g.stages)


def test_parse_mount_from() -> None:
    assert parse_mount_from("type=bind,from=x,target=/y") == ("x", "bind")
    assert parse_mount_from("target=/y") == (None, "bind")
    assert parse_mount_from('"type=cache",from=a') == ("a", "cache")


# --- CLI ---------------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "Dockerfile") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_cli_debug_stages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, MULTI)
    assert main(["debug", "stages", "-f", path, "--target", "test",
                 "--build-arg", "BASE=debian", "--build-arg", "NOPE=1"]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["target"] == {"index": 3, "name": "test"}
    assert doc["stages"][0] == {
        "index": 0, "name": "deps", "base": "debian", "base_kind": "image", "platform": None,
        "depends_on": [], "needed": True, "line": 2,
    }
    assert [s["needed"] for s in doc["stages"]] == [True, True, False, True, False]
    assert doc["stages"][3]["base_kind"] == "stage"
    assert "[Warning] One or more build-args [NOPE] were not consumed" in err


def test_cli_debug_stages_build_arg_from_env(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "ARG IMG=alpine\nFROM $IMG\n")
    monkeypatch.setenv("IMG", "busybox:1")
    assert main(["debug", "stages", "-f", path, "--build-arg", "IMG"]) == 0
    assert json.loads(capsys.readouterr().out)["stages"][0]["base"] == "busybox:1"
    monkeypatch.delenv("IMG")
    assert main(["debug", "stages", "-f", path, "--build-arg", "IMG"]) == 0
    assert json.loads(capsys.readouterr().out)["stages"][0]["base"] == "alpine"


def test_cli_debug_stages_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "FROM alpine AS a\nCOPY --from=a /x /x\n", "Dockerfile.prod")
    assert main(["debug", "stages", "-f", path]) == 1
    err = capsys.readouterr().err
    assert "Dockerfile.prod:2" in err
    assert ">>> COPY --from=a /x /x" in err
    assert "Traceback" not in err
    path = write(tmp_path, "FROM alpine AS a\n")
    assert main(["debug", "stages", "-f", path, "--target", "b"]) == 2
    assert 'target stage "b" could not be found' in capsys.readouterr().err
    assert main(["debug", "stages", "-f", str(tmp_path / "missing")]) == 2
