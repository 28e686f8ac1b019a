"""Instructions -> build stages, global (meta) ARGs, build args and the stage dependency graph.

This follows BuildKit's ``instructions.Parse`` and ``dockerfile2llb`` (``buildMetaArgs``,
``dispatchArg``, ``toCommand``, ``detectRunMount``):

* ARGs before the first FROM are *meta* args, usable in FROM lines (image and ``--platform``)
  together with the automatic platform args; a stage sees one only after re-declaring it with
  a bare ``ARG NAME``.
* A ``--build-arg`` overrides an ARG's default; one that no ARG declares is reported unused.
* A stage's base is another stage when its expanded name is the (lower-case) name of an
  *earlier* stage, ``scratch`` when it is literally ``scratch``, else an image reference.
* ``COPY --from`` names a stage (or an index); an unknown name is an image. ``RUN --mount
  from=`` names a stage, else an image. A stage may only use earlier stages.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from dockyard.dockerfile.instructions import (
    ArgInstruction,
    CopyInstruction,
    EnvInstruction,
    FromInstruction,
    Instruction,
    OnbuildInstruction,
    RunInstruction,
    parse_instruction,
)
from dockyard.dockerfile.parser import ParseResult, parse
from dockyard.dockerfile.shell import Lexer, go_quote
from dockyard.errors import DockerfileError, ExpansionError, Location, UsageError

__all__ = [
    "NON_ENV_ARGS",
    "PLATFORM_ARGS",
    "PROXY_ARGS",
    "Dockerfile",
    "Platform",
    "ResolvedStage",
    "Stage",
    "StageGraph",
    "default_args",
    "host_platform",
    "load_dockerfile",
    "parse_build_args",
    "parse_dockerfile",
    "parse_mount_from",
    "resolve",
]

PROXY_ARGS: tuple[str, ...] = (
    "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
    "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy",
)
PLATFORM_ARGS: tuple[str, ...] = (
    "BUILDPLATFORM", "BUILDOS", "BUILDOSVERSION", "BUILDARCH", "BUILDVARIANT",
    "TARGETPLATFORM", "TARGETOS", "TARGETOSVERSION", "TARGETARCH", "TARGETVARIANT",
    "TARGETSTAGE",
)
#: Build args an ARG declares without putting them in the environment (BuildKit's
#: ``nonEnvArgs``: they only switch SBOM scanning on): RUN never sees them, so they are in no
#: RUN key, and words expand them to nothing; the history lists them as declared.
NON_ENV_ARGS: frozenset[str] = frozenset({"BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"})
# Build args that are never reported as unused (Docker's builtin allow list, plus BuildKit's).
_BUILTIN_ARGS = frozenset(PROXY_ARGS) | frozenset(PLATFORM_ARGS)
_BUILTIN_PREFIXES = ("BUILDKIT_",)
_BUILTIN_NAMES = frozenset({"SOURCE_DATE_EPOCH"})

_VALID_STAGE_NAME = re.compile(r"^[a-z][a-z0-9\-_.]*$")
_GO_ATOI = re.compile(r"^[+-]?[0-9]+$")

EMPTY_IMAGE = "scratch"


@dataclass(frozen=True)
class Stage:
    """One build stage: its FROM line and the instructions after it (words unexpanded)."""

    index: int
    name: str | None
    base: str
    platform: str | None
    instructions: tuple[Instruction, ...]
    location: Location
    written_name: str | None = None  # the AS name with its original casing
    from_instruction: FromInstruction | None = None


@dataclass(frozen=True)
class Dockerfile:
    """A parsed Dockerfile split into meta ARGs and stages."""

    parse: ParseResult
    meta_args: tuple[ArgInstruction, ...]
    stages: tuple[Stage, ...]

    @property
    def escape(self) -> str:
        """The active escape character."""
        return self.parse.directives.escape

    def stage_names(self) -> list[str]:
        """Names of the named stages, in order."""
        return [s.name for s in self.stages if s.name]


@dataclass(frozen=True)
class Platform:
    """An OCI platform triple."""

    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``os/arch[/variant]`` (also ``arch`` alone, meaning linux)."""
        parts = text.strip().lower().split("/")
        if len(parts) == 1 and parts[0] in _KNOWN_OS:
            # an OS alone means this machine's architecture on it (containerd's rule)
            host = host_platform()
            return cls(parts[0], host.architecture, host.variant)
        if len(parts) == 1 and parts[0]:
            return cls("linux", _normalize_arch(parts[0])[0], _normalize_arch(parts[0])[1])
        if len(parts) in (2, 3) and all(parts):
            arch, variant = _normalize_arch(parts[1], parts[2] if len(parts) == 3 else "")
            return cls(parts[0], arch, variant)
        raise UsageError(f"invalid platform {text!r}: expected os/arch[/variant]")


