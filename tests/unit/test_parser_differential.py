"""Differential test against PyPI ``dockerfile`` (BuildKit v0.12.5's Go parser, via cgo).

Known, deliberate differences handled here: the current BuildKit (which dockyard follows) adds a
separator node after each ENV/LABEL key/value pair, and our heredoc content is already chomped
for ``<<-``; the wrapper reports ONBUILD's inner instruction as ``sub_cmd`` with the outer flags
and appends heredoc bodies to ``original``.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_parser_corpus_data import CORPUS

from dockyard.dockerfile.parser import chomp_heredoc_content, parse
from dockyard.errors import DockerfileError

dockerfile = pytest.importorskip("dockerfile")


def _ours(text: str) -> tuple[Any, dict[tuple[int, int], bool]]:
    try:
        result = parse(text)
    except DockerfileError:
        return "error", {}
    out = []
    chomps: dict[tuple[int, int], bool] = {}
    for i, node in enumerate(result.nodes):
        target = node.inner if node.inner is not None else node
        args = ("",) if target.inner is not None else target.args
        if target.instruction in ("env", "label"):
            args = tuple(a for k, a in enumerate(args) if k % 3 != 2)
        for j, doc in enumerate(node.heredocs):
            chomps[(i, j)] = doc.chomp
        docs = tuple((d.name, d.content) for d in node.heredocs) if target is node else ()
        out.append((
            node.instruction, target.instruction if target is not node else None, target.json,
            node.original, node.start_line, node.end_line, node.flags, args, docs,
        ))
    return out, chomps


def _theirs(text: str, chomps: dict[tuple[int, int], bool]) -> Any:
    try:
        commands = dockerfile.parse_string(text)
    except dockerfile.GoParseError:
        return "error"
    out = []
    for i, c in enumerate(commands):
        docs = tuple(
            (h.name, chomp_heredoc_content(h.content) if chomps.get((i, j)) else h.content)
            for j, h in enumerate(c.heredocs)
        )
        out.append((
            (c.cmd or "").lower(), (c.sub_cmd or "").lower() or None, c.json,
            (c.original or "").split("\n")[0], c.start_line, c.end_line, c.flags, c.value, docs,
        ))
    return out


def test_corpus_is_varied() -> None:
    assert len(CORPUS) >= 60


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_same_as_buildkit(name: str) -> None:
    text = CORPUS[name]
    ours, chomps = _ours(text)
    assert ours == _theirs(text, chomps)
