"""Listings as docker prints them (issue 14): ``images --filter/--format/-q``, ``inspect -f``
with the Go-template subset, ``image ls``; and the generated completion scripts and man page."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_api_store import make_image

import dockyard
from dockyard.cli.gotemplate import Template, TemplateError
from dockyard.cli.main import main
from dockyard.errors import UsageError

DOC = {"Id": "sha256:abc", "RepoTags": ["a:1", "b:2"], "Size": 1234,
       "Config": {"Env": ["A=1", "B=2"], "Labels": {"b": "2", "a": "<x>"},
                  "Entrypoint": None, "Cmd": ["sh"]}}


@pytest.mark.parametrize(("text", "expected"), [
    ("{{.Id}}", "sha256:abc"),
    ("{{.Config.Env}}", "[A=1 B=2]"),
    ("{{json .Config.Env}}", '["A=1","B=2"]'),
    ("{{.Config.Env | json}}", '["A=1","B=2"]'),
    ("{{json .Config.Labels}}", '{"b":"2","a":"\\u003cx\\u003e"}'),  # HTML escaped, as Go
    ("{{.Config.Labels}}", "map[a:<x> b:2]"),
    ("{{range .Config.Env}}{{.}};{{end}}", "A=1;B=2;"),
    ("{{range $k, $v := .Config.Labels}}{{$k}}={{$v}} {{end}}", "a=<x> b=2 "),
    ("{{range $i, $t := .RepoTags}}{{$i}}{{$t}}{{end}}", "0a:11b:2"),
    ('{{index .Config.Labels "b"}}', "2"),
    ("{{index .RepoTags 1}}", "b:2"),
    ("{{.Config.Entrypoint}}", "<nil>"),
    ("{{.Nope}}", "<no value>"),
    ("{{if .Config.Entrypoint}}e{{else if .Config.Cmd}}c{{else}}n{{end}}", "c"),
    ("{{with .Config}}{{.Cmd}}{{end}}", "[sh]"),
    ("{{len .RepoTags}} {{.Size}}", "2 1234"),
    ('{{join .RepoTags ", "}}', "a:1, b:2"),
    ('{{printf "%s=%d" .Id .Size}}', "sha256:abc=1234"),
    ("x {{- .Size -}} y", "x1234y"),
    ('{{if eq .Size 1234}}yes{{end}}{{if ne .Id "x"}}!{{end}}', "yes!"),
    ("{{upper (index .RepoTags 0)}}", "A:1"),
    ("{{range .Nope}}x{{else}}empty{{end}}", "empty"),
])
def test_go_template_subset(text: str, expected: str) -> None:
    assert Template(text).render(DOC) == expected


@pytest.mark.parametrize(("text", "message"), [
    ('{{define "x"}}{{end}}', "define is not supported"),
    ('{{template "x"}}', "template is not supported"),
    ("{{.Id", "unclosed action"),
    ("{{nosuch .Id}}", "function 'nosuch' is not supported"),
    ("{{if .Id}}x", "missing {{end}}"),
    ("{{end}}", "unexpected {{end}}"),
    ("{{/* note */}}", "comments are not supported"),
])
def test_go_template_outside_the_subset_is_refused(text: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        Template(text)


def test_go_template_errors_at_run_time_name_the_cause() -> None:
    with pytest.raises(TemplateError, match="can't evaluate field X"):
        Template("{{.Id.X}}").render(DOC)
    with pytest.raises(TemplateError, match="index out of range"):
        Template("{{index .RepoTags 5}}").render(DOC)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    make_image(root, [{"a": b"1"}], ("app:1", "app:2"), created="2024-01-01T00:00:01Z",
               labels={"team": "web", "tier": "front"})
    make_image(root, [{"b": b"2"}], ("tools/lint:latest",), created="2024-02-01T00:00:01Z",
               labels={"team": "ops"})
    make_image(root, [{"c": b"3"}], (), created="2024-03-01T00:00:01Z")
    return root


def _names(rows: tuple[dockyard.ImageSummary, ...]) -> set[str]:
    return {f"{r.repository}:{r.tag}" for r in rows}


def test_images_filters(store: Path) -> None:
    def names(*filters: str) -> set[str]:
        return _names(dockyard.images(filters=filters, root=store))

    assert names() == {"app:1", "app:2", "tools/lint:latest", "<none>:<none>"}
    assert names("reference=app") == {"app:1", "app:2"}
    assert names("reference=app:2") == {"app:2"}
    assert names("reference=*:latest") == set()  # Go's path.Match: * stops at /
    assert names("reference=*/*:latest") == {"tools/lint:latest"}
    assert names("reference=*") == {"app:1", "app:2"}  # * does not cross a /
    assert names("reference=tools/*") == {"tools/lint:latest"}
    assert names("reference=app:1", "reference=tools/lint") == {"app:1", "tools/lint:latest"}
    assert names("dangling=true") == {"<none>:<none>"}
    assert names("dangling=false") == {"app:1", "app:2", "tools/lint:latest"}
    assert names("label=team") == {"app:1", "app:2", "tools/lint:latest"}
    assert names("label=team=ops") == {"tools/lint:latest"}
    assert names("label=team=web", "label=tier=front") == {"app:1", "app:2"}
    assert names("label=team=web", "label=tier=back") == set()
    assert names("before=tools/lint") == {"app:1", "app:2"}
    assert names("since=app:1") == {"tools/lint:latest", "<none>:<none>"}
    assert names("since=app:1", "dangling=false") == {"tools/lint:latest"}
    for bad in ("color=red", "dangling=maybe", "reference"):
        with pytest.raises(UsageError):
            dockyard.images(filters=[bad], root=store)
    with pytest.raises(dockyard.NotFoundError):
        dockyard.images(filters=["before=nothing:here"], root=store)


def test_images_cli_format_quiet_and_alias(store: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    root = ["--root", str(store)]
    assert main([*root, "images", "--format", "{{.Repository}}:{{.Tag}}",
                 "--filter", "reference=app"]) == 0
    assert sorted(capsys.readouterr().out.splitlines()) == ["app:1", "app:2"]
    assert main([*root, "images", "--format", "table {{.Repository}}\\t{{.Tag}}",
                 "-f", "dangling=false"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG"]
    assert lines[0].index("TAG") == lines[1].index(lines[1].split()[1])  # aligned columns
    assert main([*root, "images", "-q", "--filter", "reference=tools/*"]) == 0
    ids = capsys.readouterr().out.split()
    assert len(ids) == 1 and len(ids[0]) == 12
    assert main([*root, "image", "ls", "-q", "--filter", "reference=tools/*"]) == 0
    assert capsys.readouterr().out.split() == ids
    assert main([*root, "images", "--digests"]) == 0
    assert "DIGEST" in capsys.readouterr().out.splitlines()[0]
    assert main([*root, "images", "--format", "{{.Nope"]) == 2
    assert "unclosed action" in capsys.readouterr().err


def test_inspect_format(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = ["--root", str(store)]
    assert main([*root, "inspect", "-f", "{{.Id}}", "app:1", "tools/lint"]) == 0
    ids = capsys.readouterr().out.splitlines()
    assert len(ids) == 2 and all(i.startswith("sha256:") for i in ids)
    assert main([*root, "inspect", "--format", "{{json .Config.Labels}}", "app:1"]) == 0
    assert json.loads(capsys.readouterr().out) == {"team": "web", "tier": "front"}
    assert main([*root, "inspect", "-f", "{{range .Config.Env}}{{.}}{{end}}", "app:2"]) == 0
    assert capsys.readouterr().out == "PATH=/bin\n"
    assert main([*root, "image", "inspect", "-f", "{{index .RepoTags 0}}", "app:1"]) == 0
    assert capsys.readouterr().out.strip() in ("app:1", "app:2")
    assert main([*root, "inspect", "-f", "{{define}}", "app:1"]) == 2
    assert "define is not supported" in capsys.readouterr().err


# ---------------------------------------------------------------- completion and man page
def _script(tmp_path: Path, shell: str) -> Path:
    from dockyard.cli.completion import render

    path = tmp_path / f"dockyard.{shell}"
    path.write_text(render(shell))
    return path


def _bash_complete(script: Path, line: str) -> list[str]:
    words = line.split(" ")
    code = (f"source {script}\nCOMP_WORDS=({' '.join(repr(w) for w in words)})\n"
            f"COMP_CWORD={len(words) - 1}\n_dockyard\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n")
    out = subprocess.run(["bash", "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_bash_completion(tmp_path: Path) -> None:
    script = _script(tmp_path, "bash")
    assert "build" in _bash_complete(script, "dockyard bu")
    assert "completion" in _bash_complete(script, "dockyard --root /x comp")
    assert set(_bash_complete(script, "dockyard build --pro")) >= {"--progress",
                                                                     "--provenance"}
    assert _bash_complete(script, "dockyard build --progress p") == ["plain"]
    assert _bash_complete(script, "dockyard image l") == ["ls", "list", "load"]
    assert "--filter" in _bash_complete(script, "dockyard image ls --fi")
    assert _bash_complete(script, "dockyard debug ") == ["parse", "expand", "stages"]
    assert "--dump" in _bash_complete(script, "dockyard debug parse --")
    assert _bash_complete(script, "dockyard completion ") == ["bash", "zsh", "fish"]


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_completion(tmp_path: Path) -> None:
    script = _script(tmp_path, "fish")

    def complete(line: str) -> list[str]:
        out = subprocess.run(["fish", "--no-config", "-c",
                              f"source {script}; complete -C '{line}'"],
                             capture_output=True, text=True, check=True)
        return [row.split("\t")[0] for row in out.stdout.splitlines()]

    assert "build" in complete("dockyard bu")
    assert "--progress" in complete("dockyard build --prog")
    assert set(complete("dockyard build --progress ")) == {"auto", "tty", "plain", "rawjson",
                                                           "quiet"}
    assert "ls" in complete("dockyard image ")
    assert "--filter" in complete("dockyard images --fil")


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_completion_loads(tmp_path: Path) -> None:
    script = _script(tmp_path, "zsh")
    subprocess.run(["zsh", "-n", str(script)], check=True)
    code = (f"autoload -Uz compinit && compinit -u -d {tmp_path}/zcd; source {script}; "
            "print -r -- ${_comps[dockyard]}; whence -w _dockyard_build _dockyard_image_ls")
    out = subprocess.run(["zsh", "-f", "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "HOME": str(tmp_path)})
    assert out.stdout.splitlines() == ["_dockyard", "_dockyard_build: function",
                                       "_dockyard_image_ls: function"]


def test_completion_command_prints_scripts(capsys: pytest.CaptureFixture[str]) -> None:
    for shell in ("bash", "zsh", "fish"):
        assert main(["completion", shell]) == 0
        assert "dockyard" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["completion", "tcsh"])


# ----------------------------------------------------------------------- broken pipes
@pytest.mark.parametrize("command", [["save", "app:1"], ["save", "--format", "oci", "app:1"],
                                     ["export", "app:1"], ["cp", "app:1:/a", "-"],
                                     ["images"], ["inspect", "app:1"]])
def test_a_closed_pipe_ends_quietly_with_141(store: Path, tmp_path: Path,
                                             command: list[str]) -> None:
    import sys

    # a layer bigger than any pipe buffer, so the writer meets the closed pipe
    make_image(store, [{"a": os.urandom(1 << 20)}], ("app:1",))
    for n in range(40):
        make_image(store, [{"n": str(n).encode()}], (f"many/n{n}:1",))
    proc = subprocess.Popen([sys.executable, "-m", "dockyard.cli.main", "--root", str(store),
                             *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(10)
    proc.stdout.close()  # `| head -c 10`
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=60)
    if command[0] in ("images", "inspect") and code == 0:
        return  # all of it fitted in the pipe before it was closed
    assert code == 141, err
    assert err == ""
