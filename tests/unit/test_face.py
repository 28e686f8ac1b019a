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


# ------------------------------------------------------------------ build flags
def test_pull_alone_means_always() -> None:
    from dockyard.cli.cmd_build import normalize_argv

    assert normalize_argv(["--pull", "."]) == ["--pull=always", "."]
    assert normalize_argv([".", "--pull"]) == [".", "--pull=always"]
    assert normalize_argv(["--pull", "never", "."]) == ["--pull", "never", "."]
    assert normalize_argv(["--pull=false", "."]) == ["--pull=false", "."]
    assert normalize_argv(["--", "--pull"]) == ["--", "--pull"]
    from dockyard.cli.main import build_parser

    parser = build_parser("build")
    args = parser.parse_args(normalize_argv(["--pull", "ctx", "--provenance=false", "--sbom",
                                             "false", "--rm", "--force-rm"]))
    assert (args.pull, args.context, args.provenance, args.sbom) == (
        "always", "ctx", "false", "false")


def test_add_host_is_parsed_as_docker_does() -> None:
    from dockyard._api._request import parse_add_hosts
    from dockyard.executor.spec import hosts_file_content

    hosts = parse_add_hosts(["db:10.0.0.2", "v6:::1", "eq=192.168.1.1", "br:[fe80::1]"])
    assert hosts == (("db", "10.0.0.2"), ("v6", "::1"), ("eq", "192.168.1.1"),
                     ("br", "fe80::1"))
    text = hosts_file_content("dockyard", hosts[:2])
    assert text.endswith("10.0.0.2\tdb\n::1\tv6\n")
    assert text.startswith("127.0.0.1\tlocalhost dockyard\n")
    for bad in ("db", "db:", ":1.2.3.4", "db:not-an-ip", "db:host-gateway", "a b:1.2.3.4"):
        with pytest.raises(UsageError, match="--add-host"):
            parse_add_hosts([bad])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tags": ["Bad/Name"]}, "invalid tag 'Bad/Name'"),
    ({"tags": ["ok", "a:b:c"]}, "invalid tag 'a:b:c'"),
    ({"outputs": ["type=image,name=UPPER"]}, "invalid tag 'UPPER'"),
    ({"outputs": ["type=oci"]}, "needs dest=PATH"),
    ({"outputs": ["-", "type=tar,dest=-"]}, "only one output"),
    ({"outputs": ["type=nope"]}, "type must be one of"),
    ({"secrets": ["id=x,src=/nonexistent/secret"]}, "cannot read"),
    ({"secrets": ["src=/etc/hostname"]}, "missing id="),
    ({"cache_ttl": "soon"}, "invalid duration"),
    ({"add_hosts": ["nohost"]}, "--add-host"),
    ({"build_args": ["VERSION 3"]}, "cannot contain whitespace"),
])
def test_a_bad_request_fails_before_the_context_is_opened(
        tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    # the context does not even exist: the request is refused before anything is read
    with pytest.raises(UsageError, match=message):
        dockyard.build(str(tmp_path / "no-such-context"), root=tmp_path / "store",
                       **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "store").exists()  # not even the store was opened


def test_load_needs_a_daemon_that_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker.sock")
    with pytest.raises(UsageError, match=r"no Docker daemon answers at unix://.*docker\.sock "
                                         r"\(DOCKER_HOST\): no such socket"):
        dockyard.build(str(tmp_path), outputs=["type=docker"], root=tmp_path / "store")
    import socket

    # a socket nobody accepts on: refused, still before the build
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "docker.sock"))
    sock.close()
    with pytest.raises(UsageError, match="no Docker daemon answers"):
        dockyard.build(str(tmp_path), outputs=["type=docker"], root=tmp_path / "store")
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    assert main(["--root", str(tmp_path / "store"), "build", "--load", str(tmp_path)]) == 2
    assert "--load: no Docker daemon answers" in capsys.readouterr().err
    monkeypatch.setenv("DOCKER_HOST", "ssh://me@host")
    with pytest.raises(UsageError, match="only unix:// and tcp://"):
        dockyard.build(str(tmp_path), outputs=["type=docker"], root=tmp_path / "store")


def test_buildkit_progress_sets_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nENV A=1\n")
    store = str(tmp_path / "store")
    monkeypatch.setenv("BUILDKIT_PROGRESS", "rawjson")
    assert main(["--root", store, "build", str(tmp_path)]) == 0
    assert "build_finished" in capsys.readouterr().err
    assert main(["--root", store, "build", "--progress", "plain", str(tmp_path)]) == 0
    assert "build_finished" not in capsys.readouterr().err
    monkeypatch.setenv("BUILDKIT_PROGRESS", "fancy")
    assert main(["--root", store, "build", str(tmp_path)]) == 2
    assert "BUILDKIT_PROGRESS=fancy" in capsys.readouterr().err


def test_build_check_lints_instead_of_building(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "Dockerfile").write_text("FROM busybox:1\nCMD echo hi\n")
    store = tmp_path / "store"
    assert main(["--root", str(store), "build", "--check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "JSONArgsRecommended" in out
    assert out.rstrip().endswith("Check complete, 1 warning has been found!")
    (tmp_path / "Dockerfile").write_text('FROM busybox:1\nCMD ["echo", "hi"]\n')
    assert main(["--root", str(store), "build", "--check", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "Check complete, no warnings found.\n"
    assert not store.exists()  # nothing was built


# ------------------------------------------------------------------ pull failures
def test_pull_failure_hints_tell_dns_from_tls_from_refused() -> None:
    import socket
    import ssl

    import httpx

    from dockyard.registry.client import connect_hint

    def chained(outer: BaseException, inner: BaseException) -> BaseException:
        outer.__cause__ = inner
        return outer

    dns = chained(httpx.ConnectError("[Errno -2] Name or service not known"),
                  socket.gaierror(-2, "Name or service not known"))
    assert "does not resolve" in connect_hint(dns, "reg.example:5000", False)
    assert "TLS" not in connect_hint(dns, "reg.example:5000", False)
    tls = chained(httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number"),
                  ssl.SSLError(1, "wrong version number"))
    hint = connect_hint(tls, "reg.example:5000", False)
    assert "TLS handshake failed" in hint and "DOCKYARD_INSECURE_REGISTRIES" in hint
    refused = chained(httpx.ConnectError("[Errno 111] Connection refused"),
                      ConnectionRefusedError(111, "Connection refused"))
    assert connect_hint(refused, "127.0.0.1:9", False) == " (nothing listens at 127.0.0.1:9)"


def test_a_base_that_cannot_be_pulled_says_how_to_get_one(tmp_path: Path) -> None:
    from dockyard.errors import DockerfileError

    (tmp_path / "Dockerfile").write_text("FROM 127.0.0.1:9/nothing/here:1\nRUN true\n")
    with pytest.raises(DockerfileError) as caught:
        dockyard.build(str(tmp_path), root=tmp_path / "store")
    text = caught.value.render()
    assert "nothing listens at 127.0.0.1:9" in text
    assert "--tls-verify" not in text  # build has no such flag
    assert "the store has no images yet" in text and "dockyard load -i" in text
