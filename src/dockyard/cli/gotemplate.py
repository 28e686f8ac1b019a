"""A deliberate subset of Go's text/template, for ``--format``/``-f`` as docker uses it.

Supported (what docker users commonly type):

* text with actions ``{{ ... }}``; ``{{-`` and ``-}}`` trim the space beside them;
* field paths on the data: ``{{.Id}}``, ``{{.Config.Env}}``, ``{{.}}``, ``$`` (the data the
  template started with), variables from ``range``/``with`` (``$v``, ``$i, $e :=``);
* literals: ``"strings"`` (Go escapes), ``'c'``-less numbers, ``true``, ``false``;
* pipelines with ``|``: ``{{.Config.Env | json}}``; parenthesized sub-expressions;
* ``{{if P}} ... {{else if P}} ... {{else}} ... {{end}}``, ``{{range P}} ... {{else}}
  ... {{end}}`` (lists and maps: maps in key order, as Go), ``{{with P}} ... {{end}}``;
* functions: docker's ``json``, ``join``, ``split``, ``lower``, ``upper``, ``title``,
  ``truncate``, ``pad``, ``println``, and Go's ``index``, ``len``, ``print``, ``printf``
  (``%s %v %d %q %%``), ``eq``, ``ne``, ``lt``, ``le``, ``gt``, ``ge``, ``not``, ``and``,
  ``or``.

Values print as Go prints them: lists as ``[a b]``, maps as ``map[k:v]`` (keys sorted),
null as ``<nil>``, a missing map key as ``<no value>``. Anything else (``define``,
``template``, ``block``, comments, method calls, other functions) is a :class:`TemplateError`
that names the construct, at parse time, before anything is printed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dockyard.errors import UsageError

__all__ = ["FUNCTIONS", "Template", "TemplateError", "go_string"]


class TemplateError(UsageError):
    """A template outside the supported subset, or one that fails on the data."""


class _Missing:
    """A map key that is not there: Go prints ``<no value>``."""

    def __repr__(self) -> str:
        return "<no value>"


MISSING = _Missing()


# ----------------------------------------------------------------------- printing
def go_string(value: Any) -> str:
    """``value`` as Go's fmt prints it with ``%v``."""
    if value is MISSING:
        return "<no value>"
    if value is None:
        return "<nil>"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    if isinstance(value, Mapping):
        items = " ".join(f"{go_string(k)}:{go_string(value[k])}" for k in sorted(value, key=str))
        return f"map[{items}]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(go_string(v) for v in value) + "]"
    return str(value)


def _json(value: Any) -> str:
    """Go's json.Marshal: compact, HTML characters escaped."""
    if value is MISSING:
        value = None
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _truthy(value: Any) -> bool:
    if value is MISSING or value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str | list | tuple | Mapping):
        return len(value) > 0
    return True


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, Mapping):
            value = value.get(key, MISSING)
        elif isinstance(value, list | tuple | str):
            if not isinstance(key, int) or isinstance(key, bool):
                raise TemplateError(f"index: cannot index a list with {go_string(key)}")
            if not 0 <= key < len(value):
                raise TemplateError(f"index: index out of range: {key}")
            value = value[key]
        elif value is None or value is MISSING:
            raise TemplateError("index of untyped nil")
        else:
            raise TemplateError(f"index: cannot index {go_string(value)}")
    return value


def _printf(fmt: str, *args: Any) -> str:
    queue = list(args)

    def one(m: re.Match[str]) -> str:
        verb = m.group(1)
        if verb == "%":
            return "%"
        if not queue:
            return f"%!{verb}(MISSING)"
        value = queue.pop(0)
        if verb == "q":
            return json.dumps(go_string(value), ensure_ascii=False)
        if verb == "d" and isinstance(value, int | float) and not isinstance(value, bool):
            return str(int(value))
        return go_string(value)

    return re.sub(r"%([svdq%])", one, fmt)


def _compare(name: str, op: Callable[[Any, Any], bool]) -> Callable[..., bool]:
    def compare(a: Any, *others: Any) -> bool:
        if not others:
            raise TemplateError(f"{name}: missing argument for comparison")
        try:
            if name == "eq":  # eq a b c: a equals any of them
                return any(op(a, b) for b in others)
            return op(a, others[0])
        except TypeError:
            raise TemplateError(f"{name}: incompatible types for comparison") from None

    return compare


