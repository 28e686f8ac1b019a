"""Walks a :class:`~dockyard.plan.model.BuildPlan`: cache lookups, running misses, parallel stages.

Generic code only, as BuildKit's solver: what a step's key is made of and how it runs is its
op's (``solver/ops/``: RUN, COPY/ADD, mkdir), where results are looked up and kept is the
cache backend's (``solver/cache.py``), and why a step missed is the explainer's
(``solver/explain.py``). Per stage, a :class:`StageState` holds the layers so far (diff ids),
the chain key of the stage so far, and the history. A layer step:

1. asks its op for its cache inputs (COPY/ADD first digests its sources) and makes its key
   (``solver/keys.py``),
2. looks the key up (unless ``--no-cache``/``--no-cache-filter``/``--cache-ttl`` say not to),
3. on a miss, prepares a snapshot on the parent chain, has the op run in it, writes the diff
   as an uncompressed layer blob (its digest *is* the diff id), commits the snapshot under
   the new chain id and records the cache entry,
4. explains the miss by comparing with the previous build of this Dockerfile and target.

Snapshots are created lazily: a fully cached build mounts nothing.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dockyard.context.context import BuildContext
from dockyard.errors import BuildError, DockyardError, Location, SourceChangedError, UsageError
from dockyard.image.oci import chain_ids
from dockyard.plan.model import BuildPlan, RunOp, StagePlan, Step
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
from dockyard.solver.cache import CacheBackend, LocalCache
from dockyard.solver.explain import Explainer, step_id
from dockyard.solver.model import SolveOptions, StageState, StepResult, rfc3339
from dockyard.solver.ops import CacheInputs, Execution, op_for
from dockyard.solver.snapshots import LayerSnapshots
from dockyard.solver.sources import SourceDigests
from dockyard.store.db import CacheRecord, Store


def _unique() -> str:
    """A random hex name for a temporary snapshot or directory."""
    # os.urandom rather than uuid: uuid imports platform, which costs start-up time
    return os.urandom(16).hex()


EMPTY_TAR_SIZE = 1024  # a tar stream with no entries: two zero blocks
SOURCE_ATTEMPTS = 3  # keyings of a step whose sources keep changing while it copies them


class _KeyAgain(Exception):
    """The step's sources changed under it: make its key again (not a DockyardError, so the
    step's error handling lets it through)."""


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
        cache: Callable[[LayerSnapshots], CacheBackend] | None = None,
    ) -> None:
        """``cache``: makes the cache backend from the solve's layer snapshots (default: the
        local store's, :class:`LocalCache`)."""
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
        self.cache: CacheBackend = (cache or (lambda layers: LocalCache(store, layers)))(
            self.layers)
        # every record this build used or made, by key: (stage index, record); what a
        # cache export (--cache-to) writes
        self.used_records: dict[str, tuple[int, CacheRecord]] = {}
        self._stage_of_thread = threading.local()
        self.sources = SourceDigests(store, lambda: self.stat_cache, self.view_of,
                                     self.cache, self._note_selection)
        self.explainer = Explainer(self.previous, plan)
        self._executor: Any = None
        self._cancelled = False
        self._stat_cache: Any = None
        self._lock = threading.Lock()
        # step vertex -> seconds its run spent unpacking the base image (shown under FROM)
        self._unpack_time: dict[int, float] = {}
        self._pull_lock = threading.Lock()
        self._images: dict[str, Any] = {}  # name -> image record (see image())
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
                from dockyard.executor.runtime import detect_runtime, state_dir

                state = state_dir(self.store.root)
                info = detect_runtime(self.runtime_name, cache_dir=state)
                self._executor = Executor(info, state)
                if self.options.network_tool:
                    from dockyard.rootless.network import UserModeNetwork

                    self._executor.network = UserModeNetwork(
                        self.options.network_tool)  # type: ignore[arg-type]
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
        if self._executor is not None:
            self._executor.close()  # its bundles and secrets directories

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
        # One thread per running stage, at most --jobs at once; by default (0) every stage
        # whose dependencies are done, as BuildKit's unlimited max-parallelism: a RUN that
        # waits (sleep, network, I/O) needs no core. The CPU-bound work inside a stage (copy
        # and hash thread pools) stays sized by the core count. (Plain threads and a queue:
        # concurrent.futures would add ~8 ms of imports, logging among them, to every build.)
        needed = {s.index: s for s in self.plan.needed()}
        pending = dict(needed)
        running: set[int] = set()
        finished: queue.SimpleQueue[tuple[int, StageState | None, BaseException | None]] = (
            queue.SimpleQueue())
        threads: list[threading.Thread] = []
        failure: BaseException | None = None
        jobs = self.options.jobs if self.options.jobs > 0 else max(1, len(needed))

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
    def _note(self, stage: int, record: CacheRecord) -> None:
        with self._lock:
            self.used_records.setdefault(record.key, (stage, record))

    def _note_selection(self, record: CacheRecord) -> None:
        self._note(getattr(self._stage_of_thread, "index", self.plan.target), record)

    def _solve_stage(self, stage: StagePlan) -> StageState:
        self._stage_of_thread.index = stage.index
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
        self._emit_from(stage, t0)
        image = self.store.get_image(base.image_id)
        config = self.store.read_config(image).to_dict()
        self.emit(VertexDone(stage.from_vertex, time.time(), time.time() - t0))
        diff_ids = list(config.get("rootfs", {}).get("diff_ids") or [])
        return StageState(
            diff_ids=diff_ids,
            key=keys.from_layers_key(diff_ids, stage.platform),
            history=list(config.get("history") or []),
            base_history=list(config.get("history") or []),
            base_config=config,
            created=config.get("created") or None,
        )

    # ------------------------------------------------------------------ steps
    def _solve_step(self, stage: StagePlan, step: Step, state: StageState, no_cache: bool) -> None:
        # A source that changed between the step's key and its copy (SourceChangedError)
        # makes the step start over from its key, a few times, then fail.
        for attempt in range(SOURCE_ATTEMPTS):
            try:
                self._solve_step_once(stage, step, state, no_cache, first=attempt == 0,
                                      last=attempt == SOURCE_ATTEMPTS - 1)
                return
            except _KeyAgain:
                continue

    def _solve_step_once(
        self, stage: StagePlan, step: Step, state: StageState, no_cache: bool, *,
        first: bool = True, last: bool = True,
    ) -> None:
        if self._cancelled:
            raise BuildError("build cancelled", step.location, source=self.plan.source)
        t0 = time.time()
        name = f"[{stage.display_name} {step.position}/{step.count}] {step.display}"
        if first:
            self.emit(VertexStarted(step.vertex, name, t0, stage=stage.display_name,
                                    instruction=step.instruction,
                                    line=step.location.start_line))
        try:
            assert step.op is not None
            op = op_for(step.op)
            inputs = op.cache_inputs(self, stage, step, state)
            parent = None if inputs.link else state.key
            key = keys.layer_key(inputs.kind, state.key, inputs.components, link=inputs.link)
            record = (None if no_cache and key not in self.options.made_here
                      else self.cache.lookup(key))
            reason: str | None = None
            if record is not None and self.options.cache_ttl is not None and (
                inputs.kind == "run"
            ) and time.time() - record.created > self.options.cache_ttl:
                reason = f"{step.display}: older than --cache-ttl {self.options.cache_ttl_text}"
                record = None
            if record is not None and not self.cache.fetch(record):
                record = None
            vid = step_id(stage, step)
            info = {
                "instruction": step.instruction,
                "display": step.display,
                "line": step.location.start_line,
                "key": key,
                "parent": parent,
                "components": inputs.components,
                **inputs.explain,
            }
            if record is not None:
                self.cache.mark_used(key)
                self._note(stage.index, record)
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
                    with self._lock:
                        first_miss = self.first_miss_line.get(stage.index)
                    reason = self.explainer.explain(stage, step, info, first_miss)
            self.emit(CacheMissExplained(step.vertex, time.time(), reason))
            with self._lock:
                self.first_miss_line.setdefault(stage.index, step.location.start_line)
            try:
                diff_id = self._execute(stage, step, state, inputs)
            except SourceChangedError as err:
                if last:
                    raise
                self.emit(VertexLog(step.vertex, f"{err.message}: keying the step again\n"
                                    .encode("utf-8", "surrogateescape"), time.time()))
                raise _KeyAgain from err
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
            self.cache.save(record)
            self.options.made_here.add(key)
            self._note(stage.index, record)
            self._apply_result(state, key, diff_id, step, record.created)
            with self._lock:  # the base's unpacking was shown (and timed) under FROM
                duration = time.time() - t0 - self._unpack_time.pop(step.vertex, 0.0)
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

    # ------------------------------------------------------------------ for the ops
    def stage_index(self, ref: str) -> int | None:
        """The index of the stage ``ref`` names (by name or number), or None (a named build
        context of that name wins over a stage)."""
        lowered = ref.lower()
        if lowered in self.plan.named_contexts:
            return None
        for s in self.plan.stages:
            if s.name == lowered:
                return s.index
        if ref.isdigit() and int(ref) < len(self.plan.stages):
            return int(ref)
        return None

    def image(self, name: str) -> Any:
        """The image ``name`` for ``COPY --from=`` / ``RUN --mount=from=``: from the store, or
        pulled as FROM's are (``--pull``: ``missing`` pulls what is not there, ``always``
        pulls once per build, ``never`` only looks). The answer is kept for the build, so a
        step's key and its execution see the same image."""
        with self._lock:
            known = self._images.get(name)
        if known is not None:
            return known
        with self._pull_lock:  # one pull per name, even when stages ask at once
            with self._lock:
                known = self._images.get(name)
            if known is not None:
                return known
            wanted = self.options.image_platform
            image = None
            if self.options.pull != "always":
                try:
                    image = self.store.get_image(name, platform=wanted)
                except DockyardError as err:
                    if self.options.pull == "never":
                        raise DockyardError(
                            f"{name!r} is not in the local store and --pull=never ({err}); "
                            "pull it, or load it with 'dockyard load' or 'dockyard import'"
                        ) from None
            if image is None:
                from dockyard.registry.pull import pull

                try:
                    pulled = pull(self.store, name,
                                  platform=wanted or self.options.platform)
                except DockyardError as err:
                    raise DockyardError(
                        f"{name!r} is not in the local store and cannot be pulled: {err}"
                    ) from None
                image = self.store.get_image(pulled.image_id)
            with self._lock:
                self._images[name] = image
            return image

    # ------------------------------------------------------------------ snapshots
    def ensure_snapshot(self, diff_ids: list[str]) -> str | None:
        return self.layers.ensure(diff_ids)

    def _emit_from(self, stage: StagePlan, when: float) -> None:
        self.emit(VertexStarted(stage.from_vertex, f"[{stage.display_name} 1/"
                                f"{_count(stage)}] FROM {_full_ref(stage.base.name)}", when,
                                stage=stage.display_name, instruction="FROM",
                                line=stage.from_location.start_line))

    def _ensure_parent(self, stage: StagePlan, step: Step, state: StageState) -> str | None:
        """The snapshot a missed step runs on. When the base image's layers are not unpacked
        yet, that happens under the FROM vertex (as BuildKit shows its extraction there):
        FROM starts again, says what it unpacks and is done; the step's own time leaves it
        out."""
        rootfs = state.base_config.get("rootfs") if state.base_config else None
        base = list((rootfs or {}).get("diff_ids") or [])[: len(state.diff_ids)]
        if (stage.base.kind != "image" or not base or state.diff_ids[: len(base)] != base
                or self.snapshotter.exists(chain_ids(base)[-1])):
            return self.ensure_snapshot(state.diff_ids)
        t0 = time.time()
        self._emit_from(stage, t0)
        self.emit(VertexLog(stage.from_vertex,
                            f"unpacking {len(base)} layer{'s' if len(base) != 1 else ''}\n"
                            .encode(), t0))
        try:
            self.ensure_snapshot(base)
        except DockyardError as err:
            self.emit(VertexError(stage.from_vertex, time.time(), str(err)))
            raise
        done = time.time()
        self.emit(VertexDone(stage.from_vertex, done, done - t0))
        with self._lock:
            self._unpack_time[step.vertex] = done - t0
        return self.ensure_snapshot(state.diff_ids)

    def _commit(self, key: str, name: str) -> None:
        self.layers.commit(key, name)

    def view_of(self, diff_ids: list[str]) -> contextlib.AbstractContextManager[Path]:
        return self.layers.view(diff_ids)

    # ------------------------------------------------------------------ execution
    def _execute(
        self, stage: StagePlan, step: Step, state: StageState, inputs: CacheInputs,
    ) -> str | None:
        """Run a missed step on a fresh snapshot; returns the new layer's diff id (None if empty)."""
        from dockyard.snapshot.base import mounted

        assert step.op is not None
        op = op_for(step.op)
        snap = self.snapshotter
        link = inputs.link
        parent = None if link else self._ensure_parent(stage, step, state)
        key = f"step-{_unique()}"
        mounts = snap.prepare(key, parent)
        if not (isinstance(step.op, RunOp) and step.op.security == "insecure"):
            # No step opens a device node in its root but RUN --security=insecure: mounted
            # nodev here, the executor needs no nodev view of its own (one bind and its
            # remount and unmount less a RUN step).
            mounts = [m.with_nodev() for m in mounts]
        try:
            with mounted(mounts, under=self.store.root / "mnt") as rootfs:
                finish = op.execute(self, Execution(
                    stage=stage, step=step, state=state, rootfs=rootfs, snapshot=key,
                    inputs=inputs,
                ))
            if finish is not None:
                finish()
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

    # ------------------------------------------------------------------ explain
    def history_record(self) -> dict[str, Any]:
        """This build's steps for the next build's explanations (the whole record to store:
        steps this build did not reach keep their previous record)."""
        return self.explainer.history_record(self.records)

    def warn(self, message: str, location: Location | None = None) -> None:
        self.emit(BuildWarning(message, time.time(), str(location) if location else None))


class _Discard:
    """A write-only sink: the tar writer hashes what passes through, nothing is kept."""

    def write(self, data: bytes) -> int:
        return len(data)


def _history(created_by: str, *, empty: bool, created: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"created_by": created_by}
    if created is not None:
        entry["created"] = created
    if empty:
        entry["empty_layer"] = True
    return entry


def _count(stage: StagePlan) -> int:
    return stage.steps[0].count if stage.steps else 1


def _full_ref(name: str) -> str:
    try:
        from dockyard.image.reference import parse_reference

        return str(parse_reference(name))
    except (DockyardError, ValueError):
        return name


__all__ = ["SolveOptions", "Solver", "StageState", "StepResult", "UsageError"]
