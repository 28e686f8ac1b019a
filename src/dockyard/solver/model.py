"""The solver's plain data: build-wide options, a stage's state while it is solved, a step's
result. Shared by the graph walker (``solver.py``), the ops (``ops/``) and the explainer."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StepResult:
    """What happened to one RUN, COPY, ADD (or WORKDIR) step."""

    stage: str
    instruction: str
    file: str
    line: int
    cached: bool
    key: str | None
    reason: str | None
    vertex: int
    display: str
    duration: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "instruction": self.instruction,
            "location": {"file": self.file, "line": self.line},
            "cached": self.cached,
            "key": self.key,
            "reason": self.reason,
        }


@dataclass
class StageState:
    """The result of solving a stage so far."""

    diff_ids: list[str] = field(default_factory=list)
    key: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    base_history: list[dict[str, Any]] = field(default_factory=list)
    base_config: dict[str, Any] = field(default_factory=dict)
    # RFC 3339 time of the newest result so far (a cached step keeps its original time, so a
    # fully cached rebuild gives the same image); None until something sets it
    created: str | None = None


@dataclass
class SolveOptions:
    """Build-wide options of one solve (the CLI flags that are not the plan)."""

    no_cache: bool = False
    no_cache_filter: frozenset[str] = frozenset()
    cache_ttl: float | None = None  # seconds
    cache_ttl_text: str = ""
    jobs: int = 0  # stages built at once; 0: every stage whose dependencies are done
    network: str = "host"  # build-wide default: "host" or "none"
    # how networked steps get a network other than by sharing the host's: "slirp4netns" or
    # "pasta" (a namespace of the build's own; dockyard.rootless.network), else None
    network_tool: str | None = None
    source_date_epoch: int | None = None
    allow_insecure: bool = False
    secrets: dict[str, bytes] = field(default_factory=dict)
    ssh: dict[str, str] = field(default_factory=dict)
    platform: str = "linux/amd64"
    # --build-context NAME=docker-image://REF: lower-cased NAME -> REF
    image_contexts: dict[str, str] = field(default_factory=dict)
    host_platform: str = field(default_factory=lambda: _host_platform())
    # --platform given: images named by COPY --from / RUN --mount from= are that platform's
    # (as BuildKit resolves them for the target); None: the store's image of the name
    image_platform: str | None = None
    # keys of the results this build made: a multi-platform build's later platforms reuse
    # them even under --no-cache (the same step is done once per build, as BuildKit's
    # solver merges identical vertices)
    made_here: set[str] = field(default_factory=set)
    extra_hosts: tuple[tuple[str, str], ...] = ()  # --add-host (name, address)
    ulimits: tuple[Any, ...] = ()  # executor.spec.Ulimit, for every RUN (--ulimit)
    shm_size: int | None = None  # bytes of /dev/shm in every RUN (--shm-size)
    # --pull: how images named by COPY --from= and RUN --mount=from= are found, as FROM's:
    # "missing" pulls one that is not in the store, "always" pulls it once per build,
    # "never" uses the store only
    pull: str = "missing"


def _host_platform() -> str:
    from dockyard.dockerfile.stages import host_platform

    return str(host_platform())


def rfc3339(ts: float) -> str:
    """Seconds since the epoch as the image config writes times (UTC, whole seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(ts)))
