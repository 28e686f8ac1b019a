"""The docker-compatible face (issue 14): what a user of ``docker build`` types is accepted,
and bad input is refused before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import dockyard
from dockyard.cli.main import main
from dockyard.context.context import BuildContext
from dockyard.errors import UsageError


def test_containerfile_when_there_is_no_dockerfile(tmp_path: Path) -> None:
    (tmp_path / "Containerfile").write_text("FROM scratch\n")
    ctx = BuildContext.open(str(tmp_path), dockerfile=None, tmpdir=tmp_path / "t")
    assert ctx.dockerfile_text == "FROM scratch\n"
    assert ctx.dockerfile_name == "Containerfile"
    (tmp_path / "Dockerfile").write_text("FROM busybox\n")
    ctx = BuildContext.open(str(tmp_path), dockerfile=None, tmpdir=tmp_path / "t")
    assert ctx.dockerfile_text == "FROM busybox\n"  # a Dockerfile wins, as in Podman


def test_check_takes_a_context_or_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "Containerfile").write_text("FROM busybox:1\nCMD echo hi\n")
    result = dockyard.check(str(tmp_path))
    assert result.dockerfile.endswith("Containerfile")
    assert [f.rule for f in result.findings] == ["JSONArgsRecommended"]
    assert not result.failed
    assert main(["check", str(tmp_path), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["rule"] == "JSONArgsRecommended"
    assert main(["check", str(tmp_path / "Containerfile")]) == 0
    monkeypatch.chdir(tmp_path)
    assert main(["check", "-f", "Containerfile"]) == 0
    assert "JSONArgsRecommended" in capsys.readouterr().out
    assert main(["check", str(tmp_path / "nothing")]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("arg", ["VERSION 3", " VERSION=3", "A\tB=1"])
def test_build_arg_with_whitespace_in_its_name_is_refused(arg: str) -> None:
    from dockyard._api._frontend import parse_build_args

    with pytest.raises(UsageError, match="cannot contain whitespace"):
        parse_build_args([arg])


def test_build_arg_hint_and_docker_forms() -> None:
    from dockyard._api._frontend import parse_build_args

    with pytest.raises(UsageError, match=r"did you mean VERSION=3\?"):
        parse_build_args(["VERSION 3"])
    env = {"FROM_ENV": "x"}
    assert parse_build_args(["A=1", "B=", "FROM_ENV", "UNSET"], env) == {
        "A": "1", "B": "", "FROM_ENV": "x"}
    assert parse_build_args({"A": "1 2"}) == {"A": "1 2"}
