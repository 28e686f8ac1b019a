"""Multi-stage builds: COPY --from, content-keyed stage copies, parallel stages, skipped stages,
--target and --no-cache-filter."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_build_support import Built, build, flatten, fresh_store, needs_runtime, write_tree

from dockyard.errors import RunError
from dockyard.progress.events import VertexDone, VertexStarted

pytestmark = needs_runtime


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return fresh_store(tmp_path / "store")


def _ctx(tmp_path: Path, dockerfile: str, **files: str) -> Path:
    return write_tree(tmp_path / "ctx", {"Dockerfile": dockerfile, **files})


def test_copy_from_index_name_and_image(root: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "FROM busybox AS Builder\n"
                         "RUN echo built > /out.txt && chmod 640 /out.txt\n"
                         "FROM busybox\n"
                         "COPY --from=0 /out.txt /a\n"
                         "COPY --from=builder /out.txt /b\n"
                         "COPY --from=busybox:latest /etc/group /group\n")
    result = build(ctx, root, tags=["multi"])
    fs = flatten(root, "multi", tmp_path / "fs")
    assert (fs / "a").read_text() == "built\n"
    assert (fs / "b").read_text() == "built\n"
    assert (fs / "b").stat().st_mode & 0o777 == 0o640
    assert "app:x:1000:" in (fs / "group").read_text()
    assert [s.stage for s in result.steps] == ["builder", "stage-1", "stage-1", "stage-1"]
    # only the target's layers are in the image: busybox + 3 COPY layers
    assert len(result.result.config["rootfs"]["diff_ids"]) == 4


def test_identical_file_from_changed_builder_keeps_final_stage_cached(root: Path,
                                                                      tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "FROM busybox AS builder\n"
                         "ARG NOISE=1\n"
                         "RUN echo \"$NOISE\" > /noise && echo payload > /bin.out\n"
                         "FROM busybox\n"
                         "COPY --from=builder /bin.out /app/bin\n"
                         "RUN cat /app/bin > /check\n")
    build(ctx, root, build_args={"NOISE": "1"})
    second = build(ctx, root, build_args={"NOISE": "2"}, tags=["same"])
    assert second.cached_by_line() == {3: False, 5: True, 6: True}
    assert "ARG NOISE changed 1 -> 2" in (second.step(3).reason or "")
    fs = flatten(root, "same", tmp_path / "fs")
    assert (fs / "check").read_text() == "payload\n"


def test_changed_builder_output_invalidates_copy_from(root: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "FROM busybox AS builder\n"
                         "ARG OUT=1\n"
                         "RUN echo \"$OUT\" > /bin.out\n"
                         "FROM busybox\n"
                         "COPY --from=builder /bin.out /app/bin\n"
                         "RUN cat /app/bin > /check\n")
    build(ctx, root, build_args={"OUT": "1"})
    second = build(ctx, root, build_args={"OUT": "2"}, tags=["changed"])
    assert second.cached_by_line() == {3: False, 5: False, 6: False}
    assert "bin.out (content)" in (second.step(5).reason or "")
    fs = flatten(root, "changed", tmp_path / "fs")
    assert (fs / "check").read_text() == "2\n"


def _run_interval(built: Built, stage: str) -> tuple[float, float]:
    starts = {e.vertex: e.time for e in built.events
              if isinstance(e, VertexStarted) and e.stage == stage and e.instruction == "RUN"}
    assert len(starts) == 1, starts
    (vertex, start), = starts.items()
    done = [e.time for e in built.events if isinstance(e, VertexDone) and e.vertex == vertex]
    assert len(done) == 1
    return start, done[0]


PARALLEL = ("FROM busybox AS a\n"
            "RUN sleep 1 && echo a > /a\n"
            "FROM busybox AS b\n"
            "RUN sleep 1 && echo b > /b\n"
            "FROM busybox\n"
            "COPY --from=a /a /a\n"
            "COPY --from=b /b /b\n")


def test_independent_stages_overlap_with_two_jobs(root: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, PARALLEL)
    built = build(ctx, root, jobs=2, tags=["par"])
    a_start, a_done = _run_interval(built, "a")
    b_start, b_done = _run_interval(built, "b")
    assert a_done - a_start >= 1 and b_done - b_start >= 1
    assert a_start < b_done and b_start < a_done, "stages a and b did not overlap"
    fs = flatten(root, "par", tmp_path / "fs")
    assert (fs / "a").read_text() == "a\n" and (fs / "b").read_text() == "b\n"
    # the metadata lists steps in Dockerfile order, not completion order
    assert [s.line for s in built.steps] == [2, 4, 6, 7]


WIDE = "".join(f"FROM busybox AS s{i}\nRUN sleep 2 && echo {i} > /{i}\n" for i in range(4)) + (
    "FROM busybox\n" + "".join(f"COPY --from=s{i} /{i} /{i}\n" for i in range(4)))


def test_by_default_every_ready_stage_runs_at_once(root: Path, tmp_path: Path) -> None:
    """As BuildKit (unlimited max-parallelism): 4 independent stages on any number of cores
    all run together; RUNs that wait need no core each."""
    ctx = _ctx(tmp_path, WIDE)
    built = build(ctx, root, jobs=None, tags=["wide"])
    intervals = [_run_interval(built, f"s{i}") for i in range(4)]
    assert max(start for start, _ in intervals) < min(done for _, done in intervals), (
        f"the four stages did not all overlap: {intervals}")
    fs = flatten(root, "wide", tmp_path / "fs")
    assert [(fs / str(i)).read_text() for i in range(4)] == [f"{i}\n" for i in range(4)]


def test_one_job_runs_stages_one_at_a_time(root: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, PARALLEL)
    built = build(ctx, root, jobs=1)
    a = _run_interval(built, "a")
    b = _run_interval(built, "b")
    first, second = sorted([a, b])
    assert first[1] <= second[0]


def test_unused_failing_stage_is_never_built(root: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "FROM busybox AS broken\n"
                         "RUN exit 1\n"
                         "FROM no-such-image:never AS missing\n"
                         "RUN exit 2\n"
                         "FROM busybox\n"
                         "RUN echo ok > /ok\n")
    built = build(ctx, root, tags=["ok"])
    assert [(s.stage, s.line) for s in built.steps] == [("stage-2", 6)]
    assert not [e for e in built.events if isinstance(e, VertexStarted)
                and e.stage in ("broken", "missing")]
    assert (flatten(root, "ok", tmp_path / "fs") / "ok").read_text() == "ok\n"
    with pytest.raises(RunError):
        build(ctx, root, target="broken")


TARGETS = ("FROM busybox AS base\n"
           "RUN echo base > /base\n"
           "FROM base AS test\n"
           "RUN echo test > /test\n"
           "FROM busybox AS other\n"
           "RUN exit 3\n"
           "FROM base AS final\n"
           "COPY --from=test /test /t\n"
           "CMD [\"final\"]\n")


def test_target_builds_only_what_it_needs(root: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, TARGETS)
    built = build(ctx, root, target="test", tags=["t"])
    assert [(s.stage, s.line) for s in built.steps] == [("base", 2), ("test", 4)]
    fs = flatten(root, "t", tmp_path / "fs")
    assert (fs / "base").exists() and (fs / "test").exists() and not (fs / "t").exists()
    final = build(ctx, root, tags=["f"])
    assert [(s.stage, s.line, s.cached) for s in final.steps] == [
        ("base", 2, True), ("test", 4, True), ("final", 8, False)]
    fs = flatten(root, "f", tmp_path / "fs2")
    assert (fs / "t").read_text() == "test\n" and not (fs / "test").exists()
    assert final.result.config["config"]["Cmd"] == ["final"]


def test_no_cache_filter_rebuilds_only_named_stage(root: Path, tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, "FROM busybox AS deps\n"
                         "RUN echo deps > /deps\n"
                         "FROM busybox AS app\n"
                         "RUN echo app > /app\n"
                         "COPY --from=deps /deps /deps\n")
    build(ctx, root)
    second = build(ctx, root, no_cache_filter=["deps"])
    assert second.cached_by_line() == {2: False, 4: True, 5: True}
    assert "--no-cache-filter" in (second.step(2).reason or "")


def test_no_cache_filter_on_a_base_stage_invalidates_stages_built_on_it(
    root: Path, tmp_path: Path
) -> None:
    ctx = _ctx(tmp_path, "FROM busybox AS base\n"
                         "RUN cat /proc/sys/kernel/random/uuid > /stamp\n"
                         "FROM base AS app\n"
                         "RUN cat /stamp > /copy\n")
    build(ctx, root)
    second = build(ctx, root, no_cache_filter=["base"], tags=["nc"])
    assert second.cached_by_line() == {2: False, 4: False}
    fs = flatten(root, "nc", tmp_path / "fs")
    assert (fs / "stamp").read_text() == (fs / "copy").read_text()
