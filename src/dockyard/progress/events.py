"""Build progress events: the solver emits them, renderers (tty, plain, rawjson, quiet) show them.

A step is a *vertex* numbered like BuildKit's plain output (``#1``, ``#2`` ...). Its life::

    VertexStarted -> (VertexLog)* -> VertexCached | VertexDone | VertexError

Build-level events: ``Warning`` (any time) and ``BuildFinished`` (last). Other operations
(``dockyard.pull``, ``dockyard.push``) report ``ProgressMessage`` lines.
Every event is a frozen dataclass with a ``kind`` and a ``to_dict()`` for rawjson.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class VertexStarted:
    """A step (or an internal action like loading the context) begins."""

    vertex: int
    name: str  # e.g. "[builder 2/4] RUN make" or "[internal] load build context"
    time: float
    stage: str | None = None
    instruction: str | None = None  # "RUN", "COPY", ...
    line: int | None = None
    kind: str = field(default="vertex_started", init=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class VertexLog:
    """Output of a running step (RUN's stdout and stderr, merged)."""

    vertex: int
    data: bytes
    time: float
    kind: str = field(default="vertex_log", init=False)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "vertex": self.vertex, "time": self.time,
                "data": self.data.decode("utf-8", "replace")}


@dataclass(frozen=True, slots=True)
class VertexCached:
    """The step's result came from the cache."""

    vertex: int
    time: float
    key: str | None = None
    kind: str = field(default="vertex_cached", init=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class VertexDone:
    """The step ran and finished; ``reason`` says why the cache missed (None if not a cache step)."""

    vertex: int
    time: float
    duration: float
    key: str | None = None
    reason: str | None = None
    kind: str = field(default="vertex_done", init=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class VertexError:
    """The step failed; ``error`` is the one-line message."""

    vertex: int
    time: float
    error: str
    kind: str = field(default="vertex_error", init=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class CacheMissExplained:
    """Why a step could not reuse the cache (sent before the step runs)."""

    vertex: int
    time: float
    reason: str
    kind: str = field(default="cache_miss", init=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class BuildWarning:
    """A warning for the user (unused build arg, empty continuation line, ...)."""

    message: str
    time: float
    location: str | None = None  # "Dockerfile:3"
    kind: str = field(default="warning", init=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class BuildFinished:
    """The build ended; ``image_id`` is the config digest, or None on failure."""

    time: float
    image_id: str | None
    duration: float
    error: str | None = None
    kind: str = field(default="build_finished", init=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ProgressMessage:
    """A line of progress from an operation other than a build (``pull``, ``push``): not
    part of a build's event stream, see :data:`Event`."""

    operation: str  # "pull", "push"
    message: str  # e.g. "Pulling sha256:1a2b3c4d5e6f: 2.1MB"
    time: float
    kind: str = field(default="progress", init=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Event = (
    VertexStarted
    | VertexLog
    | VertexCached
    | VertexDone
    | VertexError
    | CacheMissExplained
    | BuildWarning
    | BuildFinished
)

EventCallback = Callable[[Event], None]


class Renderer(Protocol):
    """Shows events to a user. ``close()`` is called once, after ``BuildFinished``."""

    def handle(self, event: Event) -> None: ...

    def close(self) -> None: ...
