"""The up-to-date check skips only what .dockerignore certainly excludes (issue 12, item
10): every path ``Invocation.pruned()`` returns, and everything below it, is excluded by the
build's own matcher, whatever the ignore file says. A line that looks like a path but is a
pattern (``v]^`` is a regular expression that matches nothing) is not pruned."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard import quick
from dockyard.context.dockerignore import PatternMatcher, parse_dockerignore

_CHARS = "ab.-_/ ]^[*?\\!#$()+{}|~"
_lines = st.text(alphabet=_CHARS, min_size=0, max_size=8)


def _pruned(text: str) -> frozenset[str]:
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Path(tmp)
        (ctx / "Dockerfile").write_text("FROM scratch\n")
        (ctx / ".dockerignore").write_text(text)
        inv = quick.scan([str(ctx)], str(ctx / "store"))
        assert inv is not None
        return inv.pruned()


def test_a_pattern_that_looks_plain_is_not_pruned() -> None:
    assert _pruned("v]^\nnode_modules\n") == frozenset({"node_modules"})
    assert not PatternMatcher(["v]^"]).matches("v]^")  # the build reads v]^ ...
    assert _pruned("a]b\nc[d\ne\\f\n") == frozenset()  # ... so the check must look at it


def test_a_line_the_matcher_trims_is_not_pruned() -> None:
    # "/ /" and "a /" clean to " " and "a ", which the matcher trims again: it excludes
    # nothing and "a", never a path named " " or "a ".
    assert _pruned("/ /\na /\n") == frozenset()
    assert not PatternMatcher(parse_dockerignore("/ /\na /\n")).matches("a ")


@settings(max_examples=300, deadline=None)
@given(st.lists(_lines, min_size=1, max_size=4))
def test_everything_pruned_is_excluded_by_the_build(lines: list[str]) -> None:
    text = "\n".join(lines) + "\n"
    try:
        matcher = PatternMatcher(parse_dockerignore(text))
    except Exception:  # a malformed pattern fails the build before anything is read
        return
    for rel in _pruned(text):
        assert matcher.matches(rel), (text, rel)
        assert matcher.matches(rel + "/below/it"), (text, rel)
