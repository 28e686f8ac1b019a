"""Parser behaviour beyond the golden dumps: directives, warnings, heredocs, limits, Go quoting."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.dockerfile.instructions import parse_instruction
from dockyard.dockerfile.parser import go_quote, parse
from dockyard.errors import DockerfileError


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("plain", '"plain"'),
        ('a"b\\c', '"a\\"b\\\\c"'),
        ("\t\n\r\a\b\f\v", '"\\t\\n\\r\\a\\b\\f\\v"'),
        ("\x00\x1b\x7f", '"\\x00\\x1b\\x7f"'),
        ("café ☕", '"café ☕"'),
        ("\u00a0\u2003\u200b\ufeff", '"\\u00a0\\u2003\\u200b\\ufeff"'),
        ("\U0001f600", '"\U0001f600"'),
        ("\U000e0001", '"\\U000e0001"'),
        ("\udcff", '"\\xff"'),
    ],
)
def test_go_quote(value: str, quoted: str) -> None:
    assert go_quote(value) == quoted


def test_directives() -> None:
    result = parse("# syntax=docker/dockerfile:1.7\n# CHECK=skip=all\n# escape=`\nFROM a\n")
    assert result.directives.syntax == "docker/dockerfile:1.7"
    assert result.directives.check == "skip=all"
    assert result.directives.escape == "`"


def test_syntax_after_shebang_is_detected_but_escape_is_not() -> None:
    result = parse("#!/usr/bin/env x\n# syntax=foo/bar\nFROM a `\n b\n")
    assert result.directives.syntax == "foo/bar"
    assert result.directives.escape == "\\"
    assert [n.instruction for n in result.nodes] == ["from", "b"]


def test_repeated_directive_is_an_error() -> None:
    with pytest.raises(DockerfileError, match="only one escape parser directive"):
        parse("# escape=`\n# escape=`\nFROM a\n")


def test_empty_continuation_warning() -> None:
    result = parse("FROM a\nRUN a \\\n\n b\n")
    assert result.warnings == (("Empty continuation line found in: RUN a  b", 4),)
    assert (result.nodes[1].start_line, result.nodes[1].end_line) == (2, 4)


def test_heredoc_attributes() -> None:
    result = parse("FROM a\nRUN 3<<-'EOF' <<B\n\tx $Y\n\tEOF\nb\nB\n")
    first, second = result.nodes[1].heredocs
    assert (first.name, first.content, first.expand, first.chomp, first.file_descriptor) == (
        "EOF", "x $Y\n", False, True, 3
    )
    assert (second.name, second.content, second.expand, second.chomp) == ("B", "b\n", True, False)
    assert result.nodes[1].end_line == 6


def test_unterminated_heredoc_location() -> None:
    with pytest.raises(DockerfileError) as info:
        parse("FROM a\nRUN <<EOF\nbody\n", "Dockerfile.prod")
    assert str(info.value) == "Dockerfile.prod:2: unterminated heredoc"
    assert info.value.location is not None and info.value.location.end_line == 3


def test_line_limit() -> None:
    ok = "FROM a\nRUN " + "x" * (65535 - 4) + "\n"
    assert len(parse(ok).nodes) == 2
    with pytest.raises(DockerfileError, match="max allowed size of 65535"):
        parse("FROM a\nRUN " + "x" * (65536 - 4) + "\n")
    with pytest.raises(DockerfileError, match="max allowed size"):
        parse("FROM a\nRUN " + "é" * 40000 + "\n")  # 80 KB in UTF-8


def test_no_instructions_location() -> None:
    with pytest.raises(DockerfileError) as info:
        parse("# only\n# comments\n")
    assert info.value.message == "file with no instructions"


def test_5000_lines() -> None:
    # Speed lives in bench/bench_frontend.py; this checks only that a long file parses whole.
    lines = ["FROM busybox AS base"]
    for i in range(4999):
        lines.append(
            [f"RUN echo {i} && make -j4 \\", "    install", f"ENV K{i}=v{i}",
             f"COPY --from=base /a{i} /b", "LABEL a=b"][i % 5]
        )
    result = parse("\n".join(lines) + "\n")
    assert len(result.nodes) == 4000  # each "RUN ... \" continues onto the next line
    assert result.nodes[-1].end_line == 5000


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("FROMRUNCOPYENVonbuild <>-='\"\\`#[]{},:$\t\n\r xé\u00a0")), max_size=80))
def test_random_text_only_raises_dockerfile_error(text: str) -> None:
    try:
        result = parse(text)
    except DockerfileError:
        return
    for node in result.nodes:
        node.dump()
        with contextlib.suppress(DockerfileError):
            parse_instruction(node, filename="Dockerfile", source=text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_random_unicode_only_raises_dockerfile_error(text: str) -> None:
    try:
        result = parse("FROM a\n" + text)
    except DockerfileError:
        return
    for node in result.nodes:
        node.dump()
        with contextlib.suppress(DockerfileError):
            parse_instruction(node)
