"""Dockerfile text -> syntax nodes, exactly as BuildKit's ``frontend/dockerfile/parser``.

This is the syntax layer only: unknown instructions and unknown flags still parse (they are
rejected later, in :mod:`dockyard.dockerfile.instructions`), invalid JSON falls back to shell
form, and :meth:`Node.dump` prints BuildKit's ``Node.Dump()`` line. :func:`parse` raises
:class:`~dockyard.errors.DockerfileError` exactly where BuildKit's ``parser.Parse`` fails.

Several BuildKit quirks are reproduced on purpose because users' Dockerfiles depend on them:
flags are scanned byte by byte (a non-ASCII flag value is re-encoded as Latin-1, like Go's
``rune(line[pos])``), ``unicode.IsSpace`` differs from ``str.isspace``, JSON arrays are read
with Go's ``json.Decoder`` semantics (trailing text after the array is ignored), and ``ENV``
and ``LABEL`` arguments are key/value/separator triples (separator ``""`` for ``ENV K V``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from dockyard.errors import DockerfileError, Location

__all__ = [
    "MAX_LINE_BYTES",
    "Directives",
    "Heredoc",
    "Node",
    "ParseResult",
    "chomp_heredoc_content",
    "go_lower",
    "go_quote",
    "heredoc_from_word",
    "parse",
]

# bufio.Scanner's default token limit: a line (with its newline) may be at most 64 KiB.
MAX_LINE_BYTES = 64 * 1024

# Go's unicode.IsSpace (Python's str.isspace also accepts U+001C..U+001F).
GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
_GO_SPACE_SET = frozenset(GO_SPACE)

_RE_WHITESPACE = re.compile(r"[\t\v\f\r ]+")
_GO_S = r"[\t\n\f\r ]"  # Go's \s (ASCII, no \v)
_RE_DIRECTIVE = re.compile(
    rf"#{_GO_S}*([a-zA-Z][a-zA-Z0-9]*){_GO_S}*={_GO_S}*([^\n]+?){_GO_S}*\Z"
)
_RE_DIRECTIVE_SLASH = re.compile(
    rf"//{_GO_S}*([a-zA-Z][a-zA-Z0-9]*){_GO_S}*={_GO_S}*([^\n]+?){_GO_S}*\Z"
)
_RE_HEREDOC = re.compile(r"([0-9]*)<<(-?)([^<]*)", re.S)
_RE_LEADING_TABS = re.compile(r"^\t+", re.M)
_RE_SURROGATE = re.compile("[\ud800-\udfff]")

_VALID_DIRECTIVES = ("syntax", "escape", "check")
_HEREDOC_INSTRUCTIONS = frozenset(("add", "copy", "run"))

_NOT_STRING_ARRAY = "when using JSON array syntax, arrays must be comprised of strings only"


@dataclass(frozen=True, slots=True)
class Heredoc:
    """One here-document attached to an instruction.

    ``content`` is the body with its line endings as written; for ``<<-`` (``chomp``) the
    leading tabs of every line are already removed.
    """

    name: str
    content: str
    expand: bool
    chomp: bool
    file_descriptor: int = 0


@dataclass(frozen=True, slots=True)
class Node:
    """One instruction's syntax node, BuildKit's ``parser.Node``.

    ``args`` is BuildKit's ``Next`` chain (for ENV/LABEL: key, value, separator triples);
    ``inner`` is ONBUILD's nested instruction (its lines are the ONBUILD's lines).
    """

    instruction: str
    flags: tuple[str, ...]
    args: tuple[str, ...]
    heredocs: tuple[Heredoc, ...]
    json: bool
    original: str
    start_line: int
    end_line: int
    inner: Node | None = None

    def dump(self) -> str:
        """BuildKit's ``Node.Dump()`` line for this node: ``(cmd ["flag" ...] "arg" ...)``."""
        return "(" + self._dump_body() + ")"

    def _dump_body(self) -> str:
        parts = [go_lower(self.instruction)]
        if self.flags:
            parts.append("[" + " ".join(map(go_quote, self.flags)) + "]")
        if self.inner is not None:
            parts.append("(" + self.inner._dump_body() + ")")
        parts.extend(map(go_quote, self.args))
        return " ".join(parts).strip(GO_SPACE)


