"""COPY and ADD: files from the build context, a named context, another stage or an image.

Key: the content digest of every entry the sources select (never times), the flags as
written, ``--chown`` resolved to numeric ids (:func:`dockyard.solver.keys.copy_components`).
Execution: :func:`dockyard.context.copy.copy_into` into the snapshot. Every file is copied:
the result shares no inode with an earlier snapshot (a hard link to the previous result's
unchanged files was tried once; a RUN step then saw link counts a fresh build does not give).
On overlay, a build context's files below a destination directory the step creates are
written into the snapshot's upper dir after the unmount, not through the mount (the same
upper dir, without overlay's cost per file: docs/performance.md, section 19).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockyard.errors import ContextError, DockyardError, SourceChangedError
from dockyard.plan.model import CopyOp, StagePlan, Step
from dockyard.solver import keys
from dockyard.solver.model import StageState
from dockyard.solver.ops.base import CacheInputs, Execution, Finish, OpContext, located


class Copy:
    """The COPY/ADD op."""

    def cache_inputs(
        self, ctx: OpContext, stage: StagePlan, step: Step, state: StageState
    ) -> CacheInputs:
        op = step.op
        assert isinstance(op, CopyOp)
        sel = context_selection(ctx, op)
        remotes: dict[str, Any] = {**revalidate_urls(ctx, op, step), **resolve_git(ctx, op, step)}
        digest, files, source_id = sources_digest(ctx, op, step, sel, remotes)
        chown = resolve_chown(ctx, op, state, step) if op.chown else None
        return CacheInputs(
            kind="copy",
            components=keys.copy_components(
                op, digest, source_id, chown, stage.platform,
                source_date_epoch=ctx.options.source_date_epoch,
            ),
            link=op.link,
            explain={"files": files},
            prepared=Prepared(chown, sel, remotes),
        )

    def execute(self, ctx: OpContext, job: Execution) -> Finish | None:
        op = job.step.op
        assert isinstance(op, CopyOp)
        prepared = job.inputs.prepared
        assert isinstance(prepared, Prepared)
        from dockyard.snapshot.base import HasUpperDirs

        snap = ctx.layers.snapshotter
        upper = snap.upper_dir(job.snapshot) if isinstance(snap, HasUpperDirs) else None
        return copy(ctx, op, job.step, job.rootfs, prepared.chown, prepared.selection,
                    prepared.remotes, upper_dir=upper)


@dataclass(frozen=True)
class Prepared:
    """What keying a COPY found that running it needs: ``--chown`` as ids, the selection
    of a build context the key was made of (the copy must copy exactly that), and for ADD
    what each http(s) URL gave (its bytes are in the blob store) and the commit each git URL
    names (the one to check out)."""

    chown: tuple[int, int] | None
    selection: Any  # a SelectionDigest, or None for other sources
    # URL -> RemoteState (http), or GitCommit (git)
    remotes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GitCommit:
    """The commit an ADD'ed git URL's ref named when the step was keyed."""

    commit: str


# ---------------------------------------------------------------------- key
def context_selection(ctx: OpContext, op: CopyOp) -> Any:
    """The selection ``op``'s local sources make in a build context (the main one or a
    named one), or None when they come from elsewhere (a stage, an image) or there are none
    (URLs, heredocs only)."""
    local = _local_sources(op)
    if not local:
        return None
    build_ctx = _source_context(ctx, op)
    if build_ctx is None:
        return None
    return ctx.sources.context(build_ctx, local, op.excludes, parents=op.parents)


def _local_sources(op: CopyOp) -> list[str]:
    return [s for s in op.sources if not (op.is_add and is_url(s))]


def _revalidated(op: CopyOp) -> list[str]:
    """The http(s) URLs of an ADD that are asked for on every build (not git ones, nor any
    with ``--checksum``: its digest is the key, as in BuildKit)."""
    from dockyard.context.fetch import is_git_url
    from dockyard.context.fetch import is_url as is_http

    if not op.is_add or op.checksum:
        return []
    return [s for s in op.sources if is_http(s) and not is_git_url(s)]


def revalidate_urls(ctx: OpContext, op: CopyOp, step: Step) -> dict[str, Any]:
    """What each of ``op``'s http(s) URLs gives now, as BuildKit's http source finds out on
    every build: a conditional request with what the server said last time (ETag,
    Last-Modified), a download only when it answers with new content. The bytes go to the
    blob store, so the step copies exactly what its key names; the server's answer is kept
    as a cache record of kind ``http``."""
    from dockyard.context.fetch import RemoteState, revalidate_url
    from dockyard.store.db import CacheRecord

    states: dict[str, Any] = {}
    for url in _revalidated(op):
        record_key = keys.digest_of({"v": keys.KEY_VERSION, "kind": "http", "url": url})
        record = ctx.store.get_cache_record(record_key)
        known = None
        if record is not None:
            try:
                known = RemoteState.from_json(dict(record.result["remote"]))
            except (KeyError, TypeError, ValueError):
                known = None
        if known is not None and not ctx.store.blobs.has(known.digest):
            known = None  # its bytes were pruned: ask unconditionally
        tmp = ctx.store.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=tmp, prefix="dockyard-url-") as scratch:
            try:
                state, path = revalidate_url(url, Path(scratch), known=known)
            except ContextError as err:
                raise located(ctx, step, err.message, err.hint) from None
            if path is not None:
                with open(path, "rb") as f:
                    ctx.store.blobs.put_stream(f, state.digest, state.size)
        if path is not None or record is None:
            now = time.time()
            ctx.store.put_cache_record(CacheRecord(
                key=record_key, diff_id=None, chain_id=None,
                result={"instruction": "http", "remote": state.to_json()},
                description=f"what {url[:150]} gave", created=now, last_used=now,
            ))
        states[url] = state
    return states


def resolve_git(ctx: OpContext, op: CopyOp, step: Step) -> dict[str, GitCommit]:
    """The commit each git URL of an ADD names now, asked of the server on every build (``git
    ls-remote``), as BuildKit's git source keys on it: a branch or tag that moved misses,
    and the step checks out exactly the commit its key names."""
    from dockyard.context.fetch import is_git_url, resolve_git_ref

    if not op.is_add:
        return {}
    found: dict[str, GitCommit] = {}
    for url in op.sources:
        if is_url(url) and is_git_url(url):
            try:
                found[url] = GitCommit(resolve_git_ref(url))
            except ContextError as err:
                raise located(ctx, step, err.message, err.hint) from None
    return found


def _source_context(ctx: OpContext, op: CopyOp) -> Any:
    """The build context ``op`` copies from, or None for a stage or an image."""
    name = (op.source_name or "").lower()
    named = ctx.named_contexts.get(name) if name else None
    if op.source_kind == "context":
        return named or ctx.context
    if op.source_kind in ("image", "named-context"):
        return named
    return None


def sources_digest(
    ctx: OpContext, op: CopyOp, step: Step, sel: Any = None,
    remotes: Mapping[str, Any] | None = None,
) -> tuple[str, Mapping[str, Any], str | None]:
    """(content digest, selection manifest path -> FileMeta, source identity) of ``op``;
    ``sel`` is its :func:`context_selection` when that was made already, ``remotes`` what
    its http(s) URLs gave (:func:`revalidate_urls`)."""
    if op.is_add and any(is_url(s) for s in op.sources):
        # An http(s) URL is keyed by what it gave (file name, digest, Last-Modified, which
        # becomes the file's mtime), as BuildKit's http source; a git URL by the commit its
        # ref names now (with the URL, which holds the subdirectory, and --keep-git-dir, a
        # flag of the key), as BuildKit's git source; one pinned by --checksum (in the key
        # too) by the URL itself. Local sources beside them by their content, as any COPY's.
        from dockyard.context.hashing import FileMeta

        remotes = remotes or {}
        parts: list[list[Any]] = []
        files: dict[str, Any] = {}
        for source in op.sources:
            if not is_url(source):
                continue
            state = remotes.get(source)
            if state is None:
                parts.append([source])
                continue
            if isinstance(state, GitCommit):
                parts.append([source, "git", state.commit])
                files[source] = FileMeta("dir", 0o755, 0, 0, 0, f"git:{state.commit}")
                continue
            parts.append([source, state.name, state.digest, state.mtime])
            files[source] = FileMeta("file", 0o600, 0, 0, state.size, state.digest)
        if sel is None and _local_sources(op) and _source_context(ctx, op) is not None:
            sel = context_selection(ctx, op)
        if sel is not None:
            files.update({**sel.parents, **dict(sel.files)})
        content = keys.digest_of({"remote": parts, "local": sel.digest if sel else None})
        return content, files, None
    if not op.sources:
        return keys.digest_of([]), {}, None
    build_ctx = _source_context(ctx, op)
    if build_ctx is not None:
        source_id = (None if build_ctx is ctx.context
                     else f"context:{(op.source_name or '').lower()}")
        if sel is None:
            sel = ctx.sources.context(build_ctx, list(op.sources), op.excludes,
                                      parents=op.parents)
    else:
        diff_ids, _ = source_layers(ctx, op, step)
        sel = ctx.sources.layers(diff_ids, list(op.sources), op.excludes, parents=op.parents)
        source_id = None  # content-addressed: a rebuilt stage with equal files still hits
    # FileMeta objects; turned into JSON only when the history is written. The parents
    # --parents recreates are explained as files (a selected entry of the same path wins).
    if sel.parents:
        return str(sel.digest), {**sel.parents, **dict(sel.files)}, source_id
    return str(sel.digest), sel.files, source_id


def source_layers(ctx: OpContext, op: CopyOp, step: Step) -> tuple[list[str], str]:
    """The layers ``COPY --from`` reads (another stage's or an image's), and their identity."""
    if op.source_kind == "stage":
        assert op.source_stage is not None
        if op.source_stage not in ctx.states:
            raise located(ctx, step, f"stage {op.source_name} was not built")
        st = ctx.states[op.source_stage]
        return list(st.diff_ids), f"stage:{st.key}"
    assert op.source_name is not None
    name = ctx.options.image_contexts.get(op.source_name.lower(), op.source_name)
    try:
        image = ctx.image(name)
    except DockyardError as err:
        raise located(
            ctx, step,
            f"COPY --from={op.source_name}: no stage of that name, and no image: {err}",
        ) from None
    config = ctx.store.read_config(image).to_dict()
    return list(config.get("rootfs", {}).get("diff_ids") or []), f"image:{image.id}"


def resolve_chown(ctx: OpContext, op: CopyOp, state: StageState, step: Step) -> tuple[int, int]:
    """``--chown`` as numeric ids, names looked up in the stage's own passwd and group."""
    from dockyard.context.copy import resolve_chown as lookup

    assert op.chown is not None
    spec = op.chown
    user, _, group = spec.partition(":")
    if user.isdigit() and (not group or group.isdigit()):
        # numeric ids need no lookup; a uid alone is also the gid (Docker's rule)
        return int(user), int(group) if group else int(user)
    try:
        with ctx.view_of(state.diff_ids) as root:
            return lookup(spec, root)
    except ContextError as err:
        raise located(ctx, step, err.message) from None