_KNOWN_OS = frozenset({"linux", "windows", "darwin", "freebsd", "netbsd", "openbsd",
                       "solaris", "illumos", "android", "ios", "js", "wasip1", "plan9"})


def _normalize_arch(arch: str, variant: str = "") -> tuple[str, str]:
    aliases = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "i386": "386"}
    arch = aliases.get(arch, arch)
    if arch == "arm64" and variant == "v8":
        variant = ""
    if arch == "amd64" and variant == "v1":
        variant = ""
    return arch, variant


def host_platform() -> Platform:
    """The platform of this machine, as BuildKit's default build platform."""
    # what platform.machine() returns on POSIX, without importing platform (start-up time)
    machine = os.uname().machine.lower()
    arch, variant = _normalize_arch(machine)
    if machine.startswith("armv7"):
        arch, variant = "arm", "v7"
    elif machine.startswith("armv6"):
        arch, variant = "arm", "v6"
    return Platform("linux", arch, variant)


#: "named": a named build context (``--build-context NAME=...``), which wins over a stage
#: and an image of the same name
BaseKind = Literal["scratch", "stage", "image", "named"]


@dataclass(frozen=True)
class ResolvedStage:
    """A stage with its base expanded and its dependencies known."""

    index: int
    name: str | None
    base: str                      # expanded FROM image word
    base_kind: BaseKind
    base_stage: int | None         # index of the base stage when base_kind == "stage"
    platform: str | None           # expanded and normalized --platform (None: not given)
    depends_on: tuple[int, ...]    # stages this one needs (base stage, COPY --from, mounts)
    needed: bool                   # the target needs it
    location: Location
    stage: Stage
    images: tuple[str, ...] = ()   # images used by COPY --from / RUN --mount from=
    # a stage named like a named build context is that context (as BuildKit): its
    # instructions never run, its base is the context (base_kind "named")
    replaced: bool = False

    @property
    def display_name(self) -> str:
        """The name BuildKit shows: the stage name or ``stage-N``."""
        return self.name or f"stage-{self.index}"


@dataclass(frozen=True)
class StageGraph:
    """The resolved build: stages, target, global args and warnings."""

    dockerfile: Dockerfile
    stages: tuple[ResolvedStage, ...]
    target: int
    global_args: tuple[tuple[str, str], ...]  # meta args and platform args, in order
    build_args: tuple[tuple[str, str], ...]
    unused_build_args: tuple[str, ...]
    warnings: tuple[str, ...] = field(default=())
    named_contexts: frozenset[str] = frozenset()  # lower-cased --build-context names

    @property
    def target_stage(self) -> ResolvedStage:
        """The stage being built."""
        return self.stages[self.target]

    def needed_stages(self) -> list[ResolvedStage]:
        """The stages the target needs, in file order (which is a valid build order)."""
        return [s for s in self.stages if s.needed]

    def globals_dict(self) -> dict[str, str]:
        """The global args as a mapping."""
        return dict(self.global_args)


def parse_dockerfile(result: ParseResult) -> tuple[list[ArgInstruction], list[Stage]]:
    """Split parsed nodes into meta ARGs and stages; validates stage names (DockerfileError)."""
    meta: list[ArgInstruction] = []
    stages: list[Stage] = []
    current: FromInstruction | None = None
    current_written: str | None = None
    body: list[Instruction] = []
    seen: dict[str, Stage] = {}

    def close() -> None:
        if current is None:
            return
        written = current_written if current.stage_name else None
        name = current.stage_name.lower() if current.stage_name else None
        stage = Stage(
            index=len(stages),
            name=name,
            base=current.image,
            platform=current.platform,
            instructions=tuple(body),
            location=current.location,
            written_name=written,
            from_instruction=current,
        )
        if name is not None:
            if not _VALID_STAGE_NAME.match(name):
                raise DockerfileError(
                    f"invalid name for build stage: {go_quote(written or '')}, "
                    "name can't start with a number or contain symbols",
                    current.location,
                    source=result.source,
                )
            if name in seen:
                raise DockerfileError(
                    f"duplicate stage name {go_quote(name)}",
                    current.location,
                    hint=f"first defined at line {seen[name].location.start_line}",
                    source=result.source,
                )
            seen[name] = stage
        stages.append(stage)

    for node in result.nodes:
        inst = parse_instruction(
            node, result.filename, result.directives.escape, source=result.source
        )
        if isinstance(inst, FromInstruction):
            close()
            current = inst
            # The instruction lower-cases the AS name; the linter wants it as written.
            current_written = node.args[2] if len(node.args) == 3 else inst.stage_name
            body = []
        elif current is None:
            if isinstance(inst, ArgInstruction):
                meta.append(inst)
            else:
                raise DockerfileError(
                    "no build stage in current context",
                    inst.location,
                    hint="the first instruction must be FROM (only ARG may come before it)",
                    source=result.source,
                )
        else:
            body.append(inst)
    close()
    return meta, stages