@dataclass(frozen=True, slots=True)
class Directives:
    """Parser directives found at the top of the file (``syntax``/``check`` values verbatim)."""

    escape: str
    syntax: str | None
    check: str | None


@dataclass(frozen=True, slots=True)
class ParseResult:
    """The parsed Dockerfile: its nodes in file order, directives and parser warnings."""

    nodes: tuple[Node, ...]
    directives: Directives
    warnings: tuple[tuple[str, int], ...]
    source: str
    filename: str


class _SyntaxError(Exception):
    """A parse failure without a location yet."""


# --------------------------------------------------------------------------- Go helpers


def go_lower(s: str) -> str:
    """Go's ``strings.ToLower`` (simple case mapping, one rune to one rune)."""
    if s.isascii():
        return s.lower()
    out = []
    for ch in s:
        low = ch.lower()
        out.append(low if len(low) == 1 else ("i" if ch == "\u0130" else ch))
    return "".join(out)


def go_quote(s: str) -> str:
    """Go's ``strconv.Quote``: double-quoted, Go escapes, non-printable runes as ``\\u``/``\\x``.

    Lone surrogates U+DC80..U+DCFF (from ``surrogateescape`` decoding) stand for invalid UTF-8
    bytes and come out as ``\\xNN``, as Go prints the raw byte.
    """
    if s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        return '"' + s + '"'
    out = ['"']
    for ch in s:
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(_go_escape(ch))
    out.append('"')
    return "".join(out)


_GO_SHORT_ESCAPES = {
    "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
}


def _go_escape(ch: str) -> str:
    short = _GO_SHORT_ESCAPES.get(ch)
    if short is not None:
        return short
    code = ord(ch)
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    if 0xD800 <= code <= 0xDFFF:
        return "\\ufffd"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _trim_space(s: str) -> str:
    if s and s[0] not in _GO_SPACE_SET and s[-1] not in _GO_SPACE_SET:
        return s
    return s.strip(GO_SPACE)


def _to_bytes_str(s: str) -> str:
    """The UTF-8 bytes of ``s`` as a Latin-1 string (one char per byte, Go's ``rune(b)``)."""
    return s.encode("utf-8", "surrogateescape").decode("latin-1")


def _from_bytes_str(s: str) -> str:
    return s.encode("latin-1").decode("utf-8", "surrogateescape")


def chomp_heredoc_content(content: str) -> str:
    """Remove the leading tabs of every line (BuildKit's ``ChompHeredocContent``)."""
    return _RE_LEADING_TABS.sub("", content)


# --------------------------------------------------------------------------- flags

# A flag word without quotes, backslashes or control characters (the common case).
_RE_SIMPLE_FLAG = re.compile(r"--[!#-&(-\[\]-~]*")
_ASCII_SPACE = " \t\n\v\f\r"


def _simple_flags(line: str) -> tuple[str, list[str]] | None:
    """Fast path of :func:`_extract_flags` for ASCII lines; None when the slow path is needed."""
    flags: list[str] = []
    pos, n = 0, len(line)
    while line.startswith("--", pos):
        match = _RE_SIMPLE_FLAG.match(line, pos)
        assert match is not None
        end = match.end()
        if end < n and line[end] not in _ASCII_SPACE:
            return None
        word = match.group()
        if word == "--":
            return line[end:], flags
        flags.append(word)
        pos = end
        while pos < n and line[pos] in _ASCII_SPACE:
            pos += 1
    return line[pos:], flags


