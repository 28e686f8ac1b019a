"""``dockyard debug expand`` through the CLI entry point."""

from __future__ import annotations

import pytest

from dockyard.cli.main import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["debug", "expand", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_expand_word(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--env", "A=x y", "--env", "B", "--", "${A}-${B:-def}-'$A'") == (
        0, "x y-def-$A\n", ""
    )


def test_expand_later_env_wins(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--env", "A=1", "--env", "A=2", "$A")[1] == "2\n"


def test_expand_words(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--words", "--env", "A=x  y", "--", 'a $A "b c"') == (
        0, "a\nx\ny\nb c\n", ""
    )


def test_expand_zero_words_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--words", "--", "$EMPTY  ''") == (0, "", "")


def test_expand_empty_result_prints_newline(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "$NOPE") == (0, "\n", "")


def test_expand_backtick_escape(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--escape", "`", "--env", "A=1", "--", "`$A\\$A")[1] == "$A\\1\n"


def test_expand_error_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--", "${X:?must be set}")
    assert code == 1
    assert out == ""
    assert "X: must be set" in err
    assert "Traceback" not in err


def test_expand_bad_escape_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--escape", "x", "a")
    assert code == 2
    assert "--escape" in err