def load_dockerfile(text: str, filename: str = "Dockerfile") -> Dockerfile:
    """Parse Dockerfile text into meta args and stages (raises DockerfileError)."""
    result = parse(text, filename)
    meta, stages = parse_dockerfile(result)
    if not stages:
        loc = meta[-1].location if meta else Location(filename, 1, 1)
        raise DockerfileError(
            "dockerfile contains no stages to build", loc, source=result.source
        )
    return Dockerfile(result, tuple(meta), tuple(stages))


def parse_build_args(
    items: Iterable[str], environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``--build-arg`` values: ``K=V``, or ``K`` alone taking K from the environment.

    ``K`` alone with K not in the environment is left out (the ARG keeps its default).
    """
    env = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid --build-arg {item!r}: expected KEY=VALUE or KEY")
        if sep:
            out[key] = value
        elif key in env:
            out[key] = env[key]
    return out


def default_args(
    build_platform: Platform, target_platform: Platform, target_name: str
) -> dict[str, str]:
    """The automatic global args (BuildKit's ``defaultArgs``), before build-arg overrides."""
    return {
        "BUILDPLATFORM": str(build_platform),
        "BUILDOS": build_platform.os,
        "BUILDOSVERSION": "",
        "BUILDARCH": build_platform.architecture,
        "BUILDVARIANT": build_platform.variant,
        "TARGETPLATFORM": str(target_platform),
        "TARGETOS": target_platform.os,
        "TARGETOSVERSION": "",
        "TARGETARCH": target_platform.architecture,
        "TARGETVARIANT": target_platform.variant,
        "TARGETSTAGE": target_name,
    }


def compute_global_args(
    dockerfile: Dockerfile,
    build_args: Mapping[str, str],
    target_name: str,
    platform: Platform | str | None = None,
) -> dict[str, str]:
    """Meta args (expanded in order) on top of the platform args; build args win."""
    host = host_platform()
    if platform is None:
        target_platform = host
    elif isinstance(platform, Platform):
        target_platform = platform
    else:
        target_platform = Platform.parse(platform)
    globals_ = default_args(host, target_platform, target_name)
    for key in globals_:
        if key in build_args:
            globals_[key] = build_args[key]
    lexer = Lexer(dockerfile.escape)
    for inst in dockerfile.meta_args:
        for key, default in inst.args:
            if key in build_args:
                globals_[key] = build_args[key]
            elif default is not None:
                try:
                    globals_[key] = lexer.process_word(default, globals_)
                except ExpansionError as err:
                    raise err.located(inst.location, dockerfile.parse.source) from None
    return globals_


def parse_mount_from(raw: str) -> tuple[str | None, str]:
    """``(from, type)`` of a raw ``RUN --mount`` value (CSV ``key=value`` fields)."""
    import csv

    try:
        fields = next(csv.reader([raw]), [])
    except csv.Error:
        fields = raw.split(",")
    mount_from: str | None = None
    mount_type = "bind"
    for item in fields:
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if key == "type" and sep:
            mount_type = value.strip().lower()
        elif key == "from" and sep:
            mount_from = value
    return mount_from, mount_type


class _Resolver:
    def __init__(self, dockerfile: Dockerfile, build_args: Mapping[str, str],
                 named: Collection[str] = ()) -> None:
        self.df = dockerfile
        self.source = dockerfile.parse.source
        self.lexer = Lexer(dockerfile.escape)
        self.build_args = build_args
        self.named = frozenset(n.lower() for n in named)
        self.all_names: dict[str, int] = {}
        for stage in dockerfile.stages:
            if stage.name:
                self.all_names[stage.name] = stage.index
        # what FROM, COPY --from and RUN --mount from= find by name: a named build context
        # wins over a stage of the same name
        self.by_name = {k: v for k, v in self.all_names.items() if k not in self.named}

    def fail(self, message: str, location: Location, hint: str | None = None) -> DockerfileError:
        return DockerfileError(message, location, hint=hint, source=self.source)

    def stage_ref(
        self, ref: str, current: Stage, location: Location, *, allow_index: bool
    ) -> int | None:
        """Index of the stage ``ref`` names (None: an image); later/self -> error."""
        index: int | None
        if allow_index and _GO_ATOI.match(ref):
            index = int(ref)
            if index < 0 or index >= len(self.df.stages):
                raise self.fail(
                    f"invalid stage index {index}",
                    location,
                    hint=f"this Dockerfile has stages 0 to {len(self.df.stages) - 1}",
                )
        else:
            index = self.by_name.get(ref.lower())
            if index is None:
                return None
        if index >= current.index:
            raise self.fail(
                f"cannot copy from stage {go_quote(ref)}, it needs to be defined before "
                f"current stage {go_quote(current.name or f'stage-{current.index}')}",
                location,
            )
        return index

    def copy_from(
        self, inst: CopyInstruction, current: Stage, deps: list[int], images: list[str]
    ) -> None:
        if not inst.from_:
            return
        if self.lexer.process_word_with_unmatched(inst.from_, {})[0] != inst.from_:
            raise self.fail(
                "variable expansion is not supported for --from, define a new stage with "
                "FROM using ARG from global scope as a workaround",
                inst.location,
            )
        index = (None if inst.from_.lower() in self.named else
                 self.stage_ref(inst.from_, current, inst.location, allow_index=True))
        if index is None:
            images.append(inst.from_)
        elif index not in deps:
            deps.append(index)

    def run_mounts(
        self,
        inst: RunInstruction,
        current: Stage,
        env: Mapping[str, str],
        deps: list[int],
        images: list[str],
    ) -> None:
        for raw in inst.mounts:
            mount_from, mount_type = parse_mount_from(raw)
            if not mount_from or mount_type == "tmpfs":
                continue
            try:
                ref = self.lexer.process_word(mount_from, env)
            except ExpansionError as err:
                raise err.located(inst.location, self.source) from None
            if not ref:
                continue
            index = self.stage_ref(ref, current, inst.location, allow_index=False)
            if index is None:
                images.append(ref)
            elif index not in deps:
                deps.append(index)


def stage_env_after(
    stage: Stage,
    initial: Mapping[str, str],
    globals_: Mapping[str, str],
    build_args: Mapping[str, str],
    lexer: Lexer,
) -> dict[str, str]:
    """The ARG/ENV environment a stage ends with (unknown image ENV not included)."""
    env = dict(initial)
    for inst in stage.instructions:
        apply_env_instruction(inst, env, globals_, build_args, lexer)
    return env


def apply_env_instruction(
    inst: Instruction,
    env: dict[str, str],
    globals_: Mapping[str, str],
    build_args: Mapping[str, str],
    lexer: Lexer,
) -> None:
    """Update ``env`` for an ARG or ENV instruction as BuildKit's dispatch does.

    Expansion errors are ignored here (the build reports them at the instruction).
    """
    if isinstance(inst, ArgInstruction):
        for key, default in inst.args:
            if key in build_args:
                env[key] = build_args[key]
            elif default is None:
                if key in globals_:
                    env[key] = globals_[key]
            else:
                try:
                    env[key] = lexer.process_word(default, env)
                except ExpansionError:
                    env.pop(key, None)
    elif isinstance(inst, EnvInstruction):
        before = dict(env)
        for key, value in inst.pairs:
            try:
                env[key] = lexer.process_word(value, before)
            except ExpansionError:
                env[key] = value


def resolve(
    dockerfile: Dockerfile,
    build_args: Mapping[str, str],
    target: str | None = None,
    platform: Platform | str | None = None,
    named_contexts: Collection[str] = (),
) -> StageGraph:
    """Expand bases, find every stage's dependencies and which stages ``target`` needs.

    ``target`` is a stage name (case-insensitive) or None for the last stage. Raises
    DockerfileError for bad references and UsageError for an unknown target.
    ``named_contexts``: the names of ``--build-context`` contexts; as BuildKit, such a name
    means the context wherever a stage or an image could be named (``FROM``, ``COPY
    --from``, ``RUN --mount from=``), and a stage of that name is replaced by it.
    """
    res = _Resolver(dockerfile, build_args, named_contexts)
    stages = dockerfile.stages
    if target is None:
        target_index = len(stages) - 1
    else:
        found = res.all_names.get(target.lower())
        if found is None:
            names = dockerfile.stage_names()
            listing = ", ".join(names) if names else "none (no stage has a name)"
            raise UsageError(
                f"target stage {go_quote(target)} could not be found (stages: {listing})"
            )
        target_index = found
    target_name = stages[target_index].name or ""
    globals_ = compute_global_args(dockerfile, build_args, target_name, platform)

    resolved: list[ResolvedStage] = []
    final_env: list[dict[str, str]] = []
    for stage in stages:
        try:
            base = res.lexer.process_word(stage.base, globals_)
        except ExpansionError as err:
            raise err.located(stage.location, res.source) from None
        if base == "":
            raise res.fail(
                f"base name ({stage.base}) should not be blank", stage.location
            )
        platform_value: str | None = None
        if stage.platform:
            try:
                platform_value = res.lexer.process_word(stage.platform, globals_)
            except ExpansionError as err:
                raise err.located(stage.location, res.source) from None
            if platform_value == "":
                raise res.fail(
                    f"empty platform value from expression {stage.platform}", stage.location
                )
            try:
                platform_value = str(Platform.parse(platform_value))
            except UsageError:
                raise res.fail(
                    f"failed to parse platform {stage.platform}: {platform_value!r} is not "
                    "os/arch[/variant]", stage.location,
                    hint="e.g. --platform=$BUILDPLATFORM or --platform=linux/arm64",
                ) from None

        deps: list[int] = []
        images: list[str] = []
        replaced = bool(stage.name) and stage.name in res.named
        if replaced:
            base = stage.name or ""
        # Stage names are case-insensitive (FROM Builder finds "AS builder").
        base_stage = res.by_name.get(base.lower())
        kind: BaseKind
        if replaced or base.lower() in res.named:
            base_stage = None
            kind = "named"
        elif base_stage is not None and base_stage < stage.index:
            kind = "stage"
            deps.append(base_stage)
        elif base_stage is not None and base_stage > stage.index:
            raise res.fail(
                f"stage {go_quote(stage.name or f'stage-{stage.index}')} is based on stage "
                f"{go_quote(base)}, which is defined later",
                stage.location,
                hint="a stage can only build on stages defined before it",
            )
        else:
            base_stage = None
            kind = "scratch" if base == EMPTY_IMAGE else "image"

        env: dict[str, str] = dict(final_env[base_stage]) if base_stage is not None else {}
        # ONBUILD triggers of a base stage run at the start of this one.
        if base_stage is not None:
            for inst in stages[base_stage].instructions:
                if isinstance(inst, OnbuildInstruction) and isinstance(
                    inst.inner, CopyInstruction
                ):
                    res.copy_from(inst.inner, stage, deps, images)
        for inst in () if replaced else stage.instructions:
            if isinstance(inst, CopyInstruction):
                res.copy_from(inst, stage, deps, images)
            elif isinstance(inst, RunInstruction):
                res.run_mounts(inst, stage, env, deps, images)
            apply_env_instruction(inst, env, globals_, build_args, res.lexer)
        final_env.append(env)
        resolved.append(
            ResolvedStage(
                index=stage.index,
                name=stage.name,
                base=base,
                base_kind=kind,
                base_stage=base_stage,
                platform=platform_value,
                depends_on=tuple(deps),
                needed=False,
                location=stage.location,
                stage=stage,
                images=tuple(images),
                replaced=replaced,
            )
        )

    needed: set[int] = set()
    todo = [target_index]
    while todo:
        index = todo.pop()
        if index in needed:
            continue
        needed.add(index)
        todo.extend(resolved[index].depends_on)
    resolved = [replace(s, needed=s.index in needed) for s in resolved]

    consumed: set[str] = set()
    for inst in dockerfile.meta_args:
        consumed.update(key for key, _ in inst.args)
    for index in needed:
        for inst in stages[index].instructions:
            if isinstance(inst, ArgInstruction):
                consumed.update(key for key, _ in inst.args)
    unused = sorted(
        key
        for key in build_args
        if key not in consumed
        and key not in _BUILTIN_ARGS
        and key not in _BUILTIN_NAMES
        and not key.startswith(_BUILTIN_PREFIXES)
    )
    warnings: list[str] = []
    if unused:
        warnings.append(
            f"[Warning] One or more build-args [{' '.join(unused)}] were not consumed"
        )
    return StageGraph(
        dockerfile=dockerfile,
        stages=tuple(resolved),
        target=target_index,
        global_args=tuple(globals_.items()),
        build_args=tuple(build_args.items()),
        unused_build_args=tuple(unused),
        warnings=tuple(warnings),
        named_contexts=res.named,
    )