def _extract_flags(line: str) -> tuple[str, list[str]]:
    """BuildKit's ``extractBuilderFlags``: leading ``--x`` words; returns (rest, flags)."""
    if not line.startswith("--"):
        return line, []
    if line.isascii():
        simple = _simple_flags(line)
        if simple is not None:
            return simple
    b = _to_bytes_str(line)  # Go scans bytes here, not runes
    words: list[str] = []
    in_spaces, in_word, in_quote = 0, 1, 2
    phase = in_spaces
    word: list[str] = []
    blank_ok = False
    quote = ""
    pos = 0
    n = len(b)
    ch = ""
    while pos <= n:
        if pos != n:
            ch = b[pos]
        if phase == in_spaces:
            if pos == n:
                break
            if ch in _GO_SPACE_SET:
                pos += 1
                continue
            if ch != "-" or pos + 1 == n or b[pos + 1] != "-":
                return _from_bytes_str(b[pos:]), words
            phase = in_word
        if phase != in_spaces and pos == n:
            text = "".join(word)
            if text != "--" and (blank_ok or text):
                words.append(text)
            break
        if phase == in_word:
            if ch in _GO_SPACE_SET:
                phase = in_spaces
                text = "".join(word)
                if text == "--":
                    return _from_bytes_str(b[pos:]), words
                if blank_ok or text:
                    words.append(text)
                word = []
                blank_ok = False
                pos += 1
                continue
            if ch in "'\"":
                quote = ch
                blank_ok = True
                phase = in_quote
                pos += 1
                continue
            if ch == "\\":
                if pos + 1 == n:
                    pos += 1
                    continue
                pos += 1
                ch = b[pos]
            word.append(ch)
            pos += 1
            continue
        # in_quote
        if ch == quote:
            phase = in_word
            pos += 1
            continue
        if ch == "\\":
            if pos + 1 == n:
                phase = in_word
                pos += 1
                continue
            pos += 1
            ch = b[pos]
        word.append(ch)
        pos += 1
    return "", words


# --------------------------------------------------------------------------- line parsers

# Characters that make parseWords differ from a plain split (quotes, escapes, \x1c-\x1f which
# Python's str.split treats as spaces and Go does not).
_RE_WORD_SPECIAL = re.compile("[\x1c-\x1f'\"\\\\`]")

_Parsed = tuple[list[str], bool, "Node | None"]  # args, json, inner


def _parse_words(rest: str, escape: str) -> list[str]:
    """BuildKit's ``parseWords``: split on spaces, keeping quotes and escapes in the words."""
    if rest.isascii() and _RE_WORD_SPECIAL.search(rest) is None:
        return rest.split()
    words: list[str] = []
    in_spaces, in_word, in_quote = 0, 1, 2
    phase = in_spaces
    word: list[str] = []
    quote = ""
    blank_ok = False
    n = len(rest)
    pos = 0
    ch = ""
    while pos <= n:
        if pos != n:
            ch = rest[pos]
        if phase == in_spaces:
            if pos == n:
                break
            if ch in _GO_SPACE_SET:
                pos += 1
                continue
            phase = in_word
        if phase != in_spaces and pos == n:
            if blank_ok or word:
                words.append("".join(word))
            break
        if phase == in_word:
            if ch in _GO_SPACE_SET:
                phase = in_spaces
                if blank_ok or word:
                    words.append("".join(word))
                word = []
                blank_ok = False
                pos += 1
                continue
            if ch in "'\"":
                quote = ch
                blank_ok = True
                phase = in_quote
            if ch == escape:
                if pos + 1 == n:
                    pos += 1
                    continue
                word.append(ch)
                pos += 1
                ch = rest[pos]
            word.append(ch)
            pos += 1
            continue
        # in_quote
        if ch == quote:
            phase = in_word
        if ch == escape and quote != "'":
            if pos + 1 == n:
                phase = in_word
                pos += 1
                continue
            pos += 1
            word.append(ch)
            ch = rest[pos]
        word.append(ch)
        pos += 1
    return words


def _parse_name_val(rest: str, key: str, escape: str) -> _Parsed:
    words = _parse_words(rest, escape)
    if not words:
        return [], False, None
    if "=" not in words[0]:
        parts = _RE_WHITESPACE.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise _SyntaxError(f"{key} must have two arguments")
        return [parts[0], parts[1], ""], False, None
    args: list[str] = []
    for word in words:
        if "=" not in word:
            raise _SyntaxError(
                f"Syntax error - can't find = in {go_quote(word)}. Must be of the form: name=value"
            )
        name, value = word.split("=", 1)
        args += (name, value, "=")
    return args, False, None


def _parse_env(rest: str, escape: str) -> _Parsed:
    return _parse_name_val(rest, "ENV", escape)


def _parse_label(rest: str, escape: str) -> _Parsed:
    return _parse_name_val(rest, "LABEL", escape)


def _parse_name_or_name_val(rest: str, escape: str) -> _Parsed:
    return _parse_words(rest, escape), False, None


def _parse_whitespace_delimited(rest: str, escape: str) -> _Parsed:
    if rest == "":
        return [], False, None
    return _RE_WHITESPACE.split(rest), False, None


def _parse_string(rest: str, escape: str) -> _Parsed:
    if rest == "":
        return [], False, None
    return [rest], False, None


