"""The Dockerfile frontend without a build: ``check`` (the linter), and the debugging views
``parse_dockerfile``, ``expand_word`` and ``resolve_stages``.

None of them opens the store or runs anything. Each takes Dockerfile text, or finds the
Dockerfile the way ``build`` does (``PATH/Dockerfile``, then ``PATH/dockerfile``, then
``PATH/Containerfile``; ``-f`` relative to the working directory, then to PATH).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dockyard.errors import UsageError

if TYPE_CHECKING:
    from dockyard.dockerfile.check import Finding
    from dockyard.dockerfile.parser import ParseResult

__all__ = [
    "CheckResult",
    "StageInfo",
    "StagesResult",
    "check",
    "expand_word",
    "locate_dockerfile",
    "parse_build_args",
    "parse_dockerfile",
    "resolve_stages",
]


@dataclass(frozen=True)
class CheckResult:
    """What the linter found in one Dockerfile. ``failed``: a finding worse than a warning."""

    dockerfile: str  # the name shown in findings
    findings: tuple[Finding, ...]

    @property
    def failed(self) -> bool:
        return any(f.level == "error" for f in self.findings)


@dataclass(frozen=True)
class StageInfo:
    """One stage of a resolved Dockerfile."""

    index: int
    name: str | None
    base: str
    base_kind: str
    platform: str | None
    depends_on: tuple[int, ...]
    needed: bool
    line: int


@dataclass(frozen=True)
class StagesResult:
    """The stages of a Dockerfile resolved for a target, with the resolver's warnings."""

    target_index: int
    target_name: str | None
    stages: tuple[StageInfo, ...]
    unused_build_args: tuple[str, ...]
    warnings: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """The ``dockyard debug stages`` JSON document."""
        return {
            "target": {"index": self.target_index, "name": self.target_name},
            "stages": [
                {"index": s.index, "name": s.name, "base": s.base, "base_kind": s.base_kind,
                 "platform": s.platform, "depends_on": list(s.depends_on),
                 "needed": s.needed, "line": s.line}
                for s in self.stages
            ],
            "unused_build_args": list(self.unused_build_args),
        }


def parse_build_args(
    items: Iterable[str] | Mapping[str, str], environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``--build-arg`` values as docker takes them: ``K=V``, or ``K`` alone taking K from the
    environment (left out when unset). A mapping is taken as it is. A name holding whitespace
    (``"VERSION 3"``) is refused: no ARG can have that name, so it could only be a typo."""
    if isinstance(items, Mapping):
        pairs = [(str(k), str(v), True) for k, v in items.items()]
    else:
        pairs = [(k, v, bool(sep)) for k, sep, v in (i.partition("=") for i in items)]
    env = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for key, value, has_value in pairs:
        shown = f"{key}={value}" if has_value else key
        if not key:
            raise UsageError(f"invalid --build-arg {shown!r}: expected NAME=VALUE or NAME")
        if any(c.isspace() for c in key):
            first, _, rest = key.strip().partition(" ")
            hint = f" (did you mean {first}={rest.strip()}?)" if rest.strip() else ""
            raise UsageError(
                f"invalid --build-arg {shown!r}: a build arg name cannot contain "
                f"whitespace{hint}")
        if has_value:
            out[key] = value
        elif key in env:
            out[key] = env[key]
    return out


def _read(path: str) -> tuple[str, str]:
    """(text, name shown in errors) of the Dockerfile at ``path`` (``-``: standard input).
    Undecodable bytes survive as surrogate escapes."""
    if path == "-":
        return sys.stdin.buffer.read().decode("utf-8", "surrogateescape"), "Dockerfile"
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as err:
        raise UsageError(f"cannot read Dockerfile {path}: {err.strerror}") from None
    return data.decode("utf-8", "surrogateescape"), path


def locate_dockerfile(context: str, dockerfile: str | None = None) -> str:
    """The file ``build`` would read as the Dockerfile of the directory ``context``."""
    if dockerfile == "-":
        return "-"
    if dockerfile is not None:
        if os.path.isabs(dockerfile) or os.path.isfile(dockerfile):
            return dockerfile
        return os.path.join(context, dockerfile)
    for name in ("Dockerfile", "dockerfile", "Containerfile"):
        candidate = os.path.join(context, name)
        if os.path.isfile(candidate):
            return candidate
    raise UsageError(
        f"no Dockerfile in {context} (looked for Dockerfile and Containerfile); "
        "give one with -f")


def check(
    path: str = ".",
    *,
    dockerfile: str | None = None,
    text: str | None = None,
) -> CheckResult:
    """Lint a Dockerfile: ``text`` if given, else ``dockerfile`` (``-`` for stdin), else the
    Dockerfile of the context directory ``path`` (``path`` may also name the file itself).
    Raises DockerfileError when the file does not parse."""
    from dockyard.dockerfile.check import check_text

    if text is None:
        if dockerfile is not None or os.path.isdir(path):
            file = locate_dockerfile(path, dockerfile)
        elif os.path.exists(path):
            file = path
        else:
            raise UsageError(f"check: {path}: no such file or directory")
        text, name = _read(file)
    else:
        name = dockerfile or "Dockerfile"
    return CheckResult(name, tuple(check_text(text, name)))


def parse_dockerfile(text: str, *, filename: str = "Dockerfile") -> ParseResult:
    """The syntax tree, as BuildKit's parser makes it (before instruction checks): nodes in
    file order, the directives and the parser's warnings. Raises DockerfileError."""
    from dockyard.dockerfile.parser import parse

    return parse(text, filename)


def expand_word(
    word: str, env: Mapping[str, str], *, words: bool = False, escape: str = "\\"
) -> tuple[str, ...]:
    """Expand ``word`` as Dockerfile instructions do: one string, or the words of it
    (``words=True``, as ProcessWords). Raises ExpansionError."""
    from dockyard.dockerfile.shell import Lexer

    if escape not in ("\\", "`"):
        raise UsageError(f"--escape must be \\ or `, not {escape!r}")
    lexer = Lexer(escape)
    if words:
        return tuple(lexer.process_words(word, dict(env)))
    return (lexer.process_word(word, dict(env)),)


def resolve_stages(
    text: str,
    *,
    filename: str = "Dockerfile",
    build_args: Iterable[str] | Mapping[str, str] = (),
    target: str | None = None,
    platform: str | None = None,
) -> StagesResult:
    """The stages, their bases and dependencies, resolved for ``target`` as ``build`` would."""
    from dockyard.dockerfile.stages import load_dockerfile, resolve

    graph = resolve(load_dockerfile(text, filename), parse_build_args(build_args), target,
                    platform)
    target_stage = graph.target_stage
    stages = tuple(
        StageInfo(s.index, s.name, s.base, s.base_kind, _text(s.platform),
                  tuple(s.depends_on), s.needed, s.location.start_line)
        for s in graph.stages
    )
    return StagesResult(target_stage.index, target_stage.name, stages,
                        tuple(graph.unused_build_args), tuple(graph.warnings))


def _text(value: Any) -> str | None:
    return None if value is None else str(value)

