"""Docker's .dockerignore rules: a table of Docker's behaviour, the file reader, and a
property test against a brute-force component-wise reference."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.context.dockerignore import (
    PatternMatcher,
    go_clean,
    go_match,
    load_dockerignore,
    parse_dockerignore,
)
from dockyard.errors import ContextError

# (patterns, path, excluded) — behaviour of moby/patternmatcher MatchesOrParentMatches.
TABLE: list[tuple[list[str], str, bool]] = [
    (["*.go"], "main.go", True),
    (["*.go"], "cmd/main.go", False),  # anchored at the root; * never crosses /
    (["**/*.go"], "cmd/x/main.go", True),
    (["**/*.go"], "main.go", True),
    (["docs"], "docs/guide/readme.md", True),  # a parent dir matches
    (["docs"], "docsx", False),
    (["docs/**"], "docs", False),  # "docs/**" is a prefix match on "docs/"
    (["docs/**"], "docs/a", True),
    (["**"], "anything/at/all", True),
    (["*"], "a/b/c", True),  # "a" matches as a parent
    (["*.md", "!README.md"], "README.md", False),
    (["*.md", "!README.md"], "CHANGES.md", True),
    (["*.md", "!README.md", "README.md"], "README.md", True),  # last match wins
    (["docs", "!docs/keep.md"], "docs/keep.md", False),
    (["docs", "!docs/keep.md"], "docs/other.md", True),
    (["a?c"], "abc", True),
    (["a?c"], "a/c", False),
    (["[a-c]x"], "bx", True),
    (["[a-c]x"], "dx", False),
    (["[^a]x"], "bx", True),
    (["**foo"], "afoo", True),  # Docker's suffix fast path: "**foo" is a plain suffix
    (["**/foo"], "afoo", False),
    (["**/foo"], "foo", True),
    (["**/foo"], "x/y/foo", True),
    (["foo**"], "foobar/baz", True),
    (["a/**/b"], "a/b", True),
    (["a/**/b"], "a/x/y/b", True),
    (["a/**/b"], "a/x/y/c", False),
    (["dir/"], "dir/x", True),  # Clean drops the trailing slash
    (["./foo"], "foo", True),
    (["foo/../bar"], "bar", True),
    (["a\\*b"], "a*b", True),
    (["a\\*b"], "axb", False),
    (["a.b"], "axb", False),  # regex metacharacters are literal
    (["a+b"], "a+b", True),
    (["(x)"], "(x)", True),
    (["*/temp*"], "somedir/temporary.txt", True),
    (["*/*/temp*"], "somedir/subdir/temporary.txt", True),
    (["temp?"], "temp1", True),
    (["**/*.log", "!important/*.log"], "important/x.log", False),
    (["**/*.log", "!important/*.log"], "other/x.log", True),
    (["node_modules"], "node_modules", True),
    (["node_modules"], "src/node_modules", False),
    (["*", "!Dockerfile"], "Dockerfile", False),
    (["*", "!Dockerfile"], "src", True),
    ([" spaced.txt "], "spaced.txt", True),
    ([""], "x", False),
]


@pytest.mark.parametrize(("patterns", "path", "excluded"), TABLE)
def test_docker_table(patterns: list[str], path: str, excluded: bool) -> None:
    assert PatternMatcher(patterns).matches(path) is excluded


@pytest.mark.parametrize(("patterns", "path", "excluded"), TABLE)
def test_parent_results_agree(patterns: list[str], path: str, excluded: bool) -> None:
    matcher = PatternMatcher(patterns)
    info = None
    parts = path.split("/")
    result = False
    for i in range(len(parts)):
        result, info = matcher.matches_with_parent("/".join(parts[: i + 1]), info)
    assert result is excluded


def test_root_is_never_excluded() -> None:
    assert PatternMatcher(["**"]).matches(".") is False


@pytest.mark.parametrize("bad", ["[", "a[", "[]", "[a-]", "a\\", "!"])
def test_bad_patterns(bad: str) -> None:
    with pytest.raises(ContextError):
        PatternMatcher([bad])


def test_must_descend_follows_dockers_prefix_rule() -> None:
    m = PatternMatcher(["docs", "!docs/keep/*.md"])
    assert m.matches("docs")
    assert m.must_descend("docs")
    assert m.must_descend("docs/keep")
    assert not m.must_descend("other")
    # An exception that does not start with the dir's path does not reach into it.
    m2 = PatternMatcher(["docs", "!**/keep.md"])
    assert not m2.must_descend("docs")
    assert not PatternMatcher(["docs"]).must_descend("docs")


def test_reader() -> None:
    text = (
        "\ufeff# comment\n"
        "  *.pyc  \n"
        "\n"
        " # not a comment after spaces is a pattern\n"
        "/abs/path/\n"
        "! keep.pyc\n"
        "a//b/../c\n"
        "!/rooted\n"
        "#another\n"
    )
    assert parse_dockerignore(text) == [
        "*.pyc",
        "# not a comment after spaces is a pattern",
        "abs/path",
        "!keep.pyc",
        "a/c",
        "!rooted",
    ]


def test_dockerfile_specific_ignore_wins(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("general\n")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "app.Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "build" / "app.Dockerfile.dockerignore").write_text("specific\n")
    assert load_dockerignore(tmp_path, "build/app.Dockerfile") == ["specific"]
    assert load_dockerignore(tmp_path, "Dockerfile") == ["general"]
    absolute = str(tmp_path / "build" / "app.Dockerfile")
    assert load_dockerignore(tmp_path, absolute) == ["specific"]
    assert load_dockerignore(tmp_path / "build", "Dockerfile") == []


@pytest.mark.parametrize(
    ("path", "clean"),
    [
        ("", "."),
        ("a//b/", "a/b"),
        ("/../x", "/x"),
        ("../x/..", ".."),
        ("./a/./b", "a/b"),
        ("/", "/"),
    ],
)
def test_go_clean(path: str, clean: str) -> None:
    assert go_clean(path) == clean


@pytest.mark.parametrize(
    ("pattern", "name", "ok"),
    [
        ("*.txt", "a.txt", True),
        ("*.txt", "d/a.txt", False),
        ("d/*", "d/a", True),
        ("[!a]x", "!x", True),  # Go uses ^ for negation, ! is literal
        ("[\\]]", "]", True),
        ("\\[x", "[x", True),
        ("a?", "a/", False),
    ],
)
def test_go_match(pattern: str, name: str, ok: bool) -> None:
    assert go_match(pattern, name) is ok


# ---- property test against a brute-force reference --------------------------------------

_COMPONENTS = ["a", "b", "ab", "c"]
_PATTERN_COMPONENTS = ["a", "b", "ab", "*", "a*", "?", "**"]


def _component_match(pattern: list[str], path: list[str]) -> bool:
    """Reference: ``**`` as zero or more components, anything else via Go's
    filepath.Match (a trailing ``**`` is handled by the caller)."""
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_component_match(rest, path[i:]) for i in range(len(path) + 1))
    return bool(path) and go_match(head, path[0]) and _component_match(rest, path[1:])


def _reference(patterns: list[tuple[bool, list[str]]], path: list[str]) -> bool:
    result = False
    for exclusion, comps in patterns:
        if comps == ["**"]:
            hit = True
        elif comps[-1] == "**" and len(comps) > 1:
            # "x/**": a prefix match on "x/", so x itself only through parents (never).
            hit = any(_component_match(comps[:-1], path[:i]) for i in range(1, len(path)))
        else:
            hit = any(_component_match(comps, path[:i]) for i in range(1, len(path) + 1))
        if hit:
            result = not exclusion
    return result


_pattern = st.tuples(
    st.booleans(),
    st.lists(st.sampled_from(_PATTERN_COMPONENTS), min_size=1, max_size=3).filter(
        # adjacent "**" and a leading "**" followed by a non-** are fine; "***" is not made
        lambda comps: all(not (x == "**" and y == "**") for x, y in itertools.pairwise(comps))
    ),
)


@settings(max_examples=400, deadline=None)
@given(
    patterns=st.lists(_pattern, min_size=1, max_size=4),
    path=st.lists(st.sampled_from(_COMPONENTS), min_size=1, max_size=4),
)
def test_matches_reference(patterns: list[tuple[bool, list[str]]], path: list[str]) -> None:
    texts = [("!" if exc else "") + "/".join(comps) for exc, comps in patterns]
    expected = _reference(patterns, path)
    assert PatternMatcher(texts).matches("/".join(path)) is expected