def _reject_constant(name: str) -> object:
    raise ValueError(name)


def _go_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range")  # Go: UnmarshalTypeError -> not JSON form
    return value


_JSON = json.JSONDecoder(
    parse_float=_go_float, parse_int=_go_float, parse_constant=_reject_constant
)


def _parse_json(rest: str) -> list[str] | None:
    """Go's ``json.Decoder`` on a ``[...]`` prefix; None if it is not a JSON array."""
    rest = rest.lstrip(GO_SPACE)
    if not rest.startswith("["):
        return None
    try:
        value, _ = _JSON.raw_decode(rest)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, list):
        return None
    for item in value:
        if not isinstance(item, str):
            raise _SyntaxError(_NOT_STRING_ARRAY)
    # Go decodes lone surrogate escapes and invalid UTF-8 as U+FFFD.
    value = [_RE_SURROGATE.sub("\ufffd", item) for item in value]
    return value


def _parse_maybe_json(rest: str, escape: str) -> _Parsed:
    if rest == "":
        return [], False, None
    values = _parse_json(rest)
    if values is not None:
        return values, True, None
    return [rest], False, None


def _parse_maybe_json_to_list(rest: str, escape: str) -> _Parsed:
    values = _parse_json(rest)
    if values is not None:
        return values, True, None
    return _parse_whitespace_delimited(rest, escape)


def _parse_health_config(rest: str, escape: str) -> _Parsed:
    # Go indexes bytes here (unicode.IsSpace(rune(rest[i]))).
    b = rest if rest.isascii() else _to_bytes_str(rest)
    n = len(b)
    sep = 0
    while sep < n and b[sep] not in _GO_SPACE_SET:
        sep += 1
    nxt = sep
    while nxt < n and b[nxt] in _GO_SPACE_SET:
        nxt += 1
    if sep == 0:
        return [], False, None
    typ, cmd = b[:sep], b[nxt:]
    if b is not rest:
        typ, cmd = _from_bytes_str(typ), _from_bytes_str(cmd)
    args, is_json, _ = _parse_maybe_json(cmd, escape)
    return [typ, *args], is_json, None


def _parse_ignore(rest: str, escape: str) -> _Parsed:
    return [""], False, None


_MAX_ONBUILD_NESTING = 8


def _parse_sub_command(rest: str, escape: str) -> _Parsed:
    if rest == "":
        return [], False, None
    # BuildKit parses nested triggers recursively and refuses them later; a line of
    # hundreds of ONBUILDs must not exhaust the stack first (the same error, sooner).
    nested = rest
    for _ in range(_MAX_ONBUILD_NESTING):
        word, _sep, nested = _trim_space(nested).partition(" ")
        if go_lower(word) != "onbuild":
            break
    else:
        raise _SyntaxError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    return [], False, _node_from_line(rest, escape, 0, 0)


_DISPATCH: dict[str, Callable[[str, str], _Parsed]] = {
    "add": _parse_maybe_json_to_list,
    "arg": _parse_name_or_name_val,
    "cmd": _parse_maybe_json,
    "copy": _parse_maybe_json_to_list,
    "entrypoint": _parse_maybe_json,
    "env": _parse_env,
    "expose": _parse_whitespace_delimited,
    "from": _parse_whitespace_delimited,
    "healthcheck": _parse_health_config,
    "label": _parse_label,
    "maintainer": _parse_string,
    "onbuild": _parse_sub_command,
    "run": _parse_maybe_json,
    "shell": _parse_maybe_json,
    "stopsignal": _parse_string,
    "user": _parse_string,
    "volume": _parse_maybe_json_to_list,
    "workdir": _parse_string,
}


def _node_from_line(line: str, escape: str, start: int, end: int) -> Node:
    """BuildKit's ``newNodeFromLine`` (heredocs are attached by the caller)."""
    cmdline = _RE_WHITESPACE.split(_trim_space(line), maxsplit=1)
    cmd = go_lower(cmdline[0])
    flags: list[str] = []
    rest = ""
    if len(cmdline) == 2:
        rest, flags = _extract_flags(cmdline[1])
    rest = _trim_space(rest)
    fn = _DISPATCH.get(cmd, _parse_ignore)
    args, is_json, inner = fn(rest, escape)
    if inner is not None:
        inner = Node(inner.instruction, inner.flags, inner.args, (), inner.json,
                     inner.original, start, end, inner.inner)
    return Node(cmd, tuple(flags), tuple(args), (), is_json, line, start, end, inner)


