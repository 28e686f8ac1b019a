"""The ``dockyard check`` linter: rules, levels, lines and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dockyard.cli.main import main
from dockyard.dockerfile.check import RULES, Finding, check_text, has_errors
from dockyard.errors import DockerfileError


def rules(text: str) -> list[tuple[str, int]]:
    return [(f.rule, f.line) for f in check_text(text)]


def only(text: str, rule: str) -> list[Finding]:
    return [f for f in check_text(text) if f.rule == rule]


def test_clean_dockerfile_has_no_findings() -> None:
    text = """\
FROM python:3.12-slim AS base
WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY . .
ARG VERSION=1
LABEL version=$VERSION
CMD ["python", "app.py"]
"""
    assert check_text(text) == []


def test_maintainer_deprecated() -> None:
    (f,) = only("FROM alpine:3\nMAINTAINER me <me@example.com>\n", "MaintainerDeprecated")
    assert (f.level, f.line) == ("warning", 2)
    assert "deprecated" in f.message


def test_json_args_recommended() -> None:
    text = "FROM alpine:3\nCMD echo hi\nENTRYPOINT exec app\nCMD [\"x\"]\n"
    found = only(text, "JSONArgsRecommended")
    assert [(f.line, f.level) for f in found] == [(2, "warning"), (3, "warning")]
    assert "CMD" in found[0].message and "ENTRYPOINT" in found[1].message


def test_json_args_not_reported_after_shell() -> None:
    text = 'FROM alpine:3\nSHELL ["/bin/ash", "-c"]\nCMD echo hi\n'
    assert only(text, "JSONArgsRecommended") == []
    # SHELL is inherited by a stage built on this one.
    text = 'FROM alpine:3 AS a\nSHELL ["/bin/ash", "-c"]\nFROM a\nCMD echo hi\n'
    assert only(text, "JSONArgsRecommended") == []


@pytest.mark.parametrize(
    "install",
    [
        "npm ci",
        "npm install --production",
        "pip install -r requirements.txt",
        "python3 -m pip install .",
        "apt-get update && apt-get install -y curl",
        "apk add --no-cache git",
        "go mod download",
        "cargo fetch",
        "cargo install --path .",
        "DEBIAN_FRONTEND=noninteractive apt-get install -y x",
        "yarn",
    ],
)
def test_copy_all_before_install(install: str) -> None:
    text = f"FROM node:20\nWORKDIR /app\nCOPY . .\nRUN {install}\n"
    (f,) = only(text, "CopyAllBeforeInstall")
    assert (f.line, f.level) == (3, "warning")
    assert "line 4" in f.message


@pytest.mark.parametrize(
    "text",
    [
        "FROM node:20\nCOPY package.json .\nRUN npm ci\nCOPY . .\nRUN npm run build\n",
        "FROM node:20 AS a\nFROM node:20\nCOPY --from=a . .\nRUN npm ci\n",
        "FROM node:20\nCOPY . .\nFROM node:20\nRUN npm ci\n",
        "FROM golang:1\nCOPY . .\nRUN go build ./...\n",
    ],
)
def test_copy_all_before_install_negative(text: str) -> None:
    assert only(text, "CopyAllBeforeInstall") == []


def test_apt_get_update_alone() -> None:
    text = """\
FROM debian:12
RUN apt-get update
RUN apt-get -q update && apt update
RUN apt-get update && apt-get install -y curl
RUN apt-get install -y x
"""
    assert [f.line for f in only(text, "AptGetUpdateAlone")] == [2, 3]


def test_no_cd_in_run() -> None:
    text = """\
FROM debian:12
RUN cd /src && make
RUN make -C /src
RUN ["cd", "/x"]
RUN echo cd
RUN true; cd /tmp
"""
    assert [f.line for f in only(text, "NoCdInRun")] == [2, 4, 6]


def test_undefined_var_warning() -> None:
    text = """\
FROM alpine:3
WORKDIR $APPDIR
ARG APPDIR=/app
WORKDIR $APPDIR
ENV HOME_DIR=/home
USER $HOME_DIRR
COPY $PATH /x
"""
    found = only(text, "UndefinedVar")
    assert [(f.line, f.level) for f in found] == [(2, "warning"), (6, "warning")]
    assert found[0].message == "Usage of undefined variable '$APPDIR'"
    assert found[1].message == "Usage of undefined variable '$HOME_DIRR' (did you mean $HOME_DIR?)"


def test_guarded_references_are_not_undefined() -> None:
    text = """\
