"""``dockyard.build``'s side of the shared build cache: ``cache_from`` / ``cache_to``.

The format and the transfers are the registry room's (:mod:`dockyard.registry.buildcache`);
this module parses the specs, imports the caches before the solve (a source that cannot be
read is a warning and the build goes on without it, as in BuildKit), picks the records to
export (``mode=min``: the target stage and the stages it is built on; ``mode=max``: every
stage) and shows import and export as progress steps of their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dockyard.errors import DockyardError, RegistryError
from dockyard.progress.events import (
    BuildWarning,
    Event,
    VertexDone,
    VertexError,
    VertexLog,
    VertexStarted,
)

__all__ = ["CachePlan", "export_caches", "import_caches", "inline_cache", "parse_specs"]

Emit = Callable[[Event], None]


@dataclass(frozen=True)
class CachePlan:
    """The parsed ``cache_from`` and ``cache_to`` of a build."""

    sources: tuple[Any, ...] = ()  # CacheSpec
    targets: tuple[Any, ...] = ()  # CacheSpec

    @property
    def inline(self) -> Any:
        """The ``type=inline`` target, if any."""
        return next((t for t in self.targets if t.type == "inline"), None)


def parse_specs(cache_from: Sequence[str], cache_to: Sequence[str]) -> CachePlan:
    """Parse the specs (UsageError for a bad one, before anything is built)."""
    if not cache_from and not cache_to:
        return CachePlan()
    from dockyard.registry.buildcache import parse_cache_spec

    return CachePlan(tuple(parse_cache_spec(s, export=False) for s in cache_from),
                     tuple(parse_cache_spec(s, export=True) for s in cache_to))


def next_vertex(plan: Any) -> int:
    """A vertex number after every step of ``plan`` (progress lines are numbered by it)."""
    top = 0
    for stage in plan.stages:
        top = max(top, stage.from_vertex, *(s.vertex for s in stage.steps))
    return top + 1


def import_caches(store: Any, specs: Sequence[Any], *, platform: str, emit: Emit,
                  vertex: int) -> list[Any]:
    """Read every cache source (manifest and config only); the unreadable ones are warnings."""
    from dockyard.registry.buildcache import load_cache

    loaded = []
    for offset, spec in enumerate(specs):
        t0 = time.time()
        v = vertex + offset
        emit(VertexStarted(v, f"importing cache manifest from {spec.describe()}", t0))
        try:
            source = load_cache(store, spec, platform=platform)
        except (DockyardError, OSError) as err:
            message = f"cache source {spec.describe()} cannot be used, building without it: {err}"
            emit(VertexLog(v, (message + "\n").encode(), time.time()))
            emit(VertexDone(v, time.time(), time.time() - t0))
            emit(BuildWarning(message, time.time()))
            continue
        emit(VertexLog(v, f"{len(source.records)} records, {len(source.layers)} layers\n"
                       .encode(), time.time()))
        emit(VertexDone(v, time.time(), time.time() - t0))
        loaded.append(source)
    return loaded


def _min_stages(plan: Any) -> list[int]:
    """The target stage and the stages it is built on (``FROM <stage>``)."""
    out = []
    index: int | None = plan.target
    while index is not None and index not in out:
        out.append(index)
        base = plan.stages[index].base
        index = base.stage if base.kind == "stage" else None
    return out


def _records(solved: Sequence[tuple[Any, Any]], mode: str) -> list[Any]:
    """The records to export from each platform's (solver, plan)."""
    from dockyard.registry.buildcache import select_records

    out: dict[str, Any] = {}
    for solver, plan in solved:
        for record in select_records(solver.used_records,
                                     None if mode == "max" else _min_stages(plan)):
            out.setdefault(record.key, record)
    return [out[k] for k in sorted(out)]


def inline_cache(store: Any, cache: CachePlan, solver: Any, plan: Any,
                 diff_ids: Sequence[str]) -> dict[str, Any] | None:
    """The inline cache for the image config (``cache_to type=inline``), or None."""
    if cache.inline is None:
        return None
    from dockyard.registry.buildcache import INLINE_KEY, inline_document

    return {INLINE_KEY: inline_document(store, _records([(solver, plan)], "min"), diff_ids)}


def export_caches(store: Any, cache: CachePlan, solved: Sequence[tuple[Any, Any]], *,
                  emit: Emit, vertex: int) -> list[Any]:
    """Export to every registry or local target the records of each platform's (solver,
    plan), each target a progress step; a failure raises unless the target says
    ``ignore-error=true`` (then it is a warning)."""
    from dockyard.registry.buildcache import export_cache

    reports = []
    for offset, spec in enumerate(t for t in cache.targets if t.type != "inline"):
        v = vertex + offset
        t0 = time.time()
        emit(VertexStarted(v, f"exporting cache to {spec.describe()} (mode={spec.mode})", t0))

        def say(message: str, v: int = v) -> None:
            emit(VertexLog(v, (message + "\n").encode(), time.time()))

        try:
            report = export_cache(store, spec, _records(solved, spec.mode), progress=say)
        except (DockyardError, OSError) as err:
            message = f"exporting cache to {spec.describe()} failed: {err}"
            if not isinstance(err, DockyardError):
                err = RegistryError(message)
            if spec.ignore_error:
                say(message)
                emit(VertexDone(v, time.time(), time.time() - t0))
                emit(BuildWarning(message, time.time()))
                continue
            emit(VertexError(v, time.time(), message))
            raise err from None
        emit(VertexDone(v, time.time(), time.time() - t0))
        reports.append(report)
    return reports
