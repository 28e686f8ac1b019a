"""WORKDIR's mkdir: create the working directory, owned by the current user, if it is missing.

Key: the path and the user (:func:`dockyard.solver.keys.mkdir_components`). Execution: the
missing directories are made 0755 whatever the caller's umask, owned by the user as the
stage's passwd resolves it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from dockyard.errors import DockyardError
from dockyard.plan.model import MkdirOp, StagePlan, Step
from dockyard.solver import keys
from dockyard.solver.model import StageState
from dockyard.solver.ops.base import CacheInputs, Execution, Finish, OpContext


class Mkdir:
    """The mkdir op."""

    def cache_inputs(
        self, ctx: OpContext, stage: StagePlan, step: Step, state: StageState
    ) -> CacheInputs:
        op = step.op
        assert isinstance(op, MkdirOp)
        return CacheInputs(kind="mkdir", components=keys.mkdir_components(
            op, stage.platform, source_date_epoch=ctx.options.source_date_epoch))

    def execute(self, ctx: OpContext, job: Execution) -> Finish | None:
        op = job.step.op
        assert isinstance(op, MkdirOp)
        mkdir(op, job.rootfs)
        return None


def mkdir(op: MkdirOp, rootfs: Path) -> None:
    from dockyard.context._paths import root_path
    from dockyard.executor.spec import resolve_user

    target = root_path(rootfs, op.path)
    if target.is_dir():
        return
    uid, gid = 0, 0
    if op.user:
        with contextlib.suppress(DockyardError):
            uid, gid, _ = resolve_user(rootfs, op.user)
    missing: list[Path] = []
    p = target
    while not p.exists() and p != rootfs:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(mode=0o755)
        os.chmod(d, 0o755)  # mkdir's mode passes through the caller's umask
        os.chown(d, uid, gid)
