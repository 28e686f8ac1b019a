"""RUN: a command in a container on the parent snapshot.

Key: the argv, the environment the key sees, user, workdir, ``--network``, ``--security``,
each ``--mount`` (with the identity of what a bind mount shows) and heredoc scripts
(:func:`dockyard.solver.keys.run_components`). Execution: the mounts are set up, the
executor runs the process, its output goes to the step's log.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from dockyard.errors import BuildError, ContextError, DockyardError, RunError, SourceChangedError
from dockyard.plan.model import RunOp, StagePlan, Step
from dockyard.progress.events import VertexLog
from dockyard.solver import keys
from dockyard.solver.model import StageState
from dockyard.solver.ops.base import CacheInputs, Execution, Finish, OpContext, located


class Run:
    """The RUN op."""

    def cache_inputs(
        self, ctx: OpContext, stage: StagePlan, step: Step, state: StageState
    ) -> CacheInputs:
        op = step.op
        assert isinstance(op, RunOp)
        selections: dict[int, Any] = {}
        mounts = mount_key_parts(ctx, op, step, selections)
        inputs = CacheInputs(
            kind="run",
            components=keys.run_components(
                op, mounts, stage.platform, network=network_mode(op, ctx.options.network),
                source_date_epoch=ctx.options.source_date_epoch,
            ),
            explain={"used_args": dict(step.used_args)},
            prepared=selections,
        )
        # BuildKit keys these exec options too (ExtraHosts, Ulimit, ShmSize: the process
        # sees them); left out when unset, so keys without them stay as they were
        if ctx.options.extra_hosts:
            inputs.components["extra_hosts"] = [list(h) for h in ctx.options.extra_hosts]
        if ctx.options.ulimits:
            inputs.components["ulimits"] = [[u.name, u.soft, u.hard] for u in ctx.options.ulimits]
        if ctx.options.shm_size:
            inputs.components["shm_size"] = ctx.options.shm_size
        return inputs

    def execute(self, ctx: OpContext, job: Execution) -> Finish | None:
        from dockyard.executor.spec import MountSpec, RunSpec

        op, step, rootfs = job.step.op, job.step, job.rootfs
        assert isinstance(op, RunOp)
        if op.security == "insecure" and not ctx.options.allow_insecure:
            raise located(ctx, step, "RUN --security=insecure is not allowed",
                          hint="pass --allow security.insecure to permit it")
        if job.stage.platform != ctx.options.host_platform:
            # a foreign platform's binaries run under QEMU (binfmt_misc); say what is missing
            from dockyard.executor.emulation import check_runnable

            check_runnable(job.stage.platform)
        network = network_mode(op, ctx.options.network)
        tail: list[bytes] = []

        def on_output(chunk: bytes) -> None:
            ctx.emit(VertexLog(step.vertex, chunk, time.time()))
            tail.append(chunk)
            if len(tail) > 64:
                del tail[:-64]

        with run_mounts(ctx, op, step, rootfs, job.inputs.prepared) as (mounts, extra_env), \
                _scripts_dir(ctx, op) as scripts:
            # A #! heredoc is a read-only file mounted at /dev/pipes/<name>, as BuildKit
            # does: never written into the rootfs (whose /dev the container does not see)
            for index, (path, content) in enumerate(op.script_files):
                source = scripts / str(index)
                source.write_text(content)
                source.chmod(0o755)
                mounts.append(MountSpec(path, "bind", str(source),
                                        ("rbind", "ro", "nosuid", "nodev")))
            spec = RunSpec(
                args=op.args,
                env=(*op.env, *extra_env),
                cwd=op.workdir,
                user=op.user,
                network=network,
                mounts=tuple(mounts),
                security="insecure" if op.security == "insecure" else "sandbox",
                extra_hosts=ctx.options.extra_hosts,
                ulimits=ctx.options.ulimits,
            )
            if ctx.options.shm_size:
                spec = replace(spec, shm_size=ctx.options.shm_size)
            code = ctx.executor.run(rootfs, spec, on_output=on_output)
        if code != 0:
            lines = b"".join(tail).decode("utf-8", "replace").splitlines()[-10:]
            command = " ".join(op.args)
            raise RunError(
                f"process \"{command}\" did not complete successfully: exit code: {code}",
                step.location,
                command=command,
                exit_code=code,
                output_tail=lines,
                source=ctx.plan.source,
            )
        return None


# ---------------------------------------------------------------------- key
def network_mode(op: RunOp, build_network: str) -> Literal["host", "none"]:
    """The network the process gets: ``RUN --network``, else the build's ``--network``."""
    network = op.network if op.network != "default" else build_network
    return "none" if network == "none" else "host"


