""".dockerignore with Docker's exact rules, and Go's ``filepath.Match`` for COPY wildcards.

Patterns follow moby/patternmatcher as BuildKit uses it:

* the ignore file is read line by line; a line starting with ``#`` is a comment, lines are
  trimmed, ``!`` marks an exception, each pattern goes through Go's ``filepath.Clean`` and a
  leading ``/`` is dropped, so every pattern is anchored at the context root;
* ``*`` and ``?`` never cross ``/``, ``**`` crosses any number of directories, ``[...]`` and
  ``\\`` escapes are passed through as in Docker;
* the last matching pattern wins, and a path is excluded when it or one of its parent
  directories matches;
* a walk may prune an excluded directory unless an exception pattern starts with that
  directory's path (Docker's rule, so ``!**/keep`` under an excluded dir is *not* honoured).

``<Dockerfile>.dockerignore`` next to the Dockerfile takes precedence over the context's
``.dockerignore``. The Dockerfile and the ignore file are always readable by the frontend
(they are read directly, not through the filter) but, as with BuildKit, a ``COPY`` does not
see them when the patterns exclude them.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from dockyard.errors import ContextError

__all__ = [
    "MatchInfo",
    "PatternMatcher",
    "go_clean",
    "go_match",
    "has_wildcards",
    "load_dockerignore",
    "parse_dockerignore",
]

_REGEX_ESCAPED = frozenset(".+()|{}$")


def go_clean(path: str) -> str:
    """Go's ``path.Clean``: collapse slashes, drop ``.``, resolve ``..`` lexically."""
    if path == "":
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for comp in path.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(comp)
    out = "/".join(parts)
    if rooted:
        return "/" + out
    return out or "."


# ---------------------------------------------------------------------------------------------
# Go filepath.Match
# ---------------------------------------------------------------------------------------------


class _BadPattern(ValueError):
    pass


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    """One (possibly escaped) character inside ``[...]``; Go's ``getEsc``."""
    if i >= len(pattern) or pattern[i] in "-]":
        raise _BadPattern(pattern)
    ch = pattern[i]
    if ch == "\\":
        i += 1
        if i >= len(pattern):
            raise _BadPattern(pattern)
        ch = pattern[i]
    return ch, i + 1


def _translate_go_glob(pattern: str) -> str:
    """Translate a Go ``filepath.Match`` pattern to a Python regex (raises _BadPattern)."""
    out: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            while i < n and pattern[i] == "*":
                i += 1
            out.append("[^/]*")
            continue
        if ch == "?":
            out.append("[^/]")
            i += 1
            continue
        if ch == "\\":
            i += 1
            if i >= n:
                raise _BadPattern(pattern)
            out.append(re.escape(pattern[i]))
            i += 1
            continue
        if ch == "[":
            i += 1
            negate = i < n and pattern[i] == "^"
            if negate:
                i += 1
            ranges: list[str] = []
            while True:
                if i < n and pattern[i] == "]" and ranges:
                    i += 1
                    break
                lo, i = _class_char(pattern, i)
                hi = lo
                if i < n and pattern[i] == "-":
                    hi, i = _class_char(pattern, i + 1)
                    if hi < lo:
                        raise _BadPattern(pattern)
                ranges.append(re.escape(lo) if lo == hi else f"{re.escape(lo)}-{re.escape(hi)}")
            out.append("[" + ("^" if negate else "") + "".join(ranges) + "]")
            continue
        out.append(re.escape(ch))
        i += 1
    return "".join(out)


_GLOB_CACHE: dict[str, re.Pattern[str]] = {}


def _compile_go_glob(pattern: str) -> re.Pattern[str]:
    compiled = _GLOB_CACHE.get(pattern)
    if compiled is None:
        compiled = re.compile(_translate_go_glob(pattern), re.DOTALL)
        if len(_GLOB_CACHE) < 4096:
            _GLOB_CACHE[pattern] = compiled
    return compiled


