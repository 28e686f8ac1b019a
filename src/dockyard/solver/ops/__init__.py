"""The ops: one module per kind of layer step, each saying what goes into its cache key and
how it executes (see :mod:`dockyard.solver.ops.base` for the seam)."""

from __future__ import annotations

from dockyard.plan.model import CopyOp, MkdirOp, Op, RunOp
from dockyard.solver.ops.base import CacheInputs, Execution, Finish, LayerOp, OpContext
from dockyard.solver.ops.copy import Copy
from dockyard.solver.ops.mkdir import Mkdir
from dockyard.solver.ops.run import Run

_RUN, _COPY, _MKDIR = Run(), Copy(), Mkdir()


def op_for(op: Op) -> LayerOp:
    """The op that keys and executes a step carrying ``op``."""
    if isinstance(op, RunOp):
        return _RUN
    if isinstance(op, CopyOp):
        return _COPY
    assert isinstance(op, MkdirOp)
    return _MKDIR


__all__ = ["CacheInputs", "Execution", "Finish", "LayerOp", "OpContext", "op_for"]