def mount_key_parts(
    ctx: OpContext, op: RunOp, step: Step, selections: dict[int, Any] | None = None
) -> list[dict[str, Any]]:
    """Each ``--mount`` as the key sees it (never a secret's value). ``selections`` receives,
    per index of a bind mount of a build context, the selection its key was made of."""
    if not op.mounts:
        return []  # and keep the executor's modules off a cached build's import path
    from dockyard.executor.mounts import parse_run_mount

    parts: list[dict[str, Any]] = []
    for i, raw in enumerate(op.mounts):
        try:
            m = parse_run_mount(raw, index=i)
        except DockyardError as err:
            raise located(ctx, step, str(err)) from None
        part: dict[str, Any] = {"type": m.type, "target": m.target}
        if m.type == "secret":
            part["id"] = m.id
        elif m.type == "cache":
            part.update(id=m.id, sharing=m.sharing)
        elif m.type == "bind":
            part["source"] = m.source
            part["from"] = bind_source_identity(ctx, m.from_, m.source or "/", step,
                                                selections, i)
            part["rw"] = not m.readonly
        elif m.type == "ssh":
            part["id"] = m.id
        parts.append(part)
    return parts


def bind_source_identity(
    ctx: OpContext, ref: str | None, source: str, step: Step,
    selections: dict[int, Any] | None = None, index: int = 0,
) -> str:
    """What a bind mount shows, as the key sees it: the content of the selected context files
    (the build context or a named one), the chain key of a stage, or an image's id (its
    config digest: re-tagging the name to another image changes the key). Never a name or a
    path of this machine. The selection of a build context goes to ``selections[index]``:
    the mount shows exactly that."""
    idx = ctx.stage_index(ref) if ref else None
    if idx is not None:
        return f"stage:{ctx.states[idx].key}"
    build_ctx = ctx.context if not ref else ctx.named_contexts.get(ref.lower())
    if build_ctx is not None:
        sel = ctx.sources.context(build_ctx, [source.lstrip("/") or "."], ())
        if selections is not None:
            selections[index] = sel
        return f"context:{sel.digest}"
    assert ref
    return f"image:{mount_image(ctx, ref, step).id}"


def mount_image(ctx: OpContext, ref: str, step: Step) -> Any:
    """The image record ``RUN --mount=from=REF`` names: an image context
    (``--build-context REF=docker-image://IMAGE``) or an image in the local store."""
    name = ctx.options.image_contexts.get(ref.lower(), ref)
    try:
        return ctx.image(name)
    except DockyardError as err:
        raise located(
            ctx, step,
            f"RUN --mount from={ref}: no stage or build context of that name, and no "
            f"image: {err}",
        ) from None


