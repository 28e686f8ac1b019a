"""Dockerfile word expansion, with the semantics of BuildKit's ``shell.Lex``.

A word such as ``"${BASE:-alpine}:$TAG"`` is processed left to right:

* ``$NAME``, ``${NAME}`` and the modifiers ``:-  -  :+  +  :?  ?  #  ##  %  %%  /  //``
  (the ``:`` forms treat an empty value as unset);
* single quotes keep everything literally; double quotes keep everything but ``$`` and
  escapes of ``"``, ``$`` and the escape character;
* the escape character (backslash, or backtick with ``# escape=```) escapes the next
  character outside quotes;
* :meth:`Lexer.process_words` additionally splits on unquoted, unescaped white space,
  including white space that came out of a variable's value.

Every failure raises :class:`~dockyard.errors.ExpansionError` without a location; the caller
knows the instruction and adds it with ``.located(...)``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

from dockyard.dockerfile.parser import go_quote
from dockyard.errors import ExpansionError

__all__ = ["Expansion", "Lexer", "go_quote"]

_EOF = ""
# What Go's fmt prints for string(rune(-1)), i.e. for a modifier that is end of input.
_EOF_TEXT = "\ufffd"
_SPECIAL_PARAMS = frozenset("@*#?-$!0")
# Go's unicode.IsSpace: the Latin-1 spaces plus the Unicode White_Space property.
_GO_SPACES = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
)


def _is_space(ch: str) -> bool:
    return ch in _GO_SPACES


def _is_digit(ch: str) -> bool:
    return unicodedata.category(ch) == "Nd"


def _is_letter(ch: str) -> bool:
    return unicodedata.category(ch).startswith("L")


@dataclass(frozen=True)
class Expansion:
    """The outcome of expanding one word.

    ``matched`` holds the variable names the word referenced that were set, ``unmatched`` the
    ones that were not (``$$`` and the like count as names, as in BuildKit).
    ``unguarded_unmatched`` is the part of ``unmatched`` referenced at least once without a
    ``-``, ``+`` or ``?`` modifier, i.e. where the author did not handle "unset" (the linter).
    """

    result: str
    words: tuple[str, ...]
    matched: frozenset[str]
    unmatched: frozenset[str]
    unguarded_unmatched: frozenset[str] = frozenset()


class _Fail(Exception):
    """Internal: an expansion error before it is wrapped with the word."""


class _Words:
    """Accumulates words the way BuildKit splits them."""

    __slots__ = ("in_word", "word", "words")

    def __init__(self) -> None:
        self.word = ""
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if _is_space(ch):
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word = ""
                self.in_word = False
        else:
            self.add_raw_char(ch)

    def add_raw_char(self, ch: str) -> None:
        self.word += ch
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def add_raw_string(self, text: str) -> None:
        self.word += text
        self.in_word = True

    def finish(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
            self.in_word = False
        return self.words


class _Scanner:
    """A rune reader with Go text/scanner's Peek/Next (a leading BOM is skipped)."""

    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 1 if text.startswith("\ufeff") else 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else _EOF

    def next(self) -> str:
        if self.pos < len(self.text):
            ch = self.text[self.pos]
            self.pos += 1
            return ch
        return _EOF