def go_match(pattern: str, name: str) -> bool:
    """Go's ``filepath.Match`` on Linux; raises ContextError for a malformed pattern."""
    try:
        return _compile_go_glob(pattern).fullmatch(name) is not None
    except _BadPattern:
        raise ContextError(f"syntax error in pattern: {pattern!r}") from None


def has_wildcards(name: str) -> bool:
    """True if ``name`` holds an unescaped ``*``, ``?`` or ``[`` (fsutil's containsWildcards)."""
    i = 0
    while i < len(name):
        ch = name[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "*?[":
            return True
        i += 1
    return False


# ---------------------------------------------------------------------------------------------
# moby/patternmatcher
# ---------------------------------------------------------------------------------------------


class _MatchType(Enum):
    EXACT = 1
    PREFIX = 2
    SUFFIX = 3
    REGEXP = 4


@dataclass(frozen=True, slots=True)
class _Pattern:
    """One compiled pattern line."""

    text: str  # cleaned, without the leading "!"
    exclusion: bool
    kind: _MatchType
    regex: re.Pattern[str] | None

    def match(self, path: str) -> bool:
        if self.kind is _MatchType.EXACT:
            return path == self.text
        if self.kind is _MatchType.PREFIX:
            return path.startswith(self.text[:-2])
        if self.kind is _MatchType.SUFFIX:
            suffix = self.text[2:]
            if path.endswith(suffix):
                return True
            return suffix[:1] == "/" and path == suffix[1:]
        assert self.regex is not None
        return self.regex.match(path) is not None


def _compile_pattern(text: str, exclusion: bool) -> _Pattern:
    """Docker's pattern -> regex translation, with its exact/prefix/suffix fast paths."""
    reg = ["^"]
    kind = _MatchType.EXACT
    i = 0
    n = len(text)
    index = 0
    while i < n:
        ch = text[i]
        i += 1
        if ch == "*":
            if i < n and text[i] == "*":
                i += 1
                if i < n and text[i] == "/":
                    i += 1
                if i >= n:
                    if kind is _MatchType.EXACT:
                        kind = _MatchType.PREFIX
                    else:
                        reg.append(".*")
                        kind = _MatchType.REGEXP
                else:
                    reg.append("(.*/)?")
                    kind = _MatchType.REGEXP
                if index == 0:
                    kind = _MatchType.SUFFIX
            else:
                reg.append("[^/]*")
                kind = _MatchType.REGEXP
        elif ch == "?":
            reg.append("[^/]")
            kind = _MatchType.REGEXP
        elif ch in _REGEX_ESCAPED:
            reg.append("\\" + ch)
        elif ch == "\\":
            if i < n:
                reg.append("\\" + text[i])
                i += 1
                kind = _MatchType.REGEXP
            else:
                reg.append("\\\\")
        elif ch in "[]":
            reg.append(ch)
            kind = _MatchType.REGEXP
        else:
            reg.append(ch)
        index += 1
    regex: re.Pattern[str] | None = None
    if kind is _MatchType.REGEXP:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                regex = re.compile("".join(reg) + r"\Z")
        except re.error as err:
            raise ContextError(f"invalid pattern {text!r} in .dockerignore: {err}") from None
    return _Pattern(text, exclusion, kind, regex)


@dataclass(frozen=True, slots=True)
class MatchInfo:
    """Per-pattern results for a directory, so its children need not re-check parents."""

    parent_matched: tuple[bool, ...] = ()


class PatternMatcher:
    """Docker's ``PatternMatcher``: ``matches(path)`` is ``MatchesOrParentMatches``."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self._patterns: list[_Pattern] = []
        self.exclusions = False
        for raw in patterns:
            p = raw.strip()
            if not p:
                continue
            p = go_clean(p)
            exclusion = False
            if p[0] == "!":
                if len(p) == 1:
                    raise ContextError('illegal exclusion pattern: "!"')
                exclusion = True
                p = p[1:]
                self.exclusions = True
            try:
                _translate_go_glob(p)
            except _BadPattern:
                raise ContextError(f"syntax error in pattern: {p!r}") from None
            self._patterns.append(_compile_pattern(p, exclusion))

    @property
    def patterns(self) -> list[tuple[str, bool]]:
        """The active patterns as ``(cleaned text, is_exception)``."""
        return [(p.text, p.exclusion) for p in self._patterns]

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def matches(self, path: str) -> bool:
        """True if ``path`` (slash-separated, relative to the root) is excluded."""
        path = go_clean(path)
        if path == ".":
            return False
        matched = False
        parent = path.rpartition("/")[0]
        parent_dirs = parent.split("/") if parent else []
        for pattern in self._patterns:
            if pattern.exclusion != matched:
                continue
            hit = pattern.match(path)
            if not hit and parent_dirs:
                for i in range(len(parent_dirs)):
                    if pattern.match("/".join(parent_dirs[: i + 1])):
                        hit = True
                        break
            if hit:
                matched = not pattern.exclusion
        return matched

    def matches_with_parent(self, path: str, parent: MatchInfo | None) -> tuple[bool, MatchInfo]:
        """``MatchesUsingParentResults``: the walk-friendly form of :meth:`matches`."""
        parent_matched = parent.parent_matched if parent is not None else ()
        if parent_matched and len(parent_matched) != len(self._patterns):
            raise ValueError("MatchInfo from another matcher")
        if not parent_matched:
            parent_str = path.rpartition("/")[0]
            parent_dirs = parent_str.split("/") if parent_str else []
        matched = False
        results: list[bool] = []
        for idx, pattern in enumerate(self._patterns):
            hit = parent_matched[idx] if parent_matched else False
            if not hit:
                if pattern.exclusion != matched:
                    results.append(False)
                    continue
                hit = pattern.match(path)
                if not hit and not parent_matched:
                    for i in range(len(parent_dirs)):
                        if pattern.match("/".join(parent_dirs[: i + 1])):
                            hit = True
                            break
            results.append(hit)
            if hit:
                matched = not pattern.exclusion
        return matched, MatchInfo(tuple(results))

    def must_descend(self, dir_path: str) -> bool:
        """For an excluded directory: may an exception re-include something below it?

        Docker's rule: only when an exception pattern's text starts with ``dir_path + "/"``.
        """
        if not self.exclusions:
            return False
        prefix = dir_path + "/"
        return any(p.exclusion and (p.text + "/").startswith(prefix) for p in self._patterns)


def parse_dockerignore(text: str) -> list[str]:
    """The patterns of a .dockerignore file, as BuildKit's ignorefile reader returns them."""
    patterns: list[str] = []
    for number, raw in enumerate(text.splitlines()):
        line = raw
        if number == 0 and line.startswith("\ufeff"):
            line = line[1:]
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        invert = line.startswith("!")
        if invert:
            line = line[1:].strip()
        if line:
            line = go_clean(line)
            if len(line) > 1 and line.startswith("/"):
                line = line[1:]
        patterns.append("!" + line if invert else line)
    return patterns


def _dockerignore_candidates(context_root: Path, dockerfile_name: str) -> Iterator[Path]:
    if dockerfile_name and dockerfile_name != "-":
        dockerfile = Path(dockerfile_name)
        if not dockerfile.is_absolute():
            dockerfile = context_root / dockerfile
        yield dockerfile.with_name(dockerfile.name + ".dockerignore")
    yield context_root / ".dockerignore"


def load_dockerignore(context_root: Path, dockerfile_name: str) -> list[str]:
    """Read the ignore patterns for a build.

    ``<dockerfile_name>.dockerignore`` (next to the Dockerfile; a relative name is taken from
    the context root) wins over ``<context_root>/.dockerignore``. No file: no patterns.
    """
    for candidate in _dockerignore_candidates(context_root, dockerfile_name):
        try:
            data = candidate.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as err:
            raise ContextError(f"cannot read {candidate}: {err.strerror}") from None
        return parse_dockerignore(data.decode("utf-8", errors="surrogateescape"))
    return []
