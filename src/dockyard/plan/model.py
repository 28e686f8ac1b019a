"""The build plan: stages as sequences of steps, plain data (no I/O, no root).

A :class:`StagePlan` starts from a :class:`BaseSpec` and lists its :class:`Step` s in order.
Layer steps (RUN, COPY/ADD, WORKDIR's mkdir) carry an op with everything their cache key needs
except content digests, which the solver computes (they need to read files). Metadata steps
only change the image config; they carry the history entry and the config after the step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from dockyard.dockerfile.parser import Heredoc
from dockyard.errors import Location

BaseKind = Literal["scratch", "stage", "image"]


@dataclass(frozen=True)
class BaseSpec:
    """Where a stage starts: nothing, another stage, or an image in the store."""

    kind: BaseKind
    name: str  # "scratch", the stage index as text, or the image reference
    stage: int | None = None  # stage index when kind == "stage"
    image_id: str | None = None  # config digest when kind == "image"


@dataclass(frozen=True)
class RunOp:
    """A RUN step: run ``args`` in a container on top of the parent snapshot."""

    args: tuple[str, ...]
    env: tuple[str, ...]  # the process environment (config env + ARGs in scope)
    key_env: tuple[str, ...]  # what the cache key sees: config env + the ARGs the command uses
    user: str
    workdir: str
    network: str  # "default", "none" or "host"
    security: str  # "sandbox" or "insecure"
    mounts: tuple[str, ...]  # expanded --mount values
    script_files: tuple[tuple[str, str], ...] = ()  # (path in container, content) for #! heredocs
    command_text: str = ""  # the command as written, heredocs included (for display and key)
    # sha256 of the predefined proxy args given with --build-arg but not declared (which
    # reach the process): keyed by digest, as a proxy URL may hold credentials; "" if none
    proxy_digest: str = ""


@dataclass(frozen=True)
class CopyOp:
    """A COPY or ADD step."""

    is_add: bool
    sources: tuple[str, ...]  # expanded source words (paths, globs or URLs)
    heredocs: tuple[Heredoc, ...]  # heredoc sources (name -> content, already expanded)
    dest: str  # expanded destination as written (may be relative to workdir)
    workdir: str
    chown: str | None
    chmod: str | None
    link: bool
    parents: bool
    excludes: tuple[str, ...]
    source_kind: Literal["context", "stage", "image", "named-context"]
    source_name: str | None  # stage index (text), image reference or named context
    source_stage: int | None
    checksum: str | None = None
    keep_git_dir: bool = False
    user: str = ""


@dataclass(frozen=True)
class MkdirOp:
    """WORKDIR: create the directory (owned by the current user) if it is missing."""

    path: str
    user: str


Op = RunOp | CopyOp | MkdirOp


@dataclass(frozen=True)
class Step:
    """One instruction of a stage, in order."""

    vertex: int  # global step number, Dockerfile order across stages (1-based)
    stage_index: int
    stage_name: str  # display name: the stage name or "stage-N"
    position: int  # 1-based position within the stage (FROM is 1)
    count: int  # steps in the stage, FROM included
    instruction: str  # upper-case: RUN, COPY, ENV, ...
    display: str  # e.g. "RUN make" (the original text, one line)
    location: Location
    op: Op | None  # None for metadata-only steps
    created_by: str  # history entry
    config: dict[str, Any]  # the image "config" object after this step
    used_args: tuple[tuple[str, str], ...] = ()  # ARGs the step used (for explain)
    arg_values: tuple[tuple[str, str], ...] = field(default=())  # ARGs in scope


@dataclass(frozen=True)
class StagePlan:
    """A stage ready to solve: its base, its steps, the config it ends with."""

    index: int
    name: str | None
    display_name: str
    base: BaseSpec
    from_location: Location
    from_vertex: int
    steps: tuple[Step, ...]
    config: dict[str, Any]  # final "config" object (Env, Cmd, ...)
    platform: str  # os/arch[/variant]
    needed: bool
    depends_on: tuple[int, ...]


@dataclass(frozen=True)
class BuildPlan:
    """Every stage of the Dockerfile (needed or not) and the target."""

    stages: tuple[StagePlan, ...]
    target: int
    warnings: tuple[str, ...]
    source: str
    filename: str
    # lower-cased --build-context names: a name that is one never means a stage
    named_contexts: frozenset[str] = frozenset()

    def needed(self) -> list[StagePlan]:
        return [s for s in self.stages if s.needed]
