"""``dockyard debug parse`` through the real CLI entry point."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from dockyard.cli.main import main


def write(tmp_path: Path, text: str, name: str = "Dockerfile") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_dump(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "FROM busybox AS b\nENV a b\nONBUILD COPY --from=b x y\nFORM z\n")
    assert main(["debug", "parse", "-f", str(path), "--dump"]) == 0
    assert capsys.readouterr().out == (
        '(from "busybox" "AS" "b")\n(env "a" "b" "")\n'
        '(onbuild (copy ["--from=b"] "x" "y"))\n(form "")\n'
    )


def test_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "FROM a\nCOPY --chmod=644 <<-EOF /x\n\thi\n\tEOF\n")
    assert main(["debug", "parse", "-f", str(path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[1] == {
        "instruction": "COPY", "flags": ["--chmod=644"], "args": ["<<-EOF", "/x"],
        "heredocs": [{"name": "EOF", "content": "hi\n", "expand": True, "chomp": True}],
        "start_line": 2, "end_line": 4, "original": "COPY --chmod=644 <<-EOF /x",
    }


def test_default_file_and_stdin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "FROM a\n")
    monkeypatch.chdir(tmp_path)
    assert main(["debug", "parse", "--dump"]) == 0
    assert capsys.readouterr().out == '(from "a")\n'
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"RUN x\n")))
    assert main(["debug", "parse", "-f", "-", "--dump"]) == 0
    assert capsys.readouterr().out == '(run "x")\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "file with no instructions"),
        ("# c\n", "file with no instructions"),
        ("FROM a\nENV x\n", "ENV must have two arguments"),
        ('FROM a\nCMD ["a", 1]\n', "arrays must be comprised of strings only"),
        ("FROM a\nRUN <<EOF\nx\n", "unterminated heredoc"),
        ("FROM a\nRUN " + "x" * 70000 + "\n", "max allowed size"),
    ],
)
def test_errors_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = write(tmp_path, text, "Dockerfile.prod")
    assert main(["debug", "parse", "-f", str(path), "--dump"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err and "Dockerfile.prod:" in captured.err
    assert "Traceback" not in captured.err


def test_warnings_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "FROM a\nRUN a \\\n\n b\n")
    assert main(["debug", "parse", "-f", str(path), "--dump"]) == 0
    captured = capsys.readouterr()
    assert captured.out == '(from "a")\n(run "a  b")\n'
    assert "Empty continuation line" in captured.err


def test_unknown_instruction_still_dumps_but_is_not_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "FROM a\nCOPY --bogus=1 a b\n")
    assert main(["debug", "parse", "-f", str(path), "--dump"]) == 0
    assert capsys.readouterr().out == '(from "a")\n(copy ["--bogus=1"] "a" "b")\n'
