"""Walks a :class:`~dockyard.plan.model.BuildPlan`: cache lookups, running misses, parallel stages.

Per stage, a :class:`StageState` holds the layers so far (diff ids), the cache key of the last
layer step, and the history. A layer step:

1. computes its cache key (``solver/keys.py``; COPY/ADD first digests its sources),
2. looks the key up (unless ``--no-cache``/``--no-cache-filter``/``--cache-ttl`` say not to),
3. on a miss, prepares a snapshot on the parent chain, runs the op in it, writes the diff as
   an uncompressed layer blob (its digest *is* the diff id), commits the snapshot under the
   new chain id and records the cache entry,
4. explains the miss by comparing with the previous build of this Dockerfile and target.

Snapshots are created lazily: a fully cached build mounts nothing.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockyard.context.context import BuildContext
from dockyard.errors import (
    BuildError,
    ContextError,
    DockyardError,
    Location,
    RunError,
    UsageError,
)
from dockyard.image.oci import chain_ids
from dockyard.plan.model import BuildPlan, CopyOp, MkdirOp, RunOp, StagePlan, Step
from dockyard.progress.events import (
    BuildWarning,
    CacheMissExplained,
    Event,
    VertexCached,
    VertexDone,
    VertexError,
    VertexLog,
    VertexStarted,
)
from dockyard.solver import keys
from dockyard.solver.snapshots import LayerSnapshots
from dockyard.store.db import CacheRecord, Store


def _unique() -> str:
    """A random hex name for a temporary snapshot or directory."""
    # os.urandom rather than uuid: uuid imports platform, which costs start-up time
    return os.urandom(16).hex()


EMPTY_TAR_SIZE = 1024  # a tar stream with no entries: two zero blocks


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
    jobs: int = 2
    network: str = "host"  # build-wide default: "host" or "none"
    source_date_epoch: int | None = None
    allow_insecure: bool = False
    secrets: dict[str, bytes] = field(default_factory=dict)
    ssh: dict[str, str] = field(default_factory=dict)
    platform: str = "linux/amd64"


class Solver:
    """Solves one build plan against one store."""

    def __init__(
        self,
        plan: BuildPlan,
        store: Store,
        context: BuildContext,
        named_contexts: dict[str, BuildContext],
        options: SolveOptions,
        emit: Callable[[Event], None],
        *,
        snapshotter_kind: str = "auto",
        runtime: str | None = None,
        history: dict[str, Any] | None = None,
    ) -> None:
        self.plan = plan
        self.store = store
        self.context = context
        self.named_contexts = named_contexts
        self.options = options
        self.emit = emit
        self.snapshotter_kind = snapshotter_kind
        self.runtime_name = runtime
        self.previous = history or {}
        self.results: dict[int, StepResult] = {}
        self.records: dict[str, dict[str, Any]] = {}  # vertex id -> explain info for history
        self.states: dict[int, StageState] = {}
        self.layers = LayerSnapshots(store, snapshotter_kind)
        self._executor: Any = None
        self._cancelled = False
        self._stat_cache: Any = None
        self._lock = threading.Lock()
        self._selection_memo: dict[str, Any] = {}
        self._stage_view_lock = threading.Lock()
        self.first_miss_line: dict[int, int] = {}

    # ------------------------------------------------------------------ lazy services
    @property
    def snapshotter(self) -> Any:
        return self.layers.snapshotter

    @property
    def executor(self) -> Any:
        with self._lock:
            if self._executor is None:
                from dockyard.executor.run import Executor
                from dockyard.executor.runtime import detect_runtime

                state = self.store.root / "run"
                info = detect_runtime(self.runtime_name, cache_dir=state)
                self._executor = Executor(info, state)
                if self._cancelled:
                    # cancel() came while the runtime was being detected: no run may start
                    self._executor.cancel()
            return self._executor

    @property
    def stat_cache(self) -> Any:
        with self._lock:
            if self._stat_cache is None:
                from dockyard.context.hashing import StatCache

                self._stat_cache = StatCache(self.store.root / "statcache.db")
            return self._stat_cache

    def close(self) -> None:
        if self._stat_cache is not None:
            self._stat_cache.close()

    def cancel(self) -> None:
        """Stop the build: kill running containers; no later step or container starts."""
        with self._lock:
            self._cancelled = True
            executor = self._executor
        if executor is not None:
            executor.cancel()

    # ------------------------------------------------------------------ scheduling
    def solve(self) -> StageState:
        """Solve every needed stage (independent ones in parallel); return the target's state."""
        # One thread per running stage, at most --jobs at once. (Plain threads and a queue:
        # concurrent.futures would add ~8 ms of imports, logging among them, to every build.)
        needed = {s.index: s for s in self.plan.needed()}
        pending = dict(needed)
        running: set[int] = set()
        finished: queue.SimpleQueue[tuple[int, StageState | None, BaseException | None]] = (
            queue.SimpleQueue())
        threads: list[threading.Thread] = []
        failure: BaseException | None = None
        jobs = max(1, self.options.jobs)

        def work(stage: StagePlan) -> None:
            try:
                finished.put((stage.index, self._solve_stage(stage), None))
            except BaseException as err:  # handed to the scheduling thread
                finished.put((stage.index, None, err))

        try:
            while pending or running:
                if failure is None:
                    for index, stage in list(pending.items()):
                        if len(running) >= jobs:
                            break
                        deps = [d for d in stage.depends_on if d in needed]
                        if all(d in self.states for d in deps):
                            del pending[index]
                            running.add(index)
                            thread = threading.Thread(target=work, args=(stage,),
                                                      name=f"stage-{index}")
                            threads.append(thread)
                            thread.start()
                if not running:
                    if failure is not None:
                        break
                    if pending:  # dependencies failed or cycle (the frontend rejects cycles)
                        raise BuildError("internal error: stages could not be scheduled")
                    break
                index, state, err = finished.get()
                running.discard(index)
                if err is None and state is not None:
                    self.states[index] = state
                elif failure is None:
                    failure = err
                    self.cancel()
                    pending.clear()
                else:
                    pending.clear()
        finally:
            for thread in threads:  # as a pool's shutdown: no stage outlives the solve
                thread.join()
        if failure is not None:
            raise failure
        return self.states[self.plan.target]

    # ------------------------------------------------------------------ stages
    def _solve_stage(self, stage: StagePlan) -> StageState:
        state = self._base_state(stage)
        no_cache = self.options.no_cache or (
            (stage.name or "") in self.options.no_cache_filter
            or stage.display_name in self.options.no_cache_filter
            or str(stage.index) in self.options.no_cache_filter
        )
        for step in stage.steps:
            if step.op is None:
                state.history.append(_history(step.created_by, empty=True,
                                              created=state.created))
                continue
            self._solve_step(stage, step, state, no_cache)
        state.config = dict(stage.config)
        return state

    def _base_state(self, stage: StagePlan) -> StageState:
        base = stage.base
        t0 = time.time()
        if base.kind == "stage":
            assert base.stage is not None
            parent = self.states[base.stage]
            return StageState(
                diff_ids=list(parent.diff_ids),
                key=parent.key,
                history=list(parent.history),
                base_history=list(parent.history),
                base_config=dict(parent.config),
                created=parent.created,
            )
        if base.kind == "scratch":
            return StageState(key=keys.scratch_key(stage.platform))
        assert base.image_id is not None
        self.emit(VertexStarted(stage.from_vertex, f"[{stage.display_name} 1/"
                                f"{_count(stage)}] FROM {_full_ref(base.name)}", t0,
                                stage=stage.display_name, instruction="FROM",
                                line=stage.from_location.start_line))
        image = self.store.get_image(base.image_id)
        config = self.store.read_config(image).to_dict()
        self.emit(VertexDone(stage.from_vertex, time.time(), time.time() - t0))
        return StageState(
            diff_ids=list(config.get("rootfs", {}).get("diff_ids") or []),
            key=keys.from_image_key(base.image_id, stage.platform),
            history=list(config.get("history") or []),
            base_history=list(config.get("history") or []),
            base_config=config,
            created=config.get("created") or None,
        )

    # ------------------------------------------------------------------ steps
    def _solve_step(self, stage: StagePlan, step: Step, state: StageState, no_cache: bool) -> None:
        if self._cancelled:
            raise BuildError("build cancelled", step.location, source=self.plan.source)
        t0 = time.time()
        name = f"[{stage.display_name} {step.position}/{step.count}] {step.display}"
        self.emit(VertexStarted(step.vertex, name, t0, stage=stage.display_name,
                                instruction=step.instruction, line=step.location.start_line))
        try:
            kind, components, explain_extra, prepared = self._key_inputs(stage, step, state)
            link = isinstance(step.op, CopyOp) and step.op.link
            parent = None if link else state.key
            key = keys.layer_key(kind, state.key, components, link=link)
            record = None if no_cache else self.store.get_cache_record(key)
            reason: str | None = None
            if record is not None and self.options.cache_ttl is not None and isinstance(
                step.op, RunOp
            ) and time.time() - record.created > self.options.cache_ttl:
                reason = f"{step.display}: older than --cache-ttl {self.options.cache_ttl_text}"
                record = None
            if record is not None and record.diff_id and not self._layer_available(record.diff_id):
                record = None
            vid = f"{stage.index}/{step.position}"
            info = {
                "instruction": step.instruction,
                "display": step.display,
                "line": step.location.start_line,
                "key": key,
                "parent": parent,
                "components": components,
                **explain_extra,
            }
            if record is not None:
                self.store.touch_cache_record(key)
                self._apply_result(state, key, record.diff_id, step, record.created)
                self.emit(VertexCached(step.vertex, time.time(), key=key))
                self._record_result(stage, step, True, key, None, time.time() - t0)
                with self._lock:
                    self.records[vid] = info
                return
            if reason is None:
                if no_cache:
                    reason = f"{step.display}: " + (
                        "--no-cache" if self.options.no_cache else "--no-cache-filter"
                    )
                else:
                    reason = self._explain(stage, step, vid, info)
            self.emit(CacheMissExplained(step.vertex, time.time(), reason))
            with self._lock:
                self.first_miss_line.setdefault(stage.index, step.location.start_line)
            diff_id = self._execute(stage, step, state, prepared,
                                    None if no_cache else (vid, info))
            record = CacheRecord(
                key=key,
                diff_id=diff_id,
                chain_id=chain_ids([*state.diff_ids, diff_id])[-1] if diff_id else None,
                result={"instruction": step.instruction},
                explain={},
                description=step.display[:200],
                created=time.time(),
                last_used=time.time(),
            )
            self.store.put_cache_record(record)
            self._apply_result(state, key, diff_id, step, record.created)
            duration = time.time() - t0
            self.emit(VertexDone(step.vertex, time.time(), duration, key=key, reason=reason))
            self._record_result(stage, step, False, key, reason, duration)
            with self._lock:
                self.records[vid] = info
        except DockyardError as err:
            # Every error of a step points at its Dockerfile line: located kinds get the
            # location, the others (a corrupt layer, the store) are wrapped in a BuildError.
            located = getattr(err, "located", None)
            if located is not None:
                located(step.location, self.plan.source)
                self.emit(VertexError(step.vertex, time.time(), str(err)))
                raise
            wrapped = BuildError(str(err), step.location, source=self.plan.source)
            self.emit(VertexError(step.vertex, time.time(), str(wrapped)))
            raise wrapped from err

    def _record_result(
        self, stage: StagePlan, step: Step, cached: bool, key: str, reason: str | None,
        duration: float,
    ) -> None:
        with self._lock:
            self.results[step.vertex] = StepResult(
                stage=stage.display_name,
                instruction=step.instruction,
                file=step.location.file,
                line=step.location.start_line,
                cached=cached,
                key=key,
                reason=reason,
                vertex=step.vertex,
                display=step.display,
                duration=duration,
            )

    def _apply_result(
        self, state: StageState, key: str, diff_id: str | None, step: Step, when: float
    ) -> None:
        """Advance the stage past a layer step whose result was made at ``when``."""
        state.key = keys.chain_key(state.key, key, diff_id)
        state.created = rfc3339(when)
        if diff_id:
            state.diff_ids.append(diff_id)
        state.history.append(_history(step.created_by, empty=not diff_id, created=state.created))

    # ------------------------------------------------------------------ keys
    def _key_inputs(
        self, stage: StagePlan, step: Step, state: StageState
    ) -> tuple[str, dict[str, Any], dict[str, Any], Any]:
        op = step.op
        platform = stage.platform
        if isinstance(op, RunOp):
            mounts = self._mount_key_parts(op, stage, step)
            run_extra = {"used_args": dict(step.used_args)}
            return "run", keys.run_components(op, mounts, platform), run_extra, None
        if isinstance(op, MkdirOp):
            return "mkdir", keys.mkdir_components(op, platform), {}, None
        assert isinstance(op, CopyOp)
        digest, files, source_id = self._copy_sources_digest(op, step, stage)
        chown = self._resolve_chown(op, state, step) if op.chown else None
        comps = keys.copy_components(op, digest, source_id, chown, platform)
        extra: dict[str, Any] = {"files": files}
        return "copy", comps, extra, chown

    def _mount_key_parts(self, op: RunOp, stage: StagePlan, step: Step) -> list[dict[str, Any]]:
        if not op.mounts:
            return []  # and keep the executor's modules off a cached build's import path
        from dockyard.executor.mounts import parse_run_mount

        parts: list[dict[str, Any]] = []
        for i, raw in enumerate(op.mounts):
            try:
                m = parse_run_mount(raw, index=i)
            except DockyardError as err:
                raise BuildError(str(err), step.location, source=self.plan.source) from None
            part: dict[str, Any] = {"type": m.type, "target": m.target}
            if m.type == "secret":
                part["id"] = m.id
            elif m.type == "cache":
                part.update(id=m.id, sharing=m.sharing)
            elif m.type == "bind":
                part["source"] = m.source
                part["from"] = self._bind_source_identity(m.from_, m.source or "/", step, stage)
                part["rw"] = not m.readonly
            elif m.type == "ssh":
                part["id"] = m.id
            parts.append(part)
        return parts

    def _bind_source_identity(
        self, ref: str | None, source: str, step: Step, stage: StagePlan
    ) -> str:
        if not ref:
            sel = self._context_selection(self.context, [source.lstrip("/") or "."], ())
            return f"context:{sel.digest}"
        idx = self._stage_index(ref)
        if idx is not None:
            return f"stage:{self.states[idx].key}"
        return f"image:{ref}"

    def _stage_index(self, ref: str) -> int | None:
        lowered = ref.lower()
        for s in self.plan.stages:
            if s.name == lowered:
                return s.index
        if ref.isdigit() and int(ref) < len(self.plan.stages):
            return int(ref)
        return None

    def _context_selection(
        self, ctx: BuildContext, sources: list[str], excludes: tuple[str, ...]
    ) -> Any:
        from dockyard.context.hashing import digest_selection

        return digest_selection(
            ctx.root, sources, excludes, self.stat_cache, ignore=ctx.ignore, zero_owner=True
        )

    def _copy_sources_digest(
        self, op: CopyOp, step: Step, stage: StagePlan
    ) -> tuple[str, dict[str, Any], str | None]:

        if op.is_add and any(_is_url(s) for s in op.sources):
            # remote sources are keyed by what they are (URL + checksum); the content is
            # fetched when the step runs, so an unpinned URL is re-fetched only on a miss.
            return keys.digest_of(list(op.sources)), {}, None
        if not op.sources:
            return keys.digest_of([]), {}, None
        if op.source_kind == "context":
            ctx = self.context
            source_id = None
            if op.source_name and op.source_name in self.named_contexts:
                ctx = self.named_contexts[op.source_name]
                source_id = f"context:{op.source_name}"
            sel = self._context_selection(ctx, list(op.sources), op.excludes)
        elif op.source_kind == "image" and op.source_name in self.named_contexts:
            ctx = self.named_contexts[op.source_name]
            sel = self._context_selection(ctx, list(op.sources), op.excludes)
            source_id = f"context:{op.source_name}"
        else:
            diff_ids, source_id = self._copy_source_layers(op, step)
            sel = self._layers_selection(diff_ids, op)
            source_id = None  # content-addressed: a rebuilt stage with equal files still hits
        # FileMeta objects; turned into JSON only when the history is written (history_record)
        return str(sel.digest), sel.files, source_id

    def _layers_selection(self, diff_ids: list[str], op: CopyOp) -> Any:
        """The selection digest of ``op``'s sources in the filesystem made of ``diff_ids``.

        Layers are content-addressed, so the answer never changes: it is kept as a cache
        record and a cached build's ``COPY --from`` mounts nothing."""
        from dockyard.context.hashing import DIGEST_VERSION, SelectionDigest, digest_selection
        from dockyard.store.db import CacheRecord, PackedManifest

        memo_key = keys.digest_of({
            "v": keys.KEY_VERSION, "kind": "selection", "digest": DIGEST_VERSION,
            "layers": diff_ids, "sources": list(op.sources), "excludes": list(op.excludes),
        })
        with self._lock:
            cached = self._selection_memo.get(memo_key)
        if cached is not None:
            return cached
        record = self.store.get_cache_record(memo_key)
        packed = record.result.get("files") if record is not None else None
        if record is not None and isinstance(packed, str):
            cached = SelectionDigest(str(record.result.get("selection")),
                                     _LazyFileMetas(PackedManifest(packed)))  # type: ignore[arg-type]
        else:
            from dockyard.context.hashing import iter_manifest_json

            with self.view_of(diff_ids) as root:
                cached = digest_selection(
                    root, list(op.sources), op.excludes, self.stat_cache,
                    follow_root_symlinks=True, ignore=None, zero_owner=False,
                )
            now = time.time()
            self.store.put_cache_record(CacheRecord(
                key=memo_key, diff_id=None, chain_id=None,
                result={"instruction": "selection", "selection": cached.digest,
                        "files": PackedManifest.pack(dict(iter_manifest_json(cached.files)))
                        .packed},
                description=f"files of {' '.join(op.sources)} in a stage or image",
                created=now, last_used=now,
            ))
        with self._lock:
            self._selection_memo[memo_key] = cached
        return cached

    def _copy_source_layers(self, op: CopyOp, step: Step) -> tuple[list[str], str]:
        if op.source_kind == "stage":
            assert op.source_stage is not None
            if op.source_stage not in self.states:
                raise BuildError(f"stage {op.source_name} was not built", step.location,
                                 source=self.plan.source)
            st = self.states[op.source_stage]
            return list(st.diff_ids), f"stage:{st.key}"
        assert op.source_name is not None
        try:
            image = self.store.get_image(op.source_name)
        except DockyardError:
            raise BuildError(
                f"COPY --from={op.source_name}: no stage or image of that name "
                "(images must be in the local store: dockyard load/import/pull)",
                step.location, source=self.plan.source,
            ) from None
        config = self.store.read_config(image).to_dict()
        return list(config.get("rootfs", {}).get("diff_ids") or []), f"image:{image.id}"

    def _resolve_chown(self, op: CopyOp, state: StageState, step: Step) -> tuple[int, int]:
        from dockyard.context.copy import resolve_chown

        assert op.chown is not None
        spec = op.chown
        user, _, group = spec.partition(":")
        if user.isdigit() and (not group or group.isdigit()):
            # numeric ids need no lookup; a uid alone is also the gid (Docker's rule)
            return int(user), int(group) if group else int(user)
        try:
            with self.view_of(state.diff_ids) as root:
                return resolve_chown(spec, root)
        except ContextError as err:
            raise BuildError(err.message, step.location, source=self.plan.source) from None

    # ------------------------------------------------------------------ snapshots
    def ensure_snapshot(self, diff_ids: list[str]) -> str | None:
        return self.layers.ensure(diff_ids)

    def _commit(self, key: str, name: str) -> None:
        self.layers.commit(key, name)

    def _layer_available(self, diff_id: str) -> bool:
        return self.layers.layer_available(diff_id)

    def view_of(self, diff_ids: list[str]) -> contextlib.AbstractContextManager[Path]:
        return self.layers.view(diff_ids)

    # ------------------------------------------------------------------ execution
    def _execute(
        self, stage: StagePlan, step: Step, state: StageState, prepared: Any,
        reusable: tuple[str, dict[str, Any]] | None = None,
    ) -> str | None:
        """Run a missed step on a fresh snapshot; returns the new layer's diff id (None if empty).

        ``reusable``: (vertex id, key info) of a step whose previous result may lend it
        unchanged files (see :mod:`dockyard.solver.reuse`); None under --no-cache.
        """
        from dockyard.snapshot.base import mounted

        snap = self.snapshotter
        op = step.op
        link = isinstance(op, CopyOp) and op.link
        parent = None if link else self.ensure_snapshot(state.diff_ids)
        key = f"step-{_unique()}"
        mounts = snap.prepare(key, parent)
        reuse = None
        try:
            with mounted(mounts, under=self.store.root / "mnt") as rootfs:
                if isinstance(op, RunOp):
                    self._run(op, step, stage, rootfs)
                elif isinstance(op, CopyOp):
                    reuse = self._file_reuse(op, key, rootfs, reusable)
                    self._copy(op, step, rootfs, prepared, state, reuse)
                elif isinstance(op, MkdirOp):
                    self._mkdir(op, rootfs)
            if reuse is not None and reuse.links:
                reuse.link_all()
            sde = self.options.source_date_epoch
            if not link and self.layers.keeps_diffs:
                # Copy once: only hash the diff now; the committed snapshot keeps the bytes
                # and the store writes the tar when an export, push or save needs it.
                stats = snap.diff(key, _Discard(), source_date_epoch=sde)
                if stats.size <= EMPTY_TAR_SIZE:
                    snap.remove(key)
                    return None
                digest = stats.diff_id
                new_chain = chain_ids([*state.diff_ids, digest])[-1]
                self.layers.commit_layer(key, new_chain, digest, stats.size, sde)
                return str(digest)
            with self.store.blobs.writer() as w:
                stats = snap.diff(key, w, source_date_epoch=sde)
                if stats.size <= EMPTY_TAR_SIZE:
                    w.abort()
                    snap.remove(key)
                    return None
                digest, size = w.commit()
            self.store.put_layer(digest, size)
            new_chain = chain_ids([*state.diff_ids, digest])[-1]
            if link:
                # the layer was made on an empty snapshot: rebase it by unpacking on the parent
                snap.remove(key)
                self.ensure_snapshot([*state.diff_ids, digest])
            else:
                self._commit(key, new_chain)
            return str(digest)
        except BaseException:
            with contextlib.suppress(Exception):
                if snap.exists(key):
                    snap.remove(key)
            raise

    def _run(self, op: RunOp, step: Step, stage: StagePlan, rootfs: Path) -> None:
        from dockyard.executor.spec import RunSpec

        if op.security == "insecure" and not self.options.allow_insecure:
            raise BuildError(
                "RUN --security=insecure is not allowed",
                step.location,
                hint="pass --allow security.insecure to permit it",
                source=self.plan.source,
            )
        network = op.network if op.network != "default" else self.options.network
        tail: list[bytes] = []

        def on_output(chunk: bytes) -> None:
            self.emit(VertexLog(step.vertex, chunk, time.time()))
            tail.append(chunk)
            if len(tail) > 64:
                del tail[:-64]

        with self._run_mounts(op, step, stage, rootfs) as (mounts, extra_env):
            for path, content in op.script_files:
                target = rootfs / path.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)
                target.chmod(0o755)
            spec = RunSpec(
                args=op.args,
                env=(*op.env, *extra_env),
                cwd=op.workdir,
                user=op.user,
                network="none" if network == "none" else "host",
                mounts=tuple(mounts),
                security="insecure" if op.security == "insecure" else "sandbox",
            )
            try:
                code = self.executor.run(rootfs, spec, on_output=on_output)
            finally:
                for path, _ in op.script_files:
                    with contextlib.suppress(OSError):
                        (rootfs / path.lstrip("/")).unlink()
                    with contextlib.suppress(OSError):
                        (rootfs / path.lstrip("/")).parent.rmdir()
        if code != 0:
            lines = b"".join(tail).decode("utf-8", "replace").splitlines()[-10:]
            command = " ".join(op.args)
            raise RunError(
                f"process \"{command}\" did not complete successfully: exit code: {code}",
                step.location,
                command=command,
                exit_code=code,
                output_tail=lines,
                source=self.plan.source,
            )

    @contextlib.contextmanager
    def _run_mounts(
        self, op: RunOp, step: Step, stage: StagePlan, rootfs: Path
    ) -> Iterator[tuple[list[Any], list[str]]]:
        from dockyard.executor import mounts as m

        specs: list[Any] = []
        env: list[str] = []
        ssh_index = 0  # BuildKit numbers default ssh targets among the ssh mounts only
        with contextlib.ExitStack() as stack:
            for raw in op.mounts:
                rm = m.with_workdir(m.parse_run_mount(raw, index=ssh_index), op.workdir)
                if rm.type == "ssh":
                    ssh_index += 1
                if rm.type == "bind":
                    if not rm.from_:
                        src_root = self.context.root
                    else:
                        idx = self._stage_index(rm.from_)
                        if idx is not None:
                            src_root = stack.enter_context(self.view_of(self.states[idx].diff_ids))
                        elif rm.from_ in self.named_contexts:
                            src_root = self.named_contexts[rm.from_].root
                        else:
                            image = self.store.get_image(rm.from_)
                            cfg = self.store.read_config(image).to_dict()
                            src_root = stack.enter_context(
                                self.view_of(list(cfg.get("rootfs", {}).get("diff_ids") or []))
                            )
                    specs.append(m.bind_mount_spec(rm, src_root))
                elif rm.type == "tmpfs":
                    specs.append(m.tmpfs_mount_spec(rm))
                elif rm.type == "cache":
                    cache_dir = stack.enter_context(m.acquire_cache_dir(self.store.root, rm))
                    specs.append(m.cache_mount_spec(rm, cache_dir))
                elif rm.type == "secret":
                    value = self.options.secrets.get(rm.id or "")
                    spec_or_none, env_items = stack.enter_context(
                        _secret(m, rm, value, _secrets_dir(self.store.root), step,
                                self.plan.source)
                    )
                    if spec_or_none is not None:
                        specs.append(spec_or_none)
                    env.extend(env_items)
                elif rm.type == "ssh":
                    sock = self.options.ssh.get(rm.id or "default")
                    if sock is None and rm.required:
                        raise BuildError(f"no SSH agent for id {rm.id or 'default'!r}",
                                         step.location, hint="pass --ssh default[=SOCKET]",
                                         source=self.plan.source)
                    spec_ssh, env_ssh = m.ssh_mount(rm, sock)
                    if spec_ssh is not None:
                        specs.append(spec_ssh)
                    # only the first ssh mount sets SSH_AUTH_SOCK, and never over an ENV
                    taken = {e.partition("=")[0] for e in (*op.env, *env)}
                    env.extend(e for e in env_ssh if e.partition("=")[0] not in taken)
            yield specs, env

    def _file_reuse(
        self, op: CopyOp, key: str, rootfs: Path, reusable: tuple[str, dict[str, Any]] | None
    ) -> Any:
        """A :class:`~dockyard.solver.reuse.FileReuse` lending this COPY the unchanged files
        of its previous result, or None where that does not apply (see that module)."""
        if (
            reusable is None
            or not self.layers.keeps_diffs
            or op.is_add
            or op.link
            or op.parents
            or op.heredocs
            or op.source_kind != "context"
            or (op.source_name and op.source_name in self.named_contexts)
            or len(op.sources) != 1
            or any(c in op.sources[0] for c in "*?[")
        ):
            return None
        vid, info = reusable
        prev = (self.previous.get("steps") or {}).get(vid)
        if not prev or not prev.get("key") or "files" not in prev:
            return None
        comps = {k: v for k, v in info["components"].items() if k != "content"}
        pcomps = {k: v for k, v in (prev.get("components") or {}).items() if k != "content"}
        if comps != pcomps:
            return None
        record = self.store.get_cache_record(prev["key"])
        snap = self.snapshotter
        if record is None or not record.chain_id or not snap.exists(record.chain_id):
            return None
        from dockyard.solver.reuse import FileReuse

        return FileReuse(self.context.root, rootfs, snap.fs_dir(key),
                         snap.fs_dir(record.chain_id), info["files"], prev["files"])

    def _copy(
        self, op: CopyOp, step: Step, rootfs: Path, chown: Any, state: StageState,
        reuse: Any = None,
    ) -> None:
        from dockyard.context.copy import add_remote, copy_into, parse_chmod, write_heredocs

        chmod = parse_chmod(op.chmod) if op.chmod else None
        utime = self.options.source_date_epoch
        command = "ADD" if op.is_add else "COPY"
        try:
            if op.heredocs:
                write_heredocs(
                    [(h.name, h.content) for h in op.heredocs], op.dest, rootfs,
                    workdir=op.workdir, chown=chown, chmod=chmod, utime=utime,
                    tmpdir=self.store.root / "tmp",
                )
            remote = [s for s in op.sources if op.is_add and _is_url(s)]
            local = [s for s in op.sources if s not in remote]
            for url in remote:
                add_remote(url, op.dest, rootfs, workdir=op.workdir, chown=chown, chmod=chmod,
                           checksum=op.checksum, keep_git_dir=op.keep_git_dir,
                           tmpdir=self.store.root / "tmp")
            if not local:
                return
            if op.source_kind == "context" or (
                op.source_kind == "image" and op.source_name in self.named_contexts
            ):
                ctx = self.context
                if op.source_name and op.source_name in self.named_contexts:
                    ctx = self.named_contexts[op.source_name]
                copy_into(ctx.root, local, op.dest, rootfs, workdir=op.workdir, chown=chown,
                          chmod=chmod, parents=op.parents, excludes=op.excludes,
                          is_add=op.is_add, ignore=ctx.ignore, preserve_owner=False,
                          utime=utime, command=command, reuse=reuse)
            else:
                diff_ids, _ = self._copy_source_layers(op, step)
                with self.view_of(diff_ids) as src_root:
                    copy_into(src_root, local, op.dest, rootfs, workdir=op.workdir,
                              chown=chown, chmod=chmod, parents=op.parents,
                              excludes=op.excludes, is_add=op.is_add, ignore=None,
                              preserve_owner=True, utime=utime, command=command)
        except ContextError as err:
            raise BuildError(err.message, step.location, err.hint,
                             source=self.plan.source) from None

    def _mkdir(self, op: MkdirOp, rootfs: Path) -> None:
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
            os.chown(d, uid, gid)

    # ------------------------------------------------------------------ explain
    def _explain(self, stage: StagePlan, step: Step, vid: str, info: dict[str, Any]) -> str:
        """Why this step missed, compared with the previous build of this Dockerfile+target."""
        prefix = f"{step.display}"
        prev_steps = self.previous.get("steps") or {}
        prev = prev_steps.get(vid)
        if prev is None:
            return f"{prefix}: no earlier build of this step in this store"
        if prev.get("display") != step.display:
            return f"{prefix}: the instruction changed (was: {prev.get('display')})"
        comps, pcomps = info["components"], prev.get("components") or {}
        # ARG values first: "ARG VERSION changed 1.0 -> 1.1"
        old_args, new_args = prev.get("used_args") or {}, info.get("used_args") or {}
        for name in sorted(set(old_args) | set(new_args)):
            if old_args.get(name) != new_args.get(name):
                return (f"{prefix}: ARG {name} changed {old_args.get(name, '(unset)')} -> "
                        f"{new_args.get(name, '(unset)')}")
        if "files" in info and comps.get("content") != pcomps.get("content"):
            from dockyard.context.hashing import FileMeta, explain_diff

            try:
                old = {k: FileMeta.from_json(v) for k, v in (prev.get("files") or {}).items()}
                new = info["files"]
                lines = explain_diff(old, new)
            except (TypeError, ValueError, KeyError):
                lines = []
            if lines:
                count = len(lines)
                shown = ", ".join(lines[:5]) + (f", and {count - 5} more" if count > 5 else "")
                noun = "file" if count == 1 else "files"
                return f"{prefix}: {count} {noun} changed: {shown}"
            return f"{prefix}: the source files changed"
        for field_name, label in (("env", "the environment"), ("args", "the command"),
                                  ("user", "the user"), ("workdir", "the working directory"),
                                  ("mounts", "the mounts"), ("network", "the network mode"),
                                  ("dest", "the destination"), ("chown", "--chown"),
                                  ("chmod", "--chmod"), ("platform", "the platform")):
            if comps.get(field_name) != pcomps.get(field_name):
                if field_name == "env":
                    return f"{prefix}: {_env_change(pcomps.get('env') or [], comps.get('env') or [])}"
                return f"{prefix}: {label} changed"
        if info.get("parent") != prev.get("parent"):
            line = self.first_miss_line.get(stage.index)
            if line is not None and line < step.location.start_line:
                return f"{prefix}: an earlier step changed (line {line})"
            return f"{prefix}: the base image or an earlier step changed"
        if info["key"] == prev.get("key"):
            return f"{prefix}: its cache record was pruned"
        return f"{prefix}: its inputs changed"

    def history_record(self) -> dict[str, Any]:
        """This build's steps for the next build's explanations. A COPY's file manifest is
        only serialised when its content changed; otherwise the previous JSON is kept as is
        (a no-op rebuild of a big context must not re-encode thousands of entries)."""
        from dockyard.context.hashing import iter_manifest_json

        previous = self.previous.get("steps") or {}
        steps: dict[str, dict[str, Any]] = {}
        for vid, info in self.records.items():
            info = dict(info)
            if "files" in info:
                prev = previous.get(vid) or {}
                same = (prev.get("components") or {}).get("content") == info[
                    "components"].get("content")
                if same and "files" in prev:
                    info["files"] = prev["files"]
                else:
                    info["files"] = dict(iter_manifest_json(info["files"]))
            steps[vid] = info
        return {"steps": steps, "time": time.time()}

    def warn(self, message: str, location: Location | None = None) -> None:
        self.emit(BuildWarning(message, time.time(), str(location) if location else None))