def _and(*args: Any) -> Any:
    for a in args:
        if not _truthy(a):
            return a
    return args[-1] if args else None


def _or(*args: Any) -> Any:
    for a in args:
        if _truthy(a):
            return a
    return args[-1] if args else None


def _pad(value: Any, left: int, right: int) -> str:
    return " " * int(left) + go_string(value) + " " * int(right)


def _truncate(value: Any, length: Any) -> str:
    text = go_string(value)
    return text[: int(length)]


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "json": _json,
    "join": lambda items, sep: str(sep).join(go_string(i) for i in (items or [])),
    "split": lambda text, sep: go_string(text).split(str(sep)),
    "lower": lambda text: go_string(text).lower(),
    "upper": lambda text: go_string(text).upper(),
    "title": lambda text: go_string(text).title(),
    "truncate": _truncate,
    "pad": _pad,
    "println": lambda *a: " ".join(go_string(x) for x in a) + "\n",
    "print": lambda *a: "".join(go_string(x) for x in a),
    "printf": _printf,
    "index": _index,
    "len": lambda v: len(v) if isinstance(v, str | list | tuple | Mapping) else _bad_len(v),
    "eq": _compare("eq", lambda a, b: a == b),
    "ne": _compare("ne", lambda a, b: a != b),
    "lt": _compare("lt", lambda a, b: a < b),
    "le": _compare("le", lambda a, b: a <= b),
    "gt": _compare("gt", lambda a, b: a > b),
    "ge": _compare("ge", lambda a, b: a >= b),
    "not": lambda v: not _truthy(v),
    "and": _and,
    "or": _or,
}


def _bad_len(value: Any) -> int:
    raise TemplateError(f"len of {go_string(value)}")


# ------------------------------------------------------------------------ parsing
_TOKEN = re.compile(r"""
    \s*(?:
      (?P<string>"(?:[^"\\]|\\.)*"|`[^`]*`)
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<decl>:=|=)
    | (?P<punct>[|(),])
    | (?P<field>(?:\$[A-Za-z0-9_]*)?(?:\.[A-Za-z0-9_]+)+|\.|\$[A-Za-z0-9_]*)
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<other>\S+)
    )""", re.X)


@dataclass(frozen=True)
class _Field:
    var: str  # "" for the dot, "$" or "$name"
    path: tuple[str, ...]


@dataclass(frozen=True)
class _Call:
    name: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class _Pipeline:
    commands: tuple[tuple[Any, ...], ...]  # each: operands (first may be a function name)
    decl: tuple[str, ...] = ()  # variables declared: ($v) or ($i, $e)


@dataclass
class _Node:
    kind: str  # text, action, if, range, with
    text: str = ""
    pipe: _Pipeline | None = None
    body: list[_Node] = field(default_factory=list)
    orelse: list[_Node] = field(default_factory=list)


