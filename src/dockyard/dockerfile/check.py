"""The linter behind ``dockyard check``: named rules with a level and a line.

Rule names follow BuildKit's checks where BuildKit has the rule (``MaintainerDeprecated``,
``JSONArgsRecommended``, ``UndefinedVar``, ``UndefinedArgInFrom``, ``StageNameCasing``,
``NoEmptyContinuation``, ``SecretsUsedInArgOrEnv``); the others are dockyard's own (``CopyAllBeforeInstall``,
``AptGetUpdateAlone``, ``NoCdInRun``, ``FromWithoutTag``).

Parse errors are not findings: :func:`check_text` raises the DockerfileError. Errors that only
show when the stages are resolved (a COPY --from of a later stage, a blank base name) become
``InvalidDockerfile`` findings at level error so the other findings still show.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from dockyard.dockerfile.instructions import (
    AddInstruction,
    ArgInstruction,
    CmdInstruction,
    CopyInstruction,
    EntrypointInstruction,
    EnvInstruction,
    ExposeInstruction,
    Instruction,
    LabelInstruction,
    MaintainerInstruction,
    RunInstruction,
    ShellInstruction,
    StopSignalInstruction,
    UserInstruction,
    VolumeInstruction,
    WorkdirInstruction,
)
from dockyard.dockerfile.sensitive import looks_secret
from dockyard.dockerfile.shell import Lexer
from dockyard.dockerfile.stages import (
    EMPTY_IMAGE,
    Dockerfile,
    Stage,
    apply_env_instruction,
    compute_global_args,
    load_dockerfile,
    resolve,
)
from dockyard.errors import DockerfileError, ExpansionError

__all__ = ["RULES", "Finding", "Level", "check", "check_text", "has_errors"]

Level = Literal["warning", "error"]

# name -> (level, one-line description)
RULES: dict[str, tuple[Level, str]] = {
    "MaintainerDeprecated": ("warning", "MAINTAINER is deprecated; use a label"),
    "JSONArgsRecommended": ("warning", "shell-form CMD/ENTRYPOINT does not forward signals"),
    "CopyAllBeforeInstall": (
        "warning",
        "copying the whole context before installing dependencies busts the cache",
    ),
    "AptGetUpdateAlone": ("warning", "apt-get update in its own RUN leaves a stale index"),
    "NoCdInRun": ("warning", "use WORKDIR instead of cd in RUN"),
    "UndefinedVar": ("warning", "a variable that is not defined (yet)"),
    "UndefinedArgInFrom": ("error", "a FROM line uses an ARG that is not declared"),
    "StageNameCasing": ("warning", "stage names should be lower-case"),
    "FromWithoutTag": ("warning", "a base image without a tag or digest"),
    "NoEmptyContinuation": ("warning", "empty continuation lines"),
    "InvalidDockerfile": ("error", "the stages cannot be resolved"),
    "SecretsUsedInArgOrEnv": (
        "warning", "Sensitive data should not be used in the ARG or ENV commands"
    ),
}


@dataclass(frozen=True)
class Finding:
    """One problem the linter found."""

    rule: str
    level: Level
    line: int
    message: str
    file: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.level}: {self.rule}: {self.message}"

    def to_dict(self) -> dict[str, object]:
        """The JSON form: rule, level, line, message, file."""
        return {
            "rule": self.rule,
            "level": self.level,
            "line": self.line,
            "message": self.message,
            "file": self.file,
        }


def has_errors(findings: Iterable[Finding]) -> bool:
    """True when any finding is worse than a warning."""
    return any(f.level == "error" for f in findings)


def check_text(text: str, filename: str = "Dockerfile") -> list[Finding]:
    """Lint Dockerfile text; raises DockerfileError when it does not parse."""
    return check(load_dockerfile(text, filename))


# Commands that install a project's dependencies (so they should run before COPY . .).
_INSTALL_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("apt-get", "install"), ("apt", "install"), ("apk", "add"), ("yum", "install"),
    ("dnf", "install"), ("microdnf", "install"), ("zypper", "install"),
    ("pip", "install"), ("pip3", "install"), ("python", "-m", "pip", "install"),
    ("python3", "-m", "pip", "install"), ("poetry", "install"), ("pipenv", "install"),
    ("uv", "sync"), ("uv", "pip", "install"),
    ("npm", "install"), ("npm", "ci"), ("npm", "i"), ("yarn", "install"), ("yarn",),
    ("pnpm", "install"), ("bun", "install"),
    ("go", "mod", "download"), ("go", "get"),
    ("cargo", "fetch"), ("cargo", "install"),
    ("bundle", "install"), ("gem", "install"), ("composer", "install"),
    ("mvn", "dependency:go-offline"), ("dotnet", "restore"),
)
_IDENTIFIER = re.compile(r"^[^\W\d]\w*$")
_SPLIT_COMMANDS = re.compile(r"&&|\|\||;|\n|\|")


def _is_apt_update(words: list[str]) -> bool:
    if words[0].rsplit("/", 1)[-1] not in ("apt-get", "apt"):
        return False
    rest = [w for w in words[1:] if not w.startswith("-")]
    return bool(rest) and rest[0] == "update"


def _segments(inst: RunInstruction) -> list[list[str]]:
    """The simple commands of a RUN, each as words without leading env assignments/sudo."""
    if inst.prepends_shell:
        text = " ".join(inst.command)
        for heredoc in inst.heredocs:
            text += "\n" + heredoc.content
        parts = _SPLIT_COMMANDS.split(text)
    else:
        parts = [shlex.join(inst.command)]
    out: list[list[str]] = []
    for part in parts:
        try:
            words = shlex.split(part, comments=True)
        except ValueError:
            words = part.split()
        while words and (
            re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0])
            or words[0] in ("sudo", "exec", "(", "{", "then", "do", "else")
        ):
            words = words[1:]
        if words:
            out.append(words)
    return out


def _command_matches(words: list[str], pattern: tuple[str, ...]) -> bool:
    if words[0].rsplit("/", 1)[-1] != pattern[0]:
        return False
    rest = [w for w in words[1:] if not w.startswith("-")] if len(pattern) > 1 else []
    if len(pattern) > 1 and pattern[1] == "-m":
        rest = words[1:]
    return tuple(rest[: len(pattern) - 1]) == pattern[1:]


def _install_command(inst: RunInstruction) -> str | None:
    for words in _segments(inst):
        for pattern in _INSTALL_COMMANDS:
            if _command_matches(words, pattern):
                return " ".join(pattern)
    return None


def _is_broad_copy(inst: Instruction) -> bool:
    if not isinstance(inst, CopyInstruction | AddInstruction) or inst.heredocs:
        return False
    if isinstance(inst, CopyInstruction) and inst.from_:
        return False
    broad = {".", "./", "*", "./*", "/", ""}
    return any(src.strip() in broad for src in inst.sources)


def _suggest(name: str, options: Iterable[str]) -> str | None:
    options = list(options)
    for option in options:
        if option.lower() == name.lower() and option != name:
            return option
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.7)
    return close[0] if close else None


def _words_to_expand(inst: Instruction) -> list[str]:
    """The words BuildKit expands with the stage environment for this instruction."""
    if isinstance(inst, CopyInstruction | AddInstruction):
        words = [*inst.sources, inst.dest, *inst.exclude]
        words += [w for w in (inst.chown, inst.chmod) if w]
        if isinstance(inst, AddInstruction) and inst.checksum:
            words.append(inst.checksum)
        return words
    if isinstance(inst, EnvInstruction | LabelInstruction):
        return [w for pair in inst.pairs for w in pair]
    if isinstance(inst, ArgInstruction):
        return [v for _, v in inst.args if v is not None]
    if isinstance(inst, ExposeInstruction):
        return list(inst.ports)
    if isinstance(inst, StopSignalInstruction):
        return [inst.signal]
    if isinstance(inst, UserInstruction):
        return [inst.user]
    if isinstance(inst, VolumeInstruction):
        return list(inst.paths)
    if isinstance(inst, WorkdirInstruction):
        return [inst.path]
    return []


def _has_tag_or_digest(image: str) -> bool:
    if "@" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    return ":" in last


class _Linter:
    def __init__(self, dockerfile: Dockerfile) -> None:
        self.df = dockerfile
        self.file = dockerfile.parse.filename
        self.lexer = Lexer(dockerfile.escape)
        self.findings: list[Finding] = []

    def add(self, rule: str, line: int, message: str, level: Level | None = None) -> None:
        self.findings.append(
            Finding(rule, level or RULES[rule][0], line, message, self.file)
        )

    def run(self) -> list[Finding]:
        for message, line in self.df.parse.warnings:
            if "continuation" in message.lower():
                self.add("NoEmptyContinuation", line, message)
        last_stage = self.df.stages[-1]
        globals_ = compute_global_args(self.df, {}, last_stage.name or "")
        declared_meta = {key for inst in self.df.meta_args for key, _ in inst.args}
        self._lint_meta_args(globals_)
        names: dict[str, int] = {}
        final_env: list[dict[str, str]] = []
        final_declared: list[set[str]] = []
        final_shell: list[bool] = []
        for stage in self.df.stages:
            base_index = self._lint_from(stage, globals_, declared_meta, names)
            if base_index is not None:
                env = dict(final_env[base_index])
                declared = set(final_declared[base_index])
                shell_set = final_shell[base_index]
            else:
                env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
                declared = set()
                shell_set = False
            shell_set = self._lint_body(stage, env, declared, globals_, shell_set)
            final_env.append(env)
            final_declared.append(declared)
            final_shell.append(shell_set)
            if stage.name:
                names[stage.name] = stage.index
        try:
            resolve(self.df, {}, None)
        except ExpansionError:
            pass  # already reported by UndefinedArgInFrom or fails only at build time
        except DockerfileError as err:
            line = err.location.start_line if err.location else 1
            message = err.message + (f" ({err.hint})" if err.hint else "")
            self.add("InvalidDockerfile", line, message)
        self.findings.sort(key=lambda f: (f.line, f.rule))
        return self.findings

    def _lint_meta_args(self, globals_: Mapping[str, str]) -> None:
        env: dict[str, str] = {
            k: v for k, v in globals_.items() if k not in self._meta_keys()
        }
        declared: set[str] = set()
        for inst in self.df.meta_args:
            self._undefined(inst, env, declared)
            for key, default in inst.args:
                declared.add(key)
                if default is not None:
                    with contextlib.suppress(ExpansionError):
                        env[key] = self.lexer.process_word(default, env)

    def _meta_keys(self) -> set[str]:
        return {key for inst in self.df.meta_args for key, _ in inst.args}

    def _lint_from(
        self,
        stage: Stage,
        globals_: Mapping[str, str],
        declared_meta: set[str],
        names: Mapping[str, int],
    ) -> int | None:
        line = stage.location.start_line
        written = stage.written_name
        if written and written != written.lower():
            self.add("StageNameCasing", line, f"Stage name '{written}' should be lowercase")
        base = stage.base
        known = set(globals_) | declared_meta
        for word in [stage.base, stage.platform or ""]:
            try:
                expansion = self.lexer.expand(word, globals_)
            except ExpansionError:
                continue
            if word == stage.base:
                base = expansion.result
            for name in sorted(expansion.unguarded_unmatched - known):
                if not _IDENTIFIER.match(name):
                    continue
                hint = _suggest(name, known)
                message = f"FROM argument '{name}' is not declared"
                if hint:
                    message += f" (did you mean {hint}?)"
                self.add("UndefinedArgInFrom", line, message)
        base_index = names.get(base.lower())
        if (
            base_index is None
            and base
            and base != EMPTY_IMAGE
            and "$" not in base
            and not _has_tag_or_digest(base)
        ):
            self.add(
                "FromWithoutTag",
                line,
                f"FROM {base} has no tag; pin a version (e.g. {base}:<version>) "
                "so rebuilds use the same base",
            )
        return base_index

    def _undefined(self, inst: Instruction, env: Mapping[str, str], declared: set[str]) -> None:
        reported: set[str] = set()
        for word in _words_to_expand(inst):
            try:
                expansion = self.lexer.expand(word, env)
            except ExpansionError:
                continue
            for name in sorted(expansion.unguarded_unmatched - declared - reported):
                if not _IDENTIFIER.match(name):
                    continue
                reported.add(name)
                message = f"Usage of undefined variable '${name}'"
                hint = _suggest(name, env)
                if hint:
                    message += f" (did you mean ${hint}?)"
                self.add("UndefinedVar", inst.location.start_line, message)

    def _lint_body(
        self,
        stage: Stage,
        env: dict[str, str],
        declared: set[str],
        globals_: Mapping[str, str],
        shell_set: bool,
    ) -> bool:
        pending_copy: list[CopyInstruction | AddInstruction] = []
        for inst in stage.instructions:
            line = inst.location.start_line
            self._undefined(inst, env, declared)
            if isinstance(inst, ArgInstruction):
                declared.update(key for key, _ in inst.args)
                self._lint_secret_names("ARG", [key for key, _ in inst.args], line)
            elif isinstance(inst, EnvInstruction):
                self._lint_secret_names("ENV", [key for key, _ in inst.pairs], line)
            apply_env_instruction(inst, env, globals_, {}, self.lexer)
            if isinstance(inst, MaintainerInstruction):
                self.add(
                    "MaintainerDeprecated",
                    line,
                    "Maintainer instruction is deprecated in favor of using label",
                )
            elif isinstance(inst, ShellInstruction):
                shell_set = True
            elif isinstance(inst, CmdInstruction | EntrypointInstruction):
                if inst.prepends_shell and not shell_set:
                    kind = "CMD" if isinstance(inst, CmdInstruction) else "ENTRYPOINT"
                    self.add(
                        "JSONArgsRecommended",
                        line,
                        f"JSON arguments recommended for {kind} to prevent unintended "
                        "behavior related to OS signals",
                    )
            elif isinstance(inst, CopyInstruction | AddInstruction):
                if _is_broad_copy(inst):
                    pending_copy.append(inst)
            elif isinstance(inst, RunInstruction):
                self._lint_run(inst, pending_copy)
        return shell_set

    def _lint_secret_names(self, instruction: str, names: list[str], line: int) -> None:
        """BuildKit's check: a stage's ARG or ENV named like a secret (its value ends up in
        the image's history or config)."""
        for name in names:
            if looks_secret(name):
                self.add(
                    "SecretsUsedInArgOrEnv",
                    line,
                    "Do not use ARG or ENV instructions for sensitive data "
                    f"({instruction} {json.dumps(name)})",
                )

    def _lint_run(
        self, inst: RunInstruction, pending_copy: list[CopyInstruction | AddInstruction]
    ) -> None:
        line = inst.location.start_line
        segments = _segments(inst)
        if segments and all(_is_apt_update(words) for words in segments):
            self.add(
                "AptGetUpdateAlone",
                line,
                "apt-get update in its own RUN is cached separately from the install that "
                "needs it; run 'apt-get update && apt-get install ...' in one RUN",
            )
        if any(words[0] == "cd" for words in segments):
            self.add(
                "NoCdInRun",
                line,
                "use WORKDIR to change directory instead of 'cd' in RUN",
            )
        if pending_copy:
            installer = _install_command(inst)
            if installer is not None:
                for copy in pending_copy:
                    self.add(
                        "CopyAllBeforeInstall",
                        copy.location.start_line,
                        f"the whole build context is copied before '{installer}' "
                        f"(line {line}): any source change re-runs the install; copy only "
                        "the dependency manifests before it",
                    )
                pending_copy.clear()


def check(dockerfile: Dockerfile) -> list[Finding]:
    """All findings for a loaded Dockerfile, sorted by line."""
    return _Linter(dockerfile).run()
