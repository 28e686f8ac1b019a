"""The seam between the graph walker and the ops (BuildKit's ``solver.Op``: ``CacheMap`` and
``Exec``).

An op is stateless; for one step it answers two questions:

* :meth:`LayerOp.cache_inputs`: what goes into the step's cache key (its ``kind`` and the
  ``op`` part of the key document, see docs/cache.md), plus what the explainer keeps to say
  why a later build missed and anything it computed that running it will need again;
* :meth:`LayerOp.execute`: make the step's change in ``rootfs``, the mounted snapshot of the
  step's parent; it may return work to finish once the snapshot is unmounted.

Everything else (looking keys up, snapshots, layers, records, explanations, events) is the
walker's. What an op may use of the solve is :class:`OpContext`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dockyard.errors import BuildError
from dockyard.plan.model import BuildPlan, StagePlan, Step
from dockyard.progress.events import Event
from dockyard.solver.model import SolveOptions, StageState
from dockyard.solver.snapshots import LayerSnapshots
from dockyard.store.db import Store

if TYPE_CHECKING:
    from dockyard.context.context import BuildContext
    from dockyard.solver.sources import SourceDigests

#: work an op leaves for after its snapshot is unmounted
Finish = Callable[[], object]


@dataclass(frozen=True)
class CacheInputs:
    """What one step's key is made of, besides its parent."""

    kind: str  # "run", "copy" or "mkdir": the key document's "kind"
    components: dict[str, Any]  # the key document's "op"
    link: bool = False  # the key leaves the parent out (COPY --link)
    explain: Mapping[str, Any] = field(default_factory=dict)  # kept for explanations only
    prepared: Any = None  # computed while keying, handed back to execute()


@dataclass(frozen=True)
class Execution:
    """One missed step to run."""

    stage: StagePlan
    step: Step
    state: StageState  # the stage before the step
    rootfs: Path  # the mounted, writable snapshot of the step's parent
    snapshot: str  # that active snapshot's name
    inputs: CacheInputs


class OpContext(Protocol):
    """What an op may use of the solve it is part of."""

    plan: BuildPlan
    store: Store
    context: BuildContext
    named_contexts: dict[str, BuildContext]
    options: SolveOptions
    layers: LayerSnapshots
    sources: SourceDigests
    states: dict[int, StageState]
    emit: Callable[[Event], None]

    @property
    def executor(self) -> Any: ...

    def stage_index(self, ref: str) -> int | None:
        """The index of the stage ``ref`` names (by name or number), or None."""
        ...

    def view_of(self, diff_ids: list[str]) -> contextlib.AbstractContextManager[Path]:
        """A read-only mounted view of the filesystem made of ``diff_ids``."""
        ...

    def image(self, name: str) -> Any:
        """The image ``name`` (``COPY --from=IMAGE``, ``RUN --mount=from=IMAGE``), pulled as
        FROM's are, following ``--pull`` (once per build); raises DockyardError."""
        ...


class LayerOp(Protocol):
    """A kind of layer step: RUN, COPY/ADD or WORKDIR's mkdir."""

    def cache_inputs(
        self, ctx: OpContext, stage: StagePlan, step: Step, state: StageState
    ) -> CacheInputs:
        """What goes into ``step``'s cache key (reads sources; runs nothing)."""
        ...

    def execute(self, ctx: OpContext, job: Execution) -> Finish | None:
        """Make the step's change in ``job.rootfs``; optionally return what to do once the
        snapshot is unmounted."""
        ...


def located(ctx: OpContext, step: Step, message: str, hint: str | None = None) -> BuildError:
    """A build error pointing at ``step``'s Dockerfile line."""
    return BuildError(message, step.location, hint, source=ctx.plan.source)