class _Discard:
    """A write-only sink: the tar writer hashes what passes through, nothing is kept."""

    def write(self, data: bytes) -> int:
        return len(data)


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
        with contextlib.suppress(OSError):
            base.rmdir()


class _LazyFileMetas(Mapping[str, Any]):
    """A stored selection manifest (path -> FileMeta), decoded only if a miss is explained."""

    def __init__(self, packed: Mapping[str, Any]) -> None:
        self._packed = packed
        self._data: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        if self._data is None:
            from dockyard.context.hashing import FileMeta

            self._data = {k: FileMeta.from_json(v) for k, v in self._packed.items()}
        return self._data

    def __getitem__(self, key: str) -> Any:
        return self._load()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


def _secrets_dir(store_root: Path) -> Path:
    """Secrets live in memory (tmpfs) where the host has one, never in the store's disk."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm / f"dockyard-secrets-{os.getpid()}"
    return store_root / "run" / "secrets"


def _env_change(old: list[str], new: list[str]) -> str:
    o = dict(item.partition("=")[::2] for item in old)
    n = dict(item.partition("=")[::2] for item in new)
    for k in sorted(set(o) | set(n)):
        if o.get(k) != n.get(k):
            if k not in o:
                return f"ENV {k} was added"
            if k not in n:
                return f"ENV {k} was removed"
            return f"ENV {k} changed {o[k]} -> {n[k]}"
    return "the environment changed"


def _history(created_by: str, *, empty: bool, created: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"created_by": created_by}
    if created is not None:
        entry["created"] = created
    if empty:
        entry["empty_layer"] = True
    return entry


def rfc3339(ts: float) -> str:
    """Seconds since the epoch as the image config writes times (UTC, whole seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(ts)))


def _count(stage: StagePlan) -> int:
    return stage.steps[0].count if stage.steps else 1


def _full_ref(name: str) -> str:
    try:
        from dockyard.image.reference import parse_reference

        return str(parse_reference(name))
    except (DockyardError, ValueError):
        return name


def _is_url(src: str) -> bool:
    return src.startswith(("http://", "https://", "git@", "git://")) or (
        src.startswith("ssh://")
    )


__all__ = ["SolveOptions", "Solver", "StageState", "StepResult", "UsageError"]