FROM ${IMG:-alpine}:3
LABEL a=${A:-x} b=${B-y} c=${C:+z} d=${D?need} e=$$ f=$1
ENV E=${E:-$F}
"""
    found = only(text, "UndefinedVar") + only(text, "UndefinedArgInFrom")
    assert [(f.line, f.message) for f in found] == [
        (3, "Usage of undefined variable '$F'")
    ]


def test_declared_arg_without_value_is_not_undefined() -> None:
    text = "ARG VERSION\nFROM alpine:3\nARG VERSION\nARG OTHER\nLABEL v=$VERSION o=$OTHER\n"
    assert only(text, "UndefinedVar") == []


def test_meta_arg_needs_redeclaring_in_stage() -> None:
    text = "ARG V=1\nFROM alpine:3\nLABEL v=$V\n"
    (f,) = only(text, "UndefinedVar")
    assert f.line == 3


def test_env_and_args_inherited_from_base_stage() -> None:
    text = "FROM alpine:3 AS a\nENV X=1\nARG Y=2\nFROM a\nLABEL x=$X y=$Y\n"
    assert only(text, "UndefinedVar") == []


def test_undefined_arg_in_from_is_an_error() -> None:
    text = "ARG TAG=3\nFROM alpine:$TAGG\nFROM busybox:$TAG\nFROM --platform=$BUILDPLATFORM a:1\n"
    found = only(text, "UndefinedArgInFrom")
    assert [(f.line, f.level) for f in found] == [(2, "error")]
    assert found[0].message == "FROM argument 'TAGG' is not declared (did you mean TAG?)"
    assert has_errors(check_text(text))


def test_stage_name_casing() -> None:
    (f,) = only("FROM alpine:3 AS Builder\n", "StageNameCasing")
    assert (f.line, f.level) == (1, "warning")
    assert "'Builder'" in f.message
    assert only("FROM alpine:3 AS builder\n", "StageNameCasing") == []


def test_from_without_tag() -> None:
    text = """\
ARG IMG=debian
FROM alpine AS base
FROM base
FROM scratch
FROM ubuntu:22.04
FROM registry.example.com:5000/team/app
FROM busybox@sha256:0000000000000000000000000000000000000000000000000000000000000000
FROM $IMG
"""
    assert [f.line for f in only(text, "FromWithoutTag")] == [2, 6, 8]


def test_resolution_errors_are_findings() -> None:
    text = "FROM alpine:3 AS a\nCOPY --from=a /x /y\nMAINTAINER x\n"
    found = check_text(text)
    assert [(f.rule, f.line, f.level) for f in found] == [
        ("InvalidDockerfile", 2, "error"),
        ("MaintainerDeprecated", 3, "warning"),
    ]


def test_parse_errors_raise() -> None:
    with pytest.raises(DockerfileError):
        check_text("")
    with pytest.raises(DockerfileError):
        check_text("FORM alpine\n")


def test_secrets_used_in_arg_or_env() -> None:
    text = """\
ARG GLOBAL_TOKEN=x
FROM alpine:3
ARG NPM_TOKEN
ARG VERSION=1 db_password=hunter2
ENV API_KEY=abc PUBLIC_KEY=pk TOKEN_FILE=/run/t MONKEY=1 Auth=y
"""
    found = only(text, "SecretsUsedInArgOrEnv")
    assert [(f.line, f.level, f.message) for f in found] == [
        (3, "warning", 'Do not use ARG or ENV instructions for sensitive data (ARG "NPM_TOKEN")'),
        (4, "warning",
         'Do not use ARG or ENV instructions for sensitive data (ARG "db_password")'),
        (5, "warning", 'Do not use ARG or ENV instructions for sensitive data (ENV "API_KEY")'),
        (5, "warning", 'Do not use ARG or ENV instructions for sensitive data (ENV "Auth")'),
    ]


@pytest.mark.parametrize(("name", "secret"), [
    ("NPM_TOKEN", True), ("API_KEY", True), ("apikey", True), ("AWS_SECRET_ACCESS_KEY", True),
    ("GITHUB_AUTH", True), ("DB_PASSWD", True), ("MY_PWORD", True), ("CREDENTIALS", True),
    ("GCP_CREDENTIAL_JSON", True), ("secret_MESSAGE", True), ("token", True),
    ("PUBLIC_KEY", False), ("TOKEN_FILE", False), ("KEY_VERSION", False), ("MONKEY", False),
    ("PASSWORDS", False), ("TOKENIZER", False), ("VERSION", False), ("", False),
    ("AUTHOR", False), ("\u017fECRET", True),  # Go's (?i) folds the long s to s
])
def test_looks_secret_follows_buildkits_word_rule(name: str, secret: bool) -> None:
    from dockyard.dockerfile.sensitive import looks_secret

    assert looks_secret(name) is secret


def test_every_rule_has_a_level() -> None:
    assert {level for level, _ in RULES.values()} == {"warning", "error"}


# --- CLI ---------------------------------------------------------------------------------


def test_cli_check_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text("FROM alpine:3\nMAINTAINER me\nRUN cd /x && make\n")
    assert main(["check", "-f", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{path}:2: warning: MaintainerDeprecated: "
        "Maintainer instruction is deprecated in favor of using label",
        f"{path}:3: warning: NoCdInRun: use WORKDIR to change directory instead of 'cd' in RUN",
    ]


def test_cli_check_json_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "Dockerfile.prod"
    path.write_text("FROM alpine:$NOPE\nCMD run\n")
    assert main(["check", "-f", str(path), "--format", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert [(d["rule"], d["level"], d["line"]) for d in doc] == [
        ("UndefinedArgInFrom", "error", 1),
        ("JSONArgsRecommended", "warning", 2),
    ]
    assert all(d["file"] == str(path) for d in doc)
    assert set(doc[0]) == {"rule", "level", "line", "message", "file"}


def test_cli_check_clean_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text('FROM alpine:3\nCMD ["true"]\n')
    assert main(["check", "-f", str(path), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_cli_check_parse_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text("FROM alpine:3\nFORM x\n")
    assert main(["check", "-f", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{path}:2" in captured.err
    assert "Traceback" not in captured.err