# --------------------------------------------------------------------------- heredoc words


class _LexError(Exception):
    pass


class _Words:
    """BuildKit's ``wordsStruct``: word splitting of lexed text."""

    __slots__ = ("in_word", "word", "words")

    def __init__(self) -> None:
        self.word = ""
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch in _GO_SPACE_SET:
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word = ""
                self.in_word = False
        else:
            self.add_raw(ch)

    def add_raw(self, text: str) -> None:
        self.word += text
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def get(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
            self.in_word = False
        return self.words


class _HeredocLexer:
    """BuildKit's shell lexer with an empty environment and ``SkipUnsetEnv``, escape ``\\``.

    Only used to find heredoc words in a line, so ``$`` forms are kept as written.
    """

    def __init__(self, text: str, raw_quotes: bool, raw_escapes: bool) -> None:
        self.s = text
        self.i = 0
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def next(self) -> str:
        if self.i < len(self.s):
            self.i += 1
            return self.s[self.i - 1]
        return ""

    def words(self) -> list[str]:
        return self.stop_on("", self.raw_escapes)[1]

    def stop_on(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        saved = self.raw_escapes
        self.raw_escapes = raw_escapes
        try:
            result: list[str] = []
            words = _Words()
            while (ch := self.peek()) != "":
                if stop and ch == stop:
                    self.next()
                    return "".join(result), words.get()
                if ch == "$":
                    tmp = self.dollar()
                    result.append(tmp)
                    words.add_string(tmp)
                elif ch == "'":
                    tmp = self.single_quote()
                    result.append(tmp)
                    words.add_raw(tmp)
                elif ch == '"':
                    tmp = self.double_quote()
                    result.append(tmp)
                    words.add_raw(tmp)
                else:
                    ch = self.next()
                    if ch == "\\":
                        if self.raw_escapes:
                            words.add_raw(ch)
                            result.append(ch)
                        ch = self.next()
                        if ch == "":
                            break
                        words.add_raw(ch)
                    else:
                        words.add_char(ch)
                    result.append(ch)
            if stop:
                raise _LexError(f"unexpected end of statement while looking for matching {stop}")
            return "".join(result), words.get()
        finally:
            self.raw_escapes = saved

    def single_quote(self) -> str:
        opening = self.next()
        result = [opening] if self.raw_quotes else []
        while True:
            ch = self.next()
            if ch == "":
                raise _LexError("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if self.raw_quotes:
                    result.append(ch)
                return "".join(result)
            result.append(ch)

    def double_quote(self) -> str:
        opening = self.next()
        result = [opening] if self.raw_quotes else []
        while True:
            ch = self.peek()
            if ch == "":
                raise _LexError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                if self.raw_quotes:
                    result.append(ch)
                return "".join(result)
            if ch == "$":
                result.append(self.dollar())
                continue
            ch = self.next()
            if ch == "\\":
                if self.raw_escapes:
                    result.append(ch)
                following = self.peek()
                if following == "":
                    continue
                if following in '"$\\':
                    ch = self.next()
            result.append(ch)

    def name(self) -> str:
        out: list[str] = []
        while (ch := self.peek()) != "":
            if not out and ch.isdecimal():
                while (d := self.peek()) != "" and d.isdecimal():
                    out.append(self.next())
                return "".join(out)
            if not out and ch in "@*#?-$!0":
                return self.next()
            if not (ch.isalpha() or ch.isdecimal() or ch == "_"):
                break
            out.append(self.next())
        return "".join(out)

    def dollar(self) -> str:
        self.next()
        if self.peek() != "{":
            name = self.name()
            return "$" + name if name else "$"
        self.next()
        if self.peek() == "":
            raise _LexError("syntax error: missing '}'")
        if self.peek() in "{}:":
            raise _LexError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        chs = ch
        if ch == "}":
            return "${" + name + "}"
        if ch == ":":
            ch = self.next()
            chs += ch
        if chs.startswith(":") or ch in ("+", "-", "?", "#", "%"):
            word, _ = self.stop_on("}", ch in ("#", "%"))
            return "${" + name + chs + word + "}"
        if ch == "/":
            if self.peek() == "/":
                self.next()
            pattern, _ = self.stop_on("/", True)
            replacement, _ = self.stop_on("}", True)
            return "${" + name + "/" + pattern + "/" + replacement + "}"
        raise _LexError("unsupported modifier in substitution")


def _lex_words(text: str, raw_quotes: bool, raw_escapes: bool) -> list[str]:
    return _HeredocLexer(text, raw_quotes, raw_escapes).words()


def _heredoc_from_word(word: str) -> tuple[str, bool, bool, int] | None:
    """BuildKit's ``ParseHeredoc``: (name, expand, chomp, fd) or None."""
    match = _RE_HEREDOC.fullmatch(word)
    if match is None:
        return None
    fd = min(int(match[1]), 2**64 - 1) if match[1] else 0
    chomp = match[2] == "-"
    rest = match[3]
    if rest == "":
        return None
    try:
        words = _lex_words(rest, False, False)
        if len(words) != 1:
            return None
        raw_words = _lex_words(rest, True, False)
    except _LexError as err:
        raise _SyntaxError(f"failed to process {go_quote(rest)}: {err}") from None
    if len(raw_words) != len(words):  # pragma: no cover - lexer invariant
        raise _SyntaxError(
            f"internal lexing of heredoc produced inconsistent results: {rest}"
        )
    name, raw = words[0], raw_words[0]
    expand = name.count("'") + name.count('"') == raw.count("'") + raw.count('"')
    return name, expand, chomp, fd


def heredoc_from_word(word: str) -> tuple[str, bool, bool, int] | None:
    """Parse one heredoc word like ``<<-"EOF"``: (name, expand, chomp, fd), or None.

    Raises DockerfileError (without a location) where BuildKit's ``ParseHeredoc`` fails.
    """
    try:
        return _heredoc_from_word(word)
    except _SyntaxError as err:
        raise DockerfileError(str(err)) from None


def _heredocs_from_line(line: str) -> list[tuple[str, bool, bool, int]]:
    try:
        words = _lex_words(line, True, True)
    except _LexError:
        return []  # BuildKit ignores a lexing error here: no heredocs
    docs = []
    for word in words:
        if "<<" in word:
            doc = _heredoc_from_word(word)
            if doc is not None:
                docs.append(doc)
    return docs


# --------------------------------------------------------------------------- directives


def _detect_directive(text: str, key: str, slash_comments: bool) -> str | None:
    """BuildKit's ``DetectSyntax``/``ParseDirective``: BOM and a shebang line are skipped."""
    text = text.removeprefix("\ufeff")
    first, _sep, rest = text.partition("\n")
    if first.startswith("#!"):
        text = rest
    regexes = [_RE_DIRECTIVE, _RE_DIRECTIVE_SLASH] if slash_comments else [_RE_DIRECTIVE]
    for regex in regexes:
        seen: set[str] = set()
        for line in text.split("\n"):
            match = regex.match(line.removesuffix("\r"))
            if match is None:
                break
            name = match[1].lower()
            if name not in _VALID_DIRECTIVES or name in seen:
                break
            seen.add(name)
            if name == key:
                return match[2]
    return None


# --------------------------------------------------------------------------- parse


def _find_overlong(lines: list[str], ends_with_newline: bool) -> int:
    """Index of the first line bufio.Scanner cannot read (len(lines) if none)."""
    if not lines or max(map(len, lines)) < MAX_LINE_BYTES // 4 - 1:
        return len(lines)
    last = len(lines) - 1
    for index, line in enumerate(lines):
        if len(line) < MAX_LINE_BYTES // 4 - 1:
            continue
        size = len(line.encode("utf-8", "surrogateescape"))
        if index < last or ends_with_newline:
            if size + 1 > MAX_LINE_BYTES:
                return index
        elif size >= MAX_LINE_BYTES:
            return index
    return len(lines)


def parse(text: str, filename: str = "Dockerfile") -> ParseResult:
    """Parse Dockerfile text into nodes, like BuildKit's ``parser.Parse``.

    Raises DockerfileError (with the file name and lines) where BuildKit's parser fails: a file
    with no instructions, ``ENV`` with no value, a JSON array holding a non-string, an
    unterminated heredoc, a line over 64 KiB, a repeated or invalid parser directive.
    """
    lines = text.split("\n")
    ends_with_newline = lines[-1] == ""
    if ends_with_newline:
        lines.pop()
    available = _find_overlong(lines, ends_with_newline)

    def fail(message: str, start: int, end: int) -> DockerfileError:
        return DockerfileError(message, Location(filename, start, max(start, end)), source=text)

    escape = "\\"
    directives_done = False
    seen_directives: dict[str, str] = {}
    nodes: list[Node] = []
    warnings: list[tuple[str, int]] = []
    current = 0
    index = 0
    space = GO_SPACE

    while index < available:
        raw = lines[index]
        index += 1
        if current == 0:
            raw = raw.removeprefix("\ufeff")
        token = raw.rstrip("\r\n").lstrip(space)
        if not directives_done:
            directives_done = _directive_line(token, seen_directives, current + 1, fail)
            if "escape" in seen_directives:
                escape = seen_directives["escape"]
        current += 1
        start = current
        if token.startswith("#"):
            continue
        line, end_of_line = _trim_continuation(token, escape)
        if end_of_line and line == "":
            continue

        empty_continuation = False
        while not end_of_line and index < available:
            raw = lines[index].rstrip("\r\n")
            index += 1
            current += 1
            stripped = raw.lstrip(space)
            if stripped.startswith("#"):
                continue
            if stripped == "":
                empty_continuation = True
                continue
            piece, end_of_line = _trim_continuation(raw, escape)
            line += piece

        if empty_continuation:
            warnings.append((f"Empty continuation line found in: {line}", current))

        try:
            node = _node_from_line(line, escape, start, current)
        except _SyntaxError as err:
            raise fail(str(err), start, current) from None

        target = node.inner if node.instruction == "onbuild" and node.inner else node
        if target.instruction in _HEREDOC_INSTRUCTIONS and not target.json and "<<" in line:
            try:
                docs = _heredocs_from_line(line)
            except _SyntaxError as err:
                raise fail(str(err), start, current) from None
            heredocs = []
            for name, expand, chomp, fd in docs:
                body: list[str] = []
                terminated = False
                while index < available:
                    raw = lines[index]
                    index += 1
                    current += 1
                    candidate = raw.rstrip("\r\n")
                    if chomp:
                        candidate = candidate.lstrip("\t")
                    if candidate == name:
                        terminated = True
                        break
                    has_newline = index < len(lines) or ends_with_newline
                    body.append(raw + "\n" if has_newline else raw)
                if not terminated:
                    raise fail("unterminated heredoc", start, current)
                content = "".join(body)
                if chomp:
                    content = chomp_heredoc_content(content)
                heredocs.append(Heredoc(name, content, expand, chomp, fd))
            node = Node(node.instruction, node.flags, node.args, tuple(heredocs), node.json,
                        node.original, start, current, node.inner)
        nodes.append(node)

    if available < len(lines):
        raise fail(
            f"dockerfile line greater than max allowed size of {MAX_LINE_BYTES - 1}",
            available + 1, available + 1,
        )
    if not nodes:
        raise fail("file with no instructions", max(current, 1), max(current, 1))

    syntax = seen_directives.get("syntax")
    if syntax is None:
        syntax = _detect_directive(text, "syntax", True)
    check = seen_directives.get("check")
    if check is None:
        check = _detect_directive(text, "check", False)
    directives = Directives(escape=escape, syntax=syntax, check=check)
    return ParseResult(tuple(nodes), directives, tuple(warnings), text, filename)


def _directive_line(
    token: str,
    seen: dict[str, str],
    line_number: int,
    fail: Callable[[str, int, int], DockerfileError],
) -> bool:
    """Feed one leading line to the directive parser; returns True once directives are done."""
    match = _RE_DIRECTIVE.match(token)
    if match is None:
        return True
    name = match[1].lower()
    if name not in _VALID_DIRECTIVES:
        return True
    if name in seen:
        raise fail(f"only one {name} parser directive can be used", line_number, line_number)
    value = match[2]
    if name == "escape" and value not in ("\\", "`"):
        raise fail(
            f"invalid escape token '{value}' does not match ` or \\", line_number, line_number
        )
    seen[name] = value
    return False


def _trim_continuation(line: str, escape: str) -> tuple[str, bool]:
    """Strip a trailing continuation escape; returns (line, is_end_of_line)."""
    stripped = line.rstrip(" \t")
    if not stripped.endswith(escape):
        return line, True
    if len(stripped) == 1:
        return "", False
    if stripped[-2] == escape:
        return line, True
    return stripped[:-1], False
