"""Typed Dockerfile instructions built from parser nodes, as BuildKit's ``instructions`` package.

:func:`parse_instruction` validates what BuildKit validates when it turns a syntax node into an
instruction: the instruction name (with a did-you-mean hint), argument counts, each
instruction's flags (unknown, duplicate, missing values, booleans), stage names, HEALTHCHECK
durations and retries, SHELL's JSON form, ONBUILD's forbidden triggers. Words stay
*unexpanded*: expansion needs the build-time environment (see ``shell.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dockyard.dockerfile.parser import Heredoc, Node, go_lower, heredoc_from_word
from dockyard.errors import DockerfileError, Location

__all__ = [
    "INSTRUCTION_NAMES",
    "AddInstruction",
    "ArgInstruction",
    "CmdInstruction",
    "CopyInstruction",
    "EntrypointInstruction",
    "EnvInstruction",
    "ExposeInstruction",
    "FromInstruction",
    "HealthcheckInstruction",
    "Instruction",
    "LabelInstruction",
    "MaintainerInstruction",
    "OnbuildInstruction",
    "RunInstruction",
    "ShellInstruction",
    "StopSignalInstruction",
    "UserInstruction",
    "VolumeInstruction",
    "WorkdirInstruction",
    "parse_duration",
    "parse_instruction",
]


@dataclass(frozen=True, slots=True)
class FromInstruction:
    """FROM image [AS name], with --platform."""

    location: Location
    original: str
    image: str
    stage_name: str | None
    platform: str | None


@dataclass(frozen=True, slots=True)
class RunInstruction:
    """RUN, shell or exec form, with its --mount/--network/--security flags."""

    location: Location
    original: str
    command: tuple[str, ...]
    prepends_shell: bool
    heredocs: tuple[Heredoc, ...]
    mounts: tuple[str, ...]
    network: str | None
    security: str | None


@dataclass(frozen=True, slots=True)
class CmdInstruction:
    """CMD, shell or exec form."""

    location: Location
    original: str
    command: tuple[str, ...]
    prepends_shell: bool


@dataclass(frozen=True, slots=True)
class EntrypointInstruction:
    """ENTRYPOINT, shell or exec form."""

    location: Location
    original: str
    command: tuple[str, ...]
    prepends_shell: bool


@dataclass(frozen=True, slots=True)
class LabelInstruction:
    """LABEL key=value pairs."""

    location: Location
    original: str
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class MaintainerInstruction:
    """MAINTAINER name (deprecated)."""

    location: Location
    original: str
    name: str


@dataclass(frozen=True, slots=True)
class ExposeInstruction:
    """EXPOSE ports."""

    location: Location
    original: str
    ports: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EnvInstruction:
    """ENV key=value pairs."""

    location: Location
    original: str
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class AddInstruction:
    """ADD sources to a destination, with its flags."""

    location: Location
    original: str
    sources: tuple[str, ...]
    dest: str
    heredocs: tuple[Heredoc, ...]
    chown: str | None
    chmod: str | None
    link: bool
    exclude: tuple[str, ...]
    checksum: str | None
    keep_git_dir: bool
    parents: bool = False


@dataclass(frozen=True, slots=True)
class CopyInstruction:
    """COPY sources to a destination, with its flags."""

    location: Location
    original: str
    sources: tuple[str, ...]
    dest: str
    heredocs: tuple[Heredoc, ...]
    chown: str | None
    chmod: str | None
    link: bool
    exclude: tuple[str, ...]
    parents: bool
    from_: str | None


@dataclass(frozen=True, slots=True)
class VolumeInstruction:
    """VOLUME paths."""

    location: Location
    original: str
    paths: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UserInstruction:
    """USER user[:group]."""

    location: Location
    original: str
    user: str


@dataclass(frozen=True, slots=True)
class WorkdirInstruction:
    """WORKDIR path."""

    location: Location
    original: str
    path: str


@dataclass(frozen=True, slots=True)
class ArgInstruction:
    """ARG name[=default] declarations."""

    location: Location
    original: str
    args: tuple[tuple[str, str | None], ...]


@dataclass(frozen=True, slots=True)
class OnbuildInstruction:
    """ONBUILD and the instruction it carries."""

    location: Location
    original: str
    expression: str
    inner: Instruction


@dataclass(frozen=True, slots=True)
class StopSignalInstruction:
    """STOPSIGNAL signal."""

    location: Location
    original: str
    signal: str


@dataclass(frozen=True, slots=True)
class HealthcheckInstruction:
    """HEALTHCHECK, its command or NONE, and its options."""

    location: Location
    original: str
    test: tuple[str, ...] | None
    interval: int | None
    timeout: int | None
    start_period: int | None
    start_interval: int | None
    retries: int | None


@dataclass(frozen=True, slots=True)
class ShellInstruction:
    """SHELL exec form."""

    location: Location
    original: str
    shell: tuple[str, ...]


Instruction = (
    FromInstruction
    | RunInstruction
    | CmdInstruction
    | EntrypointInstruction
    | LabelInstruction
    | MaintainerInstruction
    | ExposeInstruction
    | EnvInstruction
    | AddInstruction
    | CopyInstruction
    | VolumeInstruction
    | UserInstruction
    | WorkdirInstruction
    | ArgInstruction
    | OnbuildInstruction
    | StopSignalInstruction
    | HealthcheckInstruction
    | ShellInstruction
)

INSTRUCTION_NAMES: tuple[str, ...] = (
    "add", "arg", "cmd", "copy", "entrypoint", "env", "expose", "from", "healthcheck",
    "label", "maintainer", "onbuild", "run", "shell", "stopsignal", "user", "volume", "workdir",
)


_VALID_STAGE_NAME = re.compile(r"[a-z][a-z0-9\-_.]*")
_ONBUILD_PREFIX = re.compile(r"^\s*ONBUILD\s*", re.I)
_MIN_HEALTH_DURATION = 1_000_000  # 1ms, BuildKit's container.MinimumDuration

_STRING, _BOOL, _STRINGS = "string", "bool", "strings"

# Allowed flags per instruction, in the order BuildKit registers them.
_FLAGS: dict[str, dict[str, str]] = {
    "from": {"platform": _STRING},
    "run": {"mount": _STRINGS, "network": _STRING, "security": _STRING},
    "copy": {
        "from": _STRING, "chown": _STRING, "chmod": _STRING, "link": _BOOL,
        "exclude": _STRINGS, "parents": _BOOL,
    },
    "add": {
        "chown": _STRING, "chmod": _STRING, "link": _BOOL, "checksum": _STRING,
        "keep-git-dir": _BOOL, "exclude": _STRINGS,
    },
    "healthcheck": {
        "interval": _STRING, "timeout": _STRING, "start-period": _STRING,
        "start-interval": _STRING, "retries": _STRING,
    },
}

_NETWORK_MODES = ("default", "none", "host")
_SECURITY_MODES = ("sandbox", "insecure")


class _Fail(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def _levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _suggest(word: str, options: list[str] | tuple[str, ...]) -> str | None:
    """The closest option within a small edit distance (BuildKit's ``suggest.Search``)."""
    word = word.lower()
    best, best_distance = None, 3
    for option in options:
        distance = _levenshtein(word, option.lower())
        if distance < best_distance and distance < max(len(word), 1):
            best, best_distance = option, distance
    return best


class _Flags:
    """BuildKit's ``BFlags.Parse`` for one instruction's raw flags."""

    def __init__(self, command: str, raw: tuple[str, ...], allowed: dict[str, str]) -> None:
        self.values: dict[str, str] = {}
        self.lists: dict[str, list[str]] = {}
        for arg in raw:
            if arg == "--":
                break
            if not arg.startswith("--"):
                raise _Fail(f"arg should start with -- : {arg}")
            flag_name, has_value, value = arg.partition("=")
            name = flag_name[2:]
            kind = allowed.get(name)
            if kind is None:
                names = ", ".join("--" + n for n in allowed)
                suggestion = _suggest(name, tuple(allowed))
                hint = f"did you mean --{suggestion}?" if suggestion else None
                accepted = f"{command} accepts {names}" if names else f"{command} accepts no flags"
                hint = f"{hint} {accepted}" if hint else accepted
                raise _Fail(f"unknown flag: {flag_name}", hint)
            if kind != _STRINGS and (name in self.values):
                raise _Fail(f"duplicate flag specified: {flag_name}")
            if kind == _BOOL:
                if has_value and value == "":
                    raise _Fail(f"missing a value on flag: {flag_name}")
                lowered = go_lower(value)
                if lowered in ("true", ""):
                    self.values[name] = "true"
                elif lowered == "false":
                    self.values[name] = "false"
                else:
                    raise _Fail(f"expecting boolean value for flag {flag_name}, not: {value}")
            else:
                if not has_value:
                    raise _Fail(f"missing a value on flag: {flag_name}")
                if kind == _STRINGS:
                    self.lists.setdefault(name, []).append(value)
                    self.values[name] = value
                else:
                    self.values[name] = value

    def string(self, name: str) -> str | None:
        return self.values.get(name)

    def boolean(self, name: str) -> bool:
        return self.values.get(name) == "true"

    def strings(self, name: str) -> tuple[str, ...]:
        return tuple(self.lists.get(name, ()))


_UNITS = {
    "ns": 1, "us": 1_000, "\u00b5s": 1_000, "\u03bcs": 1_000, "ms": 1_000_000,
    "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000,
}
_MAX_INT64 = (1 << 63) - 1


def parse_duration(text: str) -> int:
    """Go's ``time.ParseDuration`` in nanoseconds; raises ValueError like Go's error."""
    original = text
    invalid = ValueError(f'time: invalid duration "{original}"')
    negative = False
    if text and text[0] in "+-":
        negative = text[0] == "-"
        text = text[1:]
    if text == "0":
        return 0
    if text == "":
        raise invalid
    total = 0
    while text:
        i = 0
        while i < len(text) and text[i] in "0123456789":
            i += 1
        int_part, text = text[:i], text[i:]
        frac_part = ""
        if text.startswith("."):
            j = 1
            while j < len(text) and text[j] in "0123456789":
                j += 1
            frac_part, text = text[1:j], text[j:]
            if not int_part and not frac_part:
                raise invalid
        elif not int_part:
            raise invalid
        k = 0
        while k < len(text) and text[k] != "." and text[k] not in "0123456789":
            k += 1
        unit_name, text = text[:k], text[k:]
        if not unit_name:
            raise ValueError(f'time: missing unit in duration "{original}"')
        unit = _UNITS.get(unit_name)
        if unit is None:
            raise ValueError(f'time: unknown unit "{unit_name}" in duration "{original}"')
        value = int(int_part or "0")
        if value > (1 << 63) // unit:
            raise invalid
        value *= unit
        if frac_part:
            # Go scales the fraction in float64 after truncating it to what fits an int64.
            digits = frac_part
            numerator, scale = 0, 1
            for d in digits:
                if numerator > ((1 << 63) - 1) // 10:
                    break
                numerator, scale = numerator * 10 + int(d), scale * 10
            value += int(float(numerator) * (float(unit) / float(scale)))
            if value > 1 << 63:
                raise invalid
        total += value
        if total > 1 << 63:
            raise invalid
    if negative:
        return -total
    if total > _MAX_INT64:
        raise invalid
    return total


def _go_parse_int32(text: str) -> int:
    """Go's ``strconv.ParseInt(s, 10, 32)``."""
    body = text[1:] if text[:1] in ("+", "-") else text
    if not body or not body.isascii() or not body.isdigit():
        raise _Fail(f'strconv.ParseInt: parsing "{text}": invalid syntax')
    value = int(text)
    if not -(1 << 31) <= value < (1 << 31):
        raise _Fail(f'strconv.ParseInt: parsing "{text}": value out of range')
    return value


def _interval(flags: _Flags, name: str) -> int | None:
    text = flags.string(name)
    if text is None:
        return None
    if text == "":
        return 0
    try:
        value = parse_duration(text)
    except ValueError as err:
        raise _Fail(str(err)) from None
    if value == 0:
        return 0
    if value < _MIN_HEALTH_DURATION:
        raise _Fail(f'Interval "{name}" cannot be less than 1ms')
    return value


def _exactly_one(command: str, args: tuple[str, ...]) -> str:
    if len(args) != 1:
        raise _Fail(f"{command} requires exactly one argument")
    return args[0]


def _at_least_one(command: str, args: tuple[str, ...]) -> None:
    if not args:
        raise _Fail(f"{command} requires at least one argument")


def _pairs(command: str, args: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    _at_least_one(command, args)
    if len(args) % 3:
        raise _Fail(f"Bad input to {command}, too many arguments")
    return tuple((args[i], args[i + 1]) for i in range(0, len(args), 3))


def _command(command: str, node: Node, allow_empty_json: bool) -> tuple[tuple[str, ...], bool]:
    if node.json:
        if not node.args and not allow_empty_json:
            raise _Fail(f"{command} requires at least one argument")
        return node.args, False
    if not node.args:
        raise _Fail(f"{command} requires at least one argument")
    return (" ".join(node.args),), True


def _heredoc_for(word: str, heredocs: tuple[Heredoc, ...]) -> Heredoc | None:
    try:
        parsed = heredoc_from_word(word)
    except DockerfileError:
        return None
    if parsed is None:
        return None
    for doc in heredocs:
        if doc.name == parsed[0]:
            return doc
    return None


def _sources_and_dest(
    command: str, node: Node
) -> tuple[tuple[str, ...], str, tuple[Heredoc, ...]]:
    if len(node.args) < 2:
        raise _Fail(
            f"{command} requires at least two arguments, but only one was provided. "
            "Destination could not be determined"
        )
    *sources, dest = node.args
    paths: list[str] = []
    docs: list[Heredoc] = []
    for source in sources:
        doc = _heredoc_for(source, node.heredocs) if node.heredocs and not node.json else None
        if doc is None:
            paths.append(source)
        else:
            docs.append(doc)
    return tuple(paths), dest, tuple(docs)


def _build(node: Node, location: Location) -> Instruction:
    name = go_lower(node.instruction)
    upper = name.upper()
    args = node.args
    if name not in INSTRUCTION_NAMES:
        suggestion = _suggest(name, INSTRUCTION_NAMES)
        hint = f"did you mean {suggestion.upper()}?" if suggestion else None
        raise _Fail(f"unknown instruction: {node.instruction.upper()}", hint)
    original = node.original
    common = (location, original)

    if name == "healthcheck":
        _at_least_one(upper, args)
        typ = args[0].upper()
        if typ == "NONE":
            if len(args) != 1:
                raise _Fail("HEALTHCHECK NONE takes no arguments")
            return HealthcheckInstruction(*common, ("NONE",), None, None, None, None, None)
        flags = _Flags(upper, node.flags, _FLAGS["healthcheck"])
        if typ != "CMD":
            raise _Fail(f'Unknown type "{typ}" in HEALTHCHECK (try CMD)')
        command = args[1:] if node.json else ((" ".join(args[1:]),) if args[1:] else ())
        if not command:
            raise _Fail("Missing command after HEALTHCHECK CMD")
        test = ("CMD", *command) if node.json else ("CMD-SHELL", *command)
        retries_text = flags.string("retries")
        retries = None
        if retries_text is not None and retries_text != "":
            retries = _go_parse_int32(retries_text)
            if retries < 0:
                raise _Fail(f"--retries cannot be negative ({retries})")
        return HealthcheckInstruction(
            *common, test,
            _interval(flags, "interval"), _interval(flags, "timeout"),
            _interval(flags, "start-period"), _interval(flags, "start-interval"), retries,
        )

    flags = _Flags(upper, node.flags, _FLAGS.get(name, {}))

    if name == "from":
        if len(args) == 3 and args[1].lower() == "as":
            stage = go_lower(args[2])
            if not _VALID_STAGE_NAME.fullmatch(stage):
                raise _Fail(
                    f'invalid name for build stage: "{args[2]}", '
                    "name can't start with a number or contain symbols"
                )
        elif len(args) != 1:
            raise _Fail("FROM requires either one or three arguments")
        else:
            stage = None
        return FromInstruction(*common, args[0], stage, flags.string("platform"))
    if name == "run":
        if not args and not node.heredocs:
            raise _Fail("RUN requires at least one argument")
        command, shell = _command(upper, node, allow_empty_json=False)
        network = flags.string("network")
        if network is not None and network not in _NETWORK_MODES:
            raise _Fail(f"unsupported network mode: {network}", "use default, none or host")
        security = flags.string("security")
        if security is not None and security not in _SECURITY_MODES:
            raise _Fail(f"unsupported security mode: {security}", "use sandbox or insecure")
        return RunInstruction(
            *common, command, shell, node.heredocs, flags.strings("mount"), network, security
        )
    if name == "cmd":
        command, shell = _command(upper, node, allow_empty_json=True)
        return CmdInstruction(*common, command, shell)
    if name == "entrypoint":
        command, shell = _command(upper, node, allow_empty_json=True)
        return EntrypointInstruction(*common, command, shell)
    if name == "shell":
        _at_least_one(upper, args)
        if not node.json:
            raise _Fail("SHELL requires the arguments to be in JSON form")
        return ShellInstruction(*common, args)
    if name == "env":
        return EnvInstruction(*common, _pairs(upper, args))
    if name == "label":
        return LabelInstruction(*common, _pairs(upper, args))
    if name == "maintainer":
        return MaintainerInstruction(*common, _exactly_one(upper, args))
    if name == "expose":
        _at_least_one(upper, args)
        return ExposeInstruction(*common, args)
    if name == "volume":
        _at_least_one(upper, args)
        for path in args:
            if not path.strip():
                raise _Fail("VOLUME specified can not be an empty string")
        return VolumeInstruction(*common, args)
    if name == "user":
        return UserInstruction(*common, _exactly_one(upper, args))
    if name == "workdir":
        return WorkdirInstruction(*common, _exactly_one(upper, args))
    if name == "stopsignal":
        return StopSignalInstruction(*common, _exactly_one(upper, args))
    if name == "arg":
        _at_least_one(upper, args)
        declared: list[tuple[str, str | None]] = []
        for arg in args:
            key, eq, value = arg.partition("=")
            if eq and not key:
                raise _Fail("ARG names can not be blank")
            declared.append((key, value if eq else None))
        return ArgInstruction(*common, tuple(declared))
    if name in ("copy", "add"):
        sources, dest, docs = _sources_and_dest(upper, node)
        if name == "copy":
            return CopyInstruction(
                *common, sources, dest, docs, flags.string("chown"), flags.string("chmod"),
                flags.boolean("link"), flags.strings("exclude"), flags.boolean("parents"),
                flags.string("from"),
            )
        return AddInstruction(
            *common, sources, dest, docs, flags.string("chown"), flags.string("chmod"),
            flags.boolean("link"), flags.strings("exclude"), flags.string("checksum"),
            flags.boolean("keep-git-dir"),
        )
    # onbuild
    inner = node.inner
    if inner is None:
        raise _Fail("ONBUILD requires at least one argument")
    trigger = inner.instruction.upper()
    if trigger == "ONBUILD":
        raise _Fail("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if trigger in ("MAINTAINER", "FROM"):
        raise _Fail(f"{trigger} isn't allowed as an ONBUILD trigger")
    if inner.heredocs == () and node.heredocs:
        inner = Node(inner.instruction, inner.flags, inner.args, node.heredocs, inner.json,
                     inner.original, inner.start_line, inner.end_line, inner.inner)
    expression = _ONBUILD_PREFIX.sub("", original, count=1)
    return OnbuildInstruction(*common, expression, _build(inner, location))


def parse_instruction(
    node: Node, filename: str = "Dockerfile", escape: str = "\\", *, source: str | None = None
) -> Instruction:
    """Build the typed instruction of a parser node, validating it like BuildKit.

    ``escape`` is accepted for the contract's signature (the parser already applied it).
    Raises DockerfileError located at the node's lines (with ``source`` for the excerpt).
    """
    location = Location(filename, node.start_line, node.end_line)
    try:
        return _build(node, location)
    except _Fail as err:
        raise DockerfileError(err.message, location, err.hint, source) from None