# ---------------------------------------------------------------------- execution
def copy(
    ctx: OpContext, op: CopyOp, step: Step, rootfs: Path, chown: Any,
    selection: Any = None, remotes: Mapping[str, Any] | None = None,
    upper_dir: Path | None = None,
) -> Finish | None:
    """Copy ``op``'s sources (and heredocs, and URLs for ADD) into ``rootfs``; from a build
    context, exactly the ``selection`` the step's key was made of (or the step fails with
    SourceChangedError). With ``upper_dir`` (``rootfs``'s overlay upper dir), the files of
    a build context's sources may be left for after the unmount, written there directly
    (:func:`dockyard.context.copy.copy_into`): the work returned, if any."""
    from dockyard.context.copy import (
        add_fetched,
        add_remote,
        copy_into,
        parse_chmod,
        write_heredocs,
    )

    chmod = parse_chmod(op.chmod) if op.chmod else None
    utime = ctx.options.source_date_epoch
    if chown is not None:
        from dockyard.errors import ExecutorError
        from dockyard.rootless.idmap import check_ids

        try:
            check_ids(f"{'ADD' if op.is_add else 'COPY'} --chown={op.chown}", *chown)
        except ExecutorError as err:
            raise located(ctx, step, err.message, err.hint) from None
    command = "ADD" if op.is_add else "COPY"
    tmpdir = ctx.store.root / "tmp"
    try:
        if op.heredocs:
            write_heredocs(
                [(h.name, h.content) for h in op.heredocs], op.dest, rootfs,
                workdir=op.workdir, chown=chown, chmod=chmod, utime=utime, tmpdir=tmpdir,
            )
        remote = [s for s in op.sources if op.is_add and is_url(s)]
        local = [s for s in op.sources if s not in remote]
        for url in remote:
            state = (remotes or {}).get(url)
            if isinstance(state, GitCommit):  # the commit the key names
                add_remote(url, op.dest, rootfs, workdir=op.workdir, chown=chown, chmod=chmod,
                           checksum=op.checksum, keep_git_dir=op.keep_git_dir, tmpdir=tmpdir,
                           commit=state.commit)
                continue
            if state is not None:  # fetched when the step was keyed: copy those very bytes
                add_fetched(ctx.store.blobs.path(state.digest), state.name, state.mtime,
                            op.dest, rootfs, workdir=op.workdir, chown=chown, chmod=chmod,
                            tmpdir=tmpdir)
                continue
            add_remote(url, op.dest, rootfs, workdir=op.workdir, chown=chown, chmod=chmod,
                       checksum=op.checksum, keep_git_dir=op.keep_git_dir, tmpdir=tmpdir)
        if not local:
            return None
        build_ctx = _source_context(ctx, op)
        if build_ctx is not None:
            rest = copy_into(build_ctx.root, local, op.dest, rootfs, workdir=op.workdir,
                             chown=chown, chmod=chmod, parents=op.parents,
                             excludes=op.excludes, is_add=op.is_add, ignore=build_ctx.ignore,
                             preserve_owner=False, utime=utime, command=command,
                             expect=selection, tmpdir=tmpdir, upper_dir=upper_dir)
            return None if rest is None else _located_errors(ctx, step, rest)
        diff_ids, _ = source_layers(ctx, op, step)
        with ctx.view_of(diff_ids) as src_root:
            copy_into(src_root, local, op.dest, rootfs, workdir=op.workdir,
                      chown=chown, chmod=chmod, parents=op.parents,
                      excludes=op.excludes, is_add=op.is_add, ignore=None,
                      preserve_owner=True, utime=utime, command=command)
    except SourceChangedError:
        raise  # the walker keys the step again
    except ContextError as err:
        raise located(ctx, step, err.message, err.hint) from None
    return None


def _located_errors(ctx: OpContext, step: Step, rest: Callable[[], None]) -> Finish:
    """``rest`` with its errors reported as :func:`copy` reports its own."""

    def finish() -> None:
        try:
            rest()
        except SourceChangedError:
            raise
        except ContextError as err:
            raise located(ctx, step, err.message, err.hint) from None

    return finish


def is_url(src: str) -> bool:
    """Whether an ADD source is fetched rather than read from a context."""
    return src.startswith(("http://", "https://", "git@", "git://")) or (
        src.startswith("ssh://")
    )