# ---------------------------------------------------------------------- execution
@contextlib.contextmanager
def run_mounts(
    ctx: OpContext, op: RunOp, step: Step, rootfs: Path,
    selections: Mapping[int, Any] | None = None,
) -> Iterator[tuple[list[Any], list[str]]]:
    """The mount specs and extra environment of ``op``'s ``--mount`` flags, set up for the
    duration of the run. A bind mount of a build context shows a private copy of exactly
    the selection its key was made of (``selections``, by mount index): no ignored file,
    and no write reaches the user's files."""
    from dockyard.context.copy import context_view
    from dockyard.executor import mounts as m

    specs: list[Any] = []
    env: list[str] = []
    ssh_index = 0  # BuildKit numbers default ssh targets among the ssh mounts only
    tmpdir = ctx.store.root / "tmp"
    with contextlib.ExitStack() as stack:
        for i, raw in enumerate(op.mounts):
            rm = m.with_workdir(m.parse_run_mount(raw, index=ssh_index), op.workdir)
            if rm.type == "ssh":
                ssh_index += 1
            if rm.type == "bind":
                idx = ctx.stage_index(rm.from_) if rm.from_ else None
                build_ctx = ctx.context if not rm.from_ else (
                    ctx.named_contexts.get(rm.from_.lower()) if idx is None else None)
                if build_ctx is not None:
                    # a private copy of exactly the selection the key was made of
                    try:
                        view = stack.enter_context(context_view(
                            build_ctx.root, rm.source or "/", build_ctx.ignore, tmpdir,
                            (selections or {}).get(i)))
                    except SourceChangedError:
                        raise
                    except ContextError as err:
                        raise located(ctx, step, err.message, err.hint) from None
                    specs.append(m.bind_mount_spec(replace(rm, source=""), view))
                    continue
                if idx is not None:
                    diff_ids = list(ctx.states[idx].diff_ids)
                else:
                    image = mount_image(ctx, rm.from_, step)
                    cfg = ctx.store.read_config(image).to_dict()
                    diff_ids = list(cfg.get("rootfs", {}).get("diff_ids") or [])
                # read-write: a throw-away snapshot, so writes are allowed and discarded
                # (as BuildKit); read-only: a view
                src_root = stack.enter_context(
                    ctx.view_of(diff_ids) if rm.readonly else ctx.layers.writable(diff_ids)
                )
                specs.append(m.bind_mount_spec(rm, src_root))
            elif rm.type == "tmpfs":
                specs.append(m.tmpfs_mount_spec(rm))
            elif rm.type == "cache":
                cache_dir = stack.enter_context(m.acquire_cache_dir(ctx.store.root, rm))
                specs.append(m.cache_mount_spec(rm, cache_dir))
            elif rm.type == "secret":
                value = ctx.options.secrets.get(rm.id or "")
                spec_or_none, env_items = stack.enter_context(
                    _secret(m, rm, value, ctx.executor.secrets_dir(), step, ctx.plan.source)
                )
                if spec_or_none is not None:
                    specs.append(spec_or_none)
                env.extend(env_items)
            elif rm.type == "ssh":
                sock = ctx.options.ssh.get(rm.id or "default")
                if sock is None and rm.required:
                    raise located(ctx, step, f"no SSH agent for id {rm.id or 'default'!r}",
                                  hint="pass --ssh default[=SOCKET]")
                spec_ssh, env_ssh = m.ssh_mount(rm, sock)
                if spec_ssh is not None:
                    specs.append(spec_ssh)
                # only the first ssh mount sets SSH_AUTH_SOCK, and never over an ENV
                taken = {e.partition("=")[0] for e in (*op.env, *env)}
                env.extend(e for e in env_ssh if e.partition("=")[0] not in taken)
        yield specs, env


@contextlib.contextmanager
def _secret(
    m: Any, rm: Any, value: bytes | None, base: Path, step: Step, source: str
) -> Iterator[tuple[Any, list[str]]]:
    if value is None:
        if rm.required:
            raise BuildError(f"secret {rm.id!r} was not provided", step.location,
                             hint=f"pass --secret id={rm.id},src=FILE", source=source)
        yield None, []
        return
    spec, env = m.secret_mount(rm, value, base)
    try:
        yield spec, list(env)
    finally:
        if spec is not None:
            with contextlib.suppress(OSError):
                os.unlink(spec.source)


@contextlib.contextmanager
def _scripts_dir(ctx: OpContext, op: RunOp) -> Iterator[Path]:
    """A private directory (in the store's tmp) for the step's ``#!`` heredoc scripts."""
    if not op.script_files:
        yield Path("/nonexistent")
        return
    import shutil
    import tempfile

    tmp = ctx.store.root / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="dockyard-scripts-", dir=tmp))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