_KEYWORDS = ("if", "range", "with", "else", "end")
_UNSUPPORTED = ("define", "template", "block", "break", "continue", "call", "slice", "html",
                "js", "urlquery")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text

    def parse(self) -> list[_Node]:
        items = self._lex()
        nodes, end = self._block(items, 0, top=True)
        assert end == len(items)
        return nodes

    def _lex(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        pos = 0
        text = self.text
        while True:
            start = text.find("{{", pos)
            if start < 0:
                out.append(("text", text[pos:]))
                return out
            end = text.find("}}", start + 2)
            if end < 0:
                raise TemplateError("template: unclosed action (missing }})")
            literal = text[pos:start]
            inner = text[start + 2:end]
            if inner.startswith("-") and inner[1:2] in (" ", "\t", "\n", "\r"):
                literal = literal.rstrip()
                inner = inner[1:]
            trim_after = inner.endswith("-") and inner[-2:-1] in (" ", "\t", "\n", "\r")
            if trim_after:
                inner = inner[:-1]
            out.append(("text", literal))
            if inner.strip().startswith("/*"):
                raise TemplateError("template: comments are not supported")
            out.append(("action", inner.strip()))
            pos = end + 2
            if trim_after:
                while pos < len(text) and text[pos] in " \t\r\n":
                    pos += 1

    def _block(self, items: list[tuple[str, str]], i: int,
               top: bool = False) -> tuple[list[_Node], int]:
        nodes: list[_Node] = []
        while i < len(items):
            kind, value = items[i]
            if kind == "text":
                if value:
                    nodes.append(_Node("text", text=value))
                i += 1
                continue
            word = value.split(None, 1)[0] if value else ""
            if word in ("end", "else"):
                if top:
                    raise TemplateError(f"template: unexpected {{{{{word}}}}}")
                return nodes, i
            if word in _UNSUPPORTED:
                raise TemplateError(f"template: {word} is not supported by dockyard's "
                                    "--format (see docs/cli.md)")
            if word in ("if", "range", "with"):
                node = _Node(word, pipe=self._pipeline(value[len(word):]))
                node.body, i = self._block(items, i + 1)
                i = self._close(node, items, i)
                nodes.append(node)
                continue
            if not value:
                raise TemplateError("template: missing value for command")
            nodes.append(_Node("action", pipe=self._pipeline(value)))
            i += 1
        if not top:
            raise TemplateError("template: unexpected EOF (missing {{end}})")
        return nodes, i

    def _close(self, node: _Node, items: list[tuple[str, str]], i: int) -> int:
        if i >= len(items):
            raise TemplateError(f"template: unexpected EOF (missing {{{{end}}}} of {node.kind})")
        value = items[i][1]
        if value == "end":
            return i + 1
        rest = value[len("else"):].strip()
        if not rest:
            node.orelse, i = self._block(items, i + 1)
            if i >= len(items) or items[i][1] != "end":
                raise TemplateError("template: expected {{end}} after {{else}}")
            return i + 1
        if rest.split(None, 1)[0] == "if" and node.kind == "if":
            inner = _Node("if", pipe=self._pipeline(rest[2:]))
            inner.body, i = self._block(items, i + 1)
            i = self._close(inner, items, i)
            node.orelse = [inner]
            return i
        raise TemplateError(f"template: unexpected {{{{{value}}}}}")

    def _pipeline(self, text: str) -> _Pipeline:
        tokens = self._tokens(text)
        decl: tuple[str, ...] = ()
        for n in (1, 3):  # $v :=  /  $i, $e :=
            if len(tokens) > n and tokens[n] == ("decl", ":=") and all(
                    (t[0] == "field" and t[1].startswith("$") and "." not in t[1])
                    or t == ("punct", ",") for t in tokens[:n]):
                decl = tuple(t[1] for t in tokens[:n] if t[0] == "field")
                tokens = tokens[n + 1:]
                break
        if any(t[0] == "decl" for t in tokens):
            raise TemplateError("template: variable assignment is not supported here")
        pipe, rest = self._commands(tokens)
        if rest:
            raise TemplateError(f"template: unexpected {rest[0][1]!r}")
        return _Pipeline(pipe, decl)

    def _commands(self, tokens: list[tuple[str, str]]) -> tuple[tuple[tuple[Any, ...], ...],
                                                                 list[tuple[str, str]]]:
        commands: list[tuple[Any, ...]] = []
        current: list[Any] = []
        while tokens:
            kind, value = tokens[0]
            if kind == "punct" and value == ")":
                break
            tokens = tokens[1:]
            if kind == "punct" and value == "|":
                if not current:
                    raise TemplateError("template: missing command before |")
                commands.append(tuple(current))
                current = []
            elif kind == "punct" and value == "(":
                inner, tokens = self._commands(tokens)
                if not tokens or tokens[0] != ("punct", ")"):
                    raise TemplateError("template: unclosed (")
                tokens = tokens[1:]
                current.append(_Pipeline(inner))
            else:
                current.append(self._operand(kind, value))
        if not current:
            raise TemplateError("template: missing value for command")
        commands.append(tuple(current))
        return tuple(commands), tokens

    def _operand(self, kind: str, value: str) -> Any:
        if kind == "string":
            if value.startswith("`"):
                return value[1:-1]
            try:
                return str(json.loads(value))
            except ValueError:
                raise TemplateError(f"template: bad string {value}") from None
        if kind == "number":
            return float(value) if "." in value else int(value)
        if kind == "field":
            var = ""
            rest = value
            if value.startswith("$"):
                var, _, rest = value.partition(".")
                rest = "." + rest if rest else ""
            path = tuple(p for p in rest.split(".") if p)
            return _Field(var, path)
        if kind == "word":
            if value in ("true", "false"):
                return value == "true"
            if value == "nil":
                return None
            if value in _KEYWORDS:
                raise TemplateError(f"template: unexpected {value}")
            if value not in FUNCTIONS:
                raise TemplateError(
                    f"template: function {value!r} is not supported (supported: "
                    f"{', '.join(sorted(FUNCTIONS))})")
            return _Call(value, ())
        raise TemplateError(f"template: unexpected {value!r}")

    @staticmethod
    def _tokens(text: str) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for m in _TOKEN.finditer(text):
            kind = m.lastgroup
            if kind is None:
                continue
            value = m.group(kind)
            if kind == "other":
                raise TemplateError(f"template: unexpected {value!r}")
            out.append((kind, value))
        return out


# ---------------------------------------------------------------------- execution
class Template:
    """A parsed template; :meth:`render` applies it to one value."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._nodes = _Parser(text).parse()

    def render(self, data: Any) -> str:
        """The text the template makes for ``data`` (JSON-like: dicts, lists, scalars)."""
        out: list[str] = []
        self._run(self._nodes, data, {"$": data}, out)
        return "".join(out)

    def _run(self, nodes: Sequence[_Node], dot: Any, scope: dict[str, Any],
             out: list[str]) -> None:
        for node in nodes:
            if node.kind == "text":
                out.append(node.text)
                continue
            assert node.pipe is not None
            if node.kind == "action":
                value = self._pipeline(node.pipe, dot, scope)
                if node.pipe.decl:
                    scope[node.pipe.decl[-1]] = value
                else:
                    out.append(go_string(value))
            elif node.kind in ("if", "with"):
                value = self._pipeline(node.pipe, dot, scope)
                inner = dict(scope)
                if node.pipe.decl:
                    inner[node.pipe.decl[-1]] = value
                if _truthy(value):
                    self._run(node.body, value if node.kind == "with" else dot, inner, out)
                else:
                    self._run(node.orelse, dot, inner, out)
            elif node.kind == "range":
                value = self._pipeline(node.pipe, dot, scope)
                if isinstance(value, Mapping):
                    pairs = [(k, value[k]) for k in sorted(value, key=str)]
                elif isinstance(value, list | tuple):
                    pairs = list(enumerate(value))
                elif value is None or value is MISSING:
                    pairs = []
                else:
                    raise TemplateError(f"range can't iterate over {go_string(value)}")
                if not pairs:
                    self._run(node.orelse, dot, scope, out)
                for key, item in pairs:
                    inner = dict(scope)
                    decl = node.pipe.decl
                    if len(decl) == 1:
                        inner[decl[0]] = item
                    elif len(decl) == 2:
                        inner[decl[0]], inner[decl[1]] = key, item
                    self._run(node.body, item, inner, out)

    def _pipeline(self, pipe: _Pipeline, dot: Any, scope: dict[str, Any]) -> Any:
        value: Any = MISSING
        for i, command in enumerate(pipe.commands):
            extra = (value,) if i > 0 else ()
            value = self._command(command, extra, dot, scope)
        return value

    def _command(self, command: tuple[Any, ...], piped: tuple[Any, ...], dot: Any,
                 scope: dict[str, Any]) -> Any:
        head = command[0]
        if isinstance(head, _Call):
            args = [self._eval(a, dot, scope) for a in command[1:]] + list(piped)
            try:
                return FUNCTIONS[head.name](*args)
            except TemplateError:
                raise
            except TypeError:
                raise TemplateError(
                    f"template: wrong number of arguments for {head.name}") from None
        if len(command) > 1 or piped:
            raise TemplateError(f"template: can't give arguments to a non-function "
                                f"{_describe(head)}")
        return self._eval(head, dot, scope)

    def _eval(self, operand: Any, dot: Any, scope: dict[str, Any]) -> Any:
        if isinstance(operand, _Pipeline):
            return self._pipeline(operand, dot, scope)
        if isinstance(operand, _Call):
            return self._command((operand,), (), dot, scope)
        if isinstance(operand, _Field):
            if operand.var:
                if operand.var not in scope:
                    raise TemplateError(f"template: undefined variable {operand.var}")
                value = scope[operand.var]
            else:
                value = dot
            for name in operand.path:
                if isinstance(value, Mapping):
                    value = value.get(name, MISSING)
                elif value is None or value is MISSING:
                    raise TemplateError(f"template: nil pointer evaluating .{name}")
                else:
                    raise TemplateError(f"template: can't evaluate field {name} in "
                                        f"{type(value).__name__} {go_string(value)}")
            return value
        return operand


def _describe(operand: Any) -> str:
    if isinstance(operand, _Field):
        return (operand.var or "") + "".join("." + p for p in operand.path) or "."
    return go_string(operand)