class _Run:
    """State of one expansion (BuildKit's ``shellWord``)."""

    def __init__(self, lexer: Lexer, word: str, env: Mapping[str, str]) -> None:
        self.lexer = lexer
        self.escape = lexer.escape
        self.env = env
        self.scanner = _Scanner(word)
        self.raw_escapes = lexer.raw_escapes
        self.matched: set[str] = set()
        self.unmatched: set[str] = set()
        self.unguarded: set[str] = set()

    def process_stop_on(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        saved = self.raw_escapes
        self.raw_escapes = raw_escapes
        try:
            return self._stop_on(stop)
        finally:
            self.raw_escapes = saved

    def _stop_on(self, stop: str) -> tuple[str, list[str]]:
        sc = self.scanner
        result: list[str] = []
        words = _Words()
        quotes = not self.lexer.skip_process_quotes
        while (ch := sc.peek()) != _EOF:
            if stop != _EOF and ch == stop:
                sc.next()
                return "".join(result), words.finish()
            if ch == "$":
                text = self.process_dollar()
                result.append(text)
                words.add_string(text)
            elif quotes and ch == "'":
                text = self.process_single_quote()
                result.append(text)
                words.add_raw_string(text)
            elif quotes and ch == '"':
                text = self.process_double_quote()
                result.append(text)
                words.add_raw_string(text)
            else:
                ch = sc.next()
                if ch == self.escape:
                    if self.raw_escapes:
                        words.add_raw_char(ch)
                        result.append(ch)
                    ch = sc.next()
                    if ch == _EOF:
                        break
                    words.add_raw_char(ch)
                else:
                    words.add_char(ch)
                result.append(ch)
        if stop != _EOF:
            raise _Fail(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.finish()

    def process_single_quote(self) -> str:
        sc = self.scanner
        raw = self.lexer.raw_quotes
        out: list[str] = []
        ch = sc.next()
        if raw:
            out.append(ch)
        while True:
            ch = sc.next()
            if ch == _EOF:
                raise _Fail("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if raw:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def process_double_quote(self) -> str:
        sc = self.scanner
        raw = self.lexer.raw_quotes
        out: list[str] = []
        ch = sc.next()
        if raw:
            out.append(ch)
        while True:
            peek = sc.peek()
            if peek == _EOF:
                raise _Fail("unexpected end of statement while looking for matching double-quote")
            if peek == '"':
                ch = sc.next()
                if raw:
                    out.append(ch)
                return "".join(out)
            if peek == "$":
                out.append(self.process_dollar())
                continue
            ch = sc.next()
            if ch == self.escape:
                if self.raw_escapes:
                    out.append(ch)
                after = sc.peek()
                if after == _EOF:
                    # An escape right before the end is dropped; the missing quote then fails.
                    continue
                if after in ('"', "$", self.escape):
                    ch = sc.next()
            out.append(ch)

    def process_dollar(self) -> str:
        sc = self.scanner
        sc.next()
        if sc.peek() != "{":
            name = self.process_name()
            if not name:
                return "$"
            value, found = self.get_env(name)
            if not found and self.lexer.skip_unset_env:
                return "$" + name
            return value

        sc.next()
        peek = sc.peek()
        if peek == _EOF:
            raise _Fail("syntax error: missing '}'")
        if peek in ("{", "}", ":"):
            raise _Fail("syntax error: bad substitution")
        name = self.process_name()
        ch = sc.next()
        modifier = ch or _EOF_TEXT
        null_is_unset = False

        if ch == "}":
            value, found = self.get_env(name)
            if not found and self.lexer.skip_unset_env:
                return f"${{{name}}}"
            return value
        if ch in (":", "+", "-", "?", "#", "%"):
            if ch == ":":
                null_is_unset = True
                ch = sc.next()
                modifier += ch or _EOF_TEXT
            raw = ch in ("#", "%")
            try:
                word, _ = self.process_stop_on("}", raw)
            except _Fail:
                if sc.peek() == _EOF:
                    raise _Fail("syntax error: missing '}'") from None
                raise
            value, found = self.get_env(name, guarded=ch in ("-", "+", "?"))
            if self.lexer.skip_unset_env and not found:
                return f"${{{name}{modifier}{word}}}"
            empty_is_unset = null_is_unset and value == ""
            if ch == "-":
                return word if not found or empty_is_unset else value
            if ch == "+":
                return "" if not found or empty_is_unset else word
            if ch == "?":
                if not found:
                    raise _Fail(f"{name}: {word or 'is not allowed to be unset'}")
                if empty_is_unset:
                    raise _Fail(f"{name}: {word or 'is not allowed to be empty'}")
                return value
            if ch in ("%", "#"):
                greedy = False
                if word.startswith(ch):
                    greedy = True
                    word = word[1:]
                if ch == "%":
                    return _trim_suffix(word, value, greedy)
                return _trim_prefix(word, value, greedy)
            raise _Fail(f"unsupported modifier ({modifier}) in substitution")
        if ch == "/":
            replace_all = sc.peek() == "/"
            if replace_all:
                sc.next()
            try:
                pattern, _ = self.process_stop_on("/", True)
            except _Fail:
                if sc.peek() == _EOF:
                    raise _Fail("syntax error: missing '/' in ${}") from None
                raise
            try:
                replacement, _ = self.process_stop_on("}", True)
            except _Fail:
                if sc.peek() == _EOF:
                    raise _Fail("syntax error: missing '}'") from None
                raise
            value, found = self.get_env(name)
            if self.lexer.skip_unset_env and not found:
                return f"${{{name}/{pattern}/{replacement}}}"
            regex = _compile_pattern(pattern, greedy=True, anchored=False)
            if replace_all:
                return _go_replace_all(regex, value, replacement)
            m = regex.search(value)
            if m is not None:
                value = value[: m.start()] + replacement + value[m.end() :]
            return value
        raise _Fail(f"unsupported modifier ({modifier}) in substitution")

    def process_name(self) -> str:
        sc = self.scanner
        name: list[str] = []
        while (ch := sc.peek()) != _EOF:
            if not name and _is_digit(ch):
                while (d := sc.peek()) != _EOF and _is_digit(d):
                    name.append(sc.next())
                return "".join(name)
            if not name and ch in _SPECIAL_PARAMS:
                return sc.next()
            if not (_is_letter(ch) or _is_digit(ch) or ch == "_"):
                break
            name.append(sc.next())
        return "".join(name)

    def get_env(self, name: str, *, guarded: bool = False) -> tuple[str, bool]:
        value = self.env.get(name)
        if value is None:
            self.unmatched.add(name)
            if not guarded:
                self.unguarded.add(name)
            return "", False
        self.matched.add(name)
        return value, True


def _compile_pattern(pattern: str, *, greedy: bool, anchored: bool) -> re.Pattern[str]:
    """A shell wildcard pattern (``*``, ``?``, backslash escapes) as a regular expression."""
    sc = _Scanner(pattern)
    out = ["^"] if anchored else []
    star = ".*" if greedy else ".*?"
    while (tok := sc.next()) != _EOF:
        if tok == "*":
            out.append(star)
            continue
        if tok == "?":
            out.append(".")
            continue
        if tok == "\\":
            # "\}" and "\/" only protect the ${} syntax; the backslash is not in the pattern.
            if sc.peek() in ("}", "/"):
                continue
            tok = sc.next()
            if tok not in ("*", "?", "\\"):
                raise _Fail(
                    f"invalid pattern ({pattern}) in substitution: "
                    f"invalid escape '\\{tok or _EOF_TEXT}'"
                )
            out.append("\\" + tok)
            continue
        out.append(re.escape(tok) if tok in "[]{}.+()|^$" else tok)
    try:
        return re.compile("".join(out))
    except re.error as err:  # pragma: no cover - the pattern is escaped above
        raise _Fail(f"invalid pattern ({pattern}) in substitution: {err}") from None


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    m = _compile_pattern(pattern, greedy=greedy, anchored=True).search(value)
    return value[m.end() :] if m is not None else value


def _reverse_pattern(pattern: str) -> str:
    """Reverse a pattern, keeping each ``\\x`` escape pair in order (``a\\*c`` -> ``c\\*a``)."""
    out: list[str] = []
    i = 0
    last = len(pattern) - 1
    while i <= last:
        if pattern[i] == "\\" and i != last:
            out.append(pattern[i : i + 2])
            i += 2
        else:
            out.append(pattern[i])
            i += 1
    return "".join(reversed(out))


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    # A regex cannot find the shortest rightmost match, so search the reversed value instead.
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]


def _template_name_end(template: str, start: int) -> int:
    """End of a Go template reference (``name`` or ``{name}``) at ``start``, or -1."""
    brace = template.startswith("{", start)
    i = start + 1 if brace else start
    first = i
    while i < len(template) and (
        _is_letter(template[i]) or _is_digit(template[i]) or template[i] == "_"
    ):
        i += 1
    if i == first:
        return -1
    if brace:
        return i + 1 if template.startswith("}", i) else -1
    return i


def _go_expand_template(template: str) -> str:
    """Go's ``Regexp.Expand`` for a pattern without groups: ``$$`` is ``$``, names are empty."""
    out: list[str] = []
    i = 0
    while i < len(template):
        j = template.find("$", i)
        if j < 0:
            out.append(template[i:])
            break
        out.append(template[i:j])
        if template.startswith("$$", j):
            out.append("$")
            i = j + 2
            continue
        end = _template_name_end(template, j + 1)
        if end < 0:
            out.append("$")
            i = j + 1
        else:
            i = end
    return "".join(out)


def _go_replace_all(regex: re.Pattern[str], value: str, replacement: str) -> str:
    """Go's ``ReplaceAllString``: an empty match right after a match is not replaced."""
    repl = _go_expand_template(replacement)
    out: list[str] = []
    last_end = 0
    pos = 0
    end = len(value)
    while pos <= end:
        m = regex.search(value, pos)
        if m is None:
            break
        start, stop = m.span()
        out.append(value[last_end:start])
        if stop > last_end or start == 0:
            out.append(repl)
        last_end = stop
        pos = pos + 1 if pos + 1 > stop else stop
    out.append(value[last_end:])
    return "".join(out)


class Lexer:
    """BuildKit's ``shell.Lex``: expands Dockerfile words with a given environment.

    ``escape`` is the Dockerfile's escape character (backslash or backtick). The keyword
    options mirror BuildKit's switches: ``raw_quotes`` keeps quote characters in the result,
    ``raw_escapes`` keeps escape characters, ``skip_process_quotes`` treats quotes as plain
    characters (heredoc bodies) and ``skip_unset_env`` leaves references to unset variables
    as written.
    """

    def __init__(
        self,
        escape: str = "\\",
        *,
        raw_quotes: bool = False,
        raw_escapes: bool = False,
        skip_process_quotes: bool = False,
        skip_unset_env: bool = False,
    ) -> None:
        if len(escape) != 1:
            raise ValueError(f"escape must be one character, not {escape!r}")
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_process_quotes = skip_process_quotes
        self.skip_unset_env = skip_unset_env

    def expand(self, word: str, env: Mapping[str, str]) -> Expansion:
        """Expand ``word`` once and return everything BuildKit's ``process`` computes."""
        run = _Run(self, word, env)
        try:
            result, words = run.process_stop_on(_EOF, self.raw_escapes)
        except _Fail as err:
            raise ExpansionError(f"failed to process {go_quote(word)}: {err}") from None
        except RecursionError:
            raise ExpansionError(
                f"failed to process {go_quote(word)}: substitutions nested too deeply"
            ) from None
        return Expansion(
            result,
            tuple(words),
            frozenset(run.matched),
            frozenset(run.unmatched),
            frozenset(run.unguarded),
        )

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        """Expand ``word`` into one string (BuildKit's ``ProcessWord``)."""
        return self.expand(word, env).result

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        """Expand ``word`` and split it into words (BuildKit's ``ProcessWords``)."""
        return list(self.expand(word, env).words)

    def process_word_with_matches(
        self, word: str, env: Mapping[str, str]
    ) -> tuple[str, set[str]]:
        """Expand ``word``; also return the names it referenced that were set in ``env``."""
        expansion = self.expand(word, env)
        return expansion.result, set(expansion.matched)

    def process_word_with_unmatched(
        self, word: str, env: Mapping[str, str]
    ) -> tuple[str, set[str]]:
        """Expand ``word``; also return the names it referenced that were not set in ``env``."""
        expansion = self.expand(word, env)
        return expansion.result, set(expansion.unmatched)
