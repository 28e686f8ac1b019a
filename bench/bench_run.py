"""RUN steps: the fixed cost per step against Buildah's, and the snapshot work after a RUN.

    sudo .venv/bin/python bench/bench_run.py [--reps 5] [--workdir DIR] [--sizes 100,1000]

Needs root, runc, buildah (1.28 here) and a static busybox (tests/bases.py builds the base).

Part 1, fixed cost per RUN step: ``FROM busybox`` + 20 distinct ``RUN true N`` steps, cold
(the image and all build cache dropped, untimed, before every build), minus the same with
only ``RUN true 1``, divided by 19. Builders, interleaved within each repetition: dockyard
(CLI, runc; crun if it works here), ``buildah bud --isolation chroot --layers`` (the peer
benchmark's mode: no OCI runtime at all) and ``buildah bud --isolation oci --runtime runc
--network host --layers`` (the same runtime as dockyard). Wall time of the client process.
dockyard's own per-step time comes from its ``--progress rawjson`` events.

Part 2, snapshot work after ``RUN touch /one-file`` on a big rootfs: a base of busybox plus
``/data`` (files of 100 KiB; 100 MB = 1,000 files, 1 GB = 10,000 files) made with
``dockyard import``. Builds run in this process through ``dockyard.build(...)`` with timing
wrappers around the snapshotter's ``prepare``/``diff``/``commit``, the mount calls, the blob
commit (fsync + rename), the layer record and ``Executor.run``, so the figures are those of
the very snapshot the build made. Overlay (``touch`` of a new file, and of an existing
100 KiB file: a copy-up), and the native snapshotter for contrast.

Everything lives under ``--workdir`` (default /var/tmp/dockyard-bench-run); generated base
tarballs are kept there between runs, the stores are deleted at the end unless ``--keep``.
dockyard runs with bytecode caching on (``PYTHONPYCACHEPREFIX``, default
/var/tmp/dockyard-pycache, or ``$DOCKYARD_PYCACHE``), as ``bench/peers/dockyard.sh`` does.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parent.parent
TAG = "bench-run:latest"
FILE_SIZE = 100 * 1024
FILES_PER_DIR = 100


class BenchError(Exception):
    """A build or setup command failed."""


# ---------------------------------------------------------------------------- statistics
@dataclass(frozen=True)
class Stats:
    """Median, min and max of a series."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        """Summarize ``values`` (at least one)."""
        return cls(statistics.median(values), min(values), max(values))

    def text(self, digits: int = 3) -> str:
        """``median (min-max)``."""
        return f"{self.median:.{digits}f} ({self.low:.{digits}f}-{self.high:.{digits}f})"

    def ms(self) -> str:
        """The same in milliseconds."""
        return f"{self.median * 1e3:.1f} ({self.low * 1e3:.1f}-{self.high * 1e3:.1f})"


def sh(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output; raise BenchError with its tail on failure."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
        raise BenchError(f"{' '.join(argv)} failed ({proc.returncode}):\n{tail}")
    return proc


def dockyard_bin() -> str:
    """The dockyard CLI of the Python running this script (the repo's venv)."""
    cand = Path(sys.executable).parent / "dockyard"
    return str(cand) if cand.exists() else (shutil.which("dockyard") or "dockyard")


def busybox_tar() -> Path:
    """The test suite's busybox rootfs tarball (built once, cached)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bench_bases", REPO / "tests" / "bases.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path: Path = module.busybox_rootfs_tar()
    return path


# ---------------------------------------------------------------------------- builders
class Builder(Protocol):
    """One builder under test: how to load the base, build, and forget a build."""

    name: str

    def load_base(self, rootfs_tar: Path) -> None: ...
    def argv(self, ctx: Path) -> list[str]: ...
    def reset(self) -> None: ...
    def cached_steps(self, output: str) -> int: ...


class DockyardCli:
    """dockyard through its CLI, with its own store."""

    def __init__(self, root: Path, runtime: str) -> None:
        self.root = root
        self.runtime = runtime
        self.name = f"dockyard ({runtime})"
        self._bin = dockyard_bin()

    def _cmd(self, *args: str) -> list[str]:
        return [self._bin, "--root", str(self.root), *args]

    def load_base(self, rootfs_tar: Path) -> None:
        if sh(self._cmd("inspect", "busybox:latest"), check=False).returncode != 0:
            sh(self._cmd("import", str(rootfs_tar), "busybox:latest"))

    def argv(self, ctx: Path) -> list[str]:
        return self._cmd("build", "--progress", "rawjson", "--runtime", self.runtime,
                         "-t", TAG, str(ctx))

    def reset(self) -> None:
        sh(self._cmd("rmi", TAG), check=False)
        sh(self._cmd("cache", "prune", "--all"), check=False)
        sh(self._cmd("prune"), check=False)

    def cached_steps(self, output: str) -> int:
        return sum(1 for e in rawjson_events(output) if e.get("kind") == "vertex_cached")


class BuildahCli:
    """``buildah bud --layers`` with its own overlay store."""

    def __init__(self, root: Path, isolation: str, runtime: str | None = None) -> None:
        self.flags = ["--root", str(root / "root"), "--runroot", str(root / "run"),
                      "--storage-driver", "overlay"]
        self.isolation = isolation
        self.runtime = runtime
        self.name = f"buildah ({isolation}" + (f", {runtime})" if runtime else ")")

    def _cmd(self, *args: str) -> list[str]:
        return ["buildah", *self.flags, *args]

    def load_base(self, rootfs_tar: Path) -> None:
        if sh(self._cmd("inspect", "busybox:latest"), check=False).returncode == 0:
            return
        ctr = sh(self._cmd("from", "scratch")).stdout.strip()
        try:
            sh(self._cmd("add", ctr, str(rootfs_tar), "/"))
            sh(self._cmd("commit", "-q", ctr, "busybox:latest"))
        finally:
            sh(self._cmd("rm", ctr), check=False)

    def argv(self, ctx: Path) -> list[str]:
        extra = ["--isolation", self.isolation]
        if self.runtime:
            # --network host: otherwise buildah sets up a CNI bridge and iptables per step
            extra += ["--runtime", self.runtime, "--network", "host"]
        return self._cmd("bud", *extra, "--layers", "--pull=never", "-t", TAG, str(ctx))

    def reset(self) -> None:
        sh(self._cmd("rm", "-a"), check=False)
        sh(self._cmd("rmi", "-f", TAG), check=False)
        sh(self._cmd("rmi", "--prune"), check=False)

    def cached_steps(self, output: str) -> int:
        return output.count("Using cache")


def rawjson_events(output: str) -> list[dict[str, Any]]:
    """The JSON event lines of a ``--progress rawjson`` build output."""
    events = []
    for line in output.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
    return events


def timed_build(builder: Builder, ctx: Path) -> tuple[float, str]:
    """Reset (untimed), then time one cold build; returns (seconds, output)."""
    builder.reset()
    os.sync()  # earlier builds' writeback should not land in this one's timing
    argv = builder.argv(ctx)
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-8:])
        raise BenchError(f"{builder.name} failed on {ctx}:\n{tail}")
    cached = builder.cached_steps(output)
    if cached:
        raise BenchError(f"{builder.name}: {cached} steps came from the cache in a cold build")
    return elapsed, output


# RUN commands of part 1: ``true`` changes nothing (dockyard stores no layer for it, as
# BuildKit's exporter drops empty layers; buildah commits an image per step regardless),
# ``touch`` adds one empty file, so every builder writes and commits a real layer.
VARIANTS = {"true": "RUN true {i}", "touch": "RUN touch /f{i}"}


def make_run_contexts(work: Path, steps: int, variant: str) -> tuple[Path, Path]:
    """Contexts with 1 and ``steps`` distinct RUN steps of ``variant`` on busybox."""
    out = []
    for n in (1, steps):
        ctx = work / f"ctx-{variant}{n}"
        ctx.mkdir(parents=True, exist_ok=True)
        lines = ["FROM busybox"] + [VARIANTS[variant].format(i=i) for i in range(1, n + 1)]
        (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")
        out.append(ctx)
    return out[0], out[1]


def probe_failure(builder: Builder, ctx: Path) -> str | None:
    """None if ``builder`` builds ``ctx``, else the error it reports (one line)."""
    builder.reset()
    proc = subprocess.run(builder.argv(ctx), capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        return None
    lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    for event in rawjson_events(proc.stdout + "\n" + proc.stderr):
        if event.get("kind") == "vertex_error":
            return str(event["error"])
    for ln in lines:
        if "hybrid" in ln:  # the runtime's own reason, rather than the builder's summary
            return ln
    for ln in reversed(lines):
        if "error" in ln.lower() and not ln.startswith("{"):
            return ln
    return lines[-1] if lines else f"exit status {proc.returncode}"


@dataclass
class FixedCostResult:
    """Part 1 results for one builder and one RUN variant."""

    name: str
    variant: str
    one: list[float] = field(default_factory=list)
    many: list[float] = field(default_factory=list)
    per_step: list[float] = field(default_factory=list)
    vertex: list[float] = field(default_factory=list)  # dockyard: RUN vertex durations
    in_process: list[float] = field(default_factory=list)  # dockyard: build_finished.duration


def part1(
    work: Path, reps: int, steps: int, variants: Sequence[str]
) -> tuple[list[FixedCostResult], dict[str, str]]:
    """Fixed cost per RUN step for every builder that works here."""
    bb = busybox_tar()
    contexts = {v: make_run_contexts(work, steps, v) for v in variants}
    candidates: list[Builder] = [
        DockyardCli(work / "dockyard-p1", "runc"),
        DockyardCli(work / "dockyard-p1", "crun"),
        BuildahCli(work / "buildah", "chroot"),
        BuildahCli(work / "buildah", "oci", "runc"),
        BuildahCli(work / "buildah", "oci", "crun"),
    ]
    builders: list[Builder] = []
    failures: dict[str, str] = {}
    for b in candidates:
        b.load_base(bb)
        why = probe_failure(b, contexts[variants[0]][0])
        if why is None:
            builders.append(b)
        else:
            failures[b.name] = why
            print(f"  {b.name}: does not run here: {why}", flush=True)
    results = {(v, b.name): FixedCostResult(b.name, v) for v in variants for b in builders}
    for rep in range(reps):
        # rotate the order so no builder always follows the same neighbour
        order = builders[rep % len(builders):] + builders[:rep % len(builders)]
        for b in order:
            for v in variants:
                r = results[(v, b.name)]
                ctx1, ctxn = contexts[v]
                t1, _ = timed_build(b, ctx1)
                tn, out = timed_build(b, ctxn)
                r.one.append(t1)
                r.many.append(tn)
                r.per_step.append((tn - t1) / (steps - 1))
                if isinstance(b, DockyardCli):
                    events = rawjson_events(out)
                    runs = {e["vertex"] for e in events if e.get("kind") == "vertex_started"
                            and e.get("instruction") == "RUN"}
                    r.vertex += [e["duration"] for e in events
                                 if e.get("kind") == "vertex_done" and e["vertex"] in runs]
                    r.in_process += [e["duration"] for e in events
                                     if e.get("kind") == "build_finished"]
                print(f"  rep {rep + 1}/{reps} {b.name} RUN {v}: 1 step {t1:.2f}s, "
                      f"{steps} steps {tn:.2f}s", flush=True)
    for b in builders:
        b.reset()
    return list(results.values()), failures


def report_part1(results: list[FixedCostResult], failures: dict[str, str], steps: int,
                 reps: int) -> list[str]:
    """Markdown lines for part 1."""
    out = [
        f"### Fixed cost per RUN step ({reps} reps, median (min-max), seconds)",
        "",
        f"| RUN | builder | 1 RUN, cold | {steps} RUN, cold | per RUN step "
        "| dockyard / this builder |",
        "|---|---|---|---|---|---|",
    ]
    by_key = {(r.variant, r.name): r for r in results}
    for r in results:
        mine = by_key.get((r.variant, "dockyard (runc)"))
        ratio = "-"
        if mine is not None and mine is not r:
            # paired per repetition: both ran in the same round
            ratio = Stats.of([a / b for a, b in zip(mine.per_step, r.per_step,
                                                    strict=True)]).text(2)
        out.append(
            f"| `{VARIANTS[r.variant].format(i='N')}` | {r.name} | {Stats.of(r.one).text(2)} "
            f"| {Stats.of(r.many).text(2)} | **{Stats.of(r.per_step).text(3)}** | {ratio} |"
        )
    for name, why in failures.items():
        out.append(f"| any | {name} | does not run here: {why} | | | |")
    for r in results:
        if r.vertex:
            overhead = [m - p for m, p in zip(r.many, r.in_process, strict=True)]
            out += [
                "",
                f"{r.name}, `{VARIANTS[r.variant].format(i='N')}`, from its rawjson events: "
                f"a RUN vertex (VertexStarted -> VertexDone) takes "
                f"{Stats.of(r.vertex).text(3)} s over all {len(r.vertex)} RUN steps; the "
                f"{steps}-RUN build takes {Stats.of(r.in_process).text(2)} s in-process, so "
                f"process start-up, imports and exit add {Stats.of(overhead).text(2)} s.",
            ]
    return out


# ---------------------------------------------------------------------------- part 2
def make_big_tar(work: Path, megabytes: int, base_tar: Path) -> Path:
    """busybox + ``/data`` with ``megabytes`` MB in 100 KiB files, as one rootfs tarball."""
    out = work / f"rootfs-{megabytes}mb.tar"
    if out.exists():
        return out
    count = megabytes * 1_000_000 // FILE_SIZE
    rng = random.Random(megabytes)
    pool = rng.randbytes(4 * 1024 * 1024)
    tmp = out.with_suffix(".partial")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as dst:
        with tarfile.open(base_tar) as src:
            for m in src:
                dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        dirs: set[str] = set()
        for i in range(count):
            d = f"data/d{i // FILES_PER_DIR:03d}"
            if d not in dirs:
                if not dirs:
                    dst.addfile(_dir_info("data"))
                dirs.add(d)
                dst.addfile(_dir_info(d))
            info = tarfile.TarInfo(f"{d}/f{i:05d}")
            info.size = FILE_SIZE
            info.mode = 0o644
            info.mtime = 1_700_000_000
            off = rng.randrange(len(pool) - FILE_SIZE)
            dst.addfile(info, io.BytesIO(pool[off:off + FILE_SIZE]))
    os.replace(tmp, out)
    return out


def _dir_info(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = 1_700_000_000
    return info


class Probe:
    """Wraps functions/methods so that the duration of every call made while :attr:`active`
    is recorded under a label (the build's own config/manifest writes stay out)."""

    def __init__(self) -> None:
        self.active = False
        self.times: dict[str, list[float]] = defaultdict(list)
        self._saved: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        """Replace ``owner.attr`` by a timing wrapper (undone by :meth:`restore`)."""
        original = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
        times = self.times[label]

        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self.active:
                return original(*args, **kwargs)
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                times.append(time.perf_counter() - start)

        setattr(owner, attr, timed)
        self._saved.append((owner, attr, original))

    def restore(self) -> None:
        """Put every wrapped function back."""
        for owner, attr, original in reversed(self._saved):
            setattr(owner, attr, original)
        self._saved.clear()

    def take(self) -> dict[str, float]:
        """Total seconds per label since the last call; clears the record."""
        totals = {label: sum(v) for label, v in self.times.items()}
        for v in self.times.values():
            v.clear()
        return totals


# label -> (module, owner attribute or None for a module function, function name)
_WRAPPED: tuple[tuple[str, str, str | None, str], ...] = (
    ("ensure parent", "dockyard.solver.snapshots", "LayerSnapshots", "ensure"),
    ("prepare", "dockyard.snapshot.overlay", "OverlaySnapshotter", "prepare"),
    ("prepare", "dockyard.snapshot.native", "NativeSnapshotter", "prepare"),
    ("mount", "dockyard.snapshot.base", None, "mount_all"),
    ("unmount", "dockyard.snapshot.base", None, "unmount"),
    ("runtime (Executor.run)", "dockyard.executor.run", "Executor", "run"),
    ("diff (tar + sha256)", "dockyard.snapshot.overlay", "OverlaySnapshotter", "diff"),
    ("diff (tar + sha256)", "dockyard.snapshot.native", "NativeSnapshotter", "diff"),
    ("blob commit (fsync)", "dockyard.store.blobs", "BlobWriter", "commit"),
    ("layer record", "dockyard.store.db", "Store", "put_layer"),
    ("snapshot commit", "dockyard.snapshot.overlay", "OverlaySnapshotter", "commit"),
    ("snapshot commit", "dockyard.snapshot.native", "NativeSnapshotter", "commit"),
    ("cache record", "dockyard.store.db", "Store", "put_cache_record"),
)
BEFORE = ("ensure parent", "prepare", "mount")
AFTER = ("unmount", "diff (tar + sha256)", "blob commit (fsync)", "layer record",
         "snapshot commit")


@contextlib.contextmanager
def probing() -> Iterator[Probe]:
    """A :class:`Probe` with every function of ``_WRAPPED`` wrapped."""
    import importlib

    probe = Probe()
    try:
        for label, module_name, owner_name, func in _WRAPPED:
            module = importlib.import_module(module_name)
            owner = getattr(module, owner_name) if owner_name else module
            probe.wrap(owner, func, label)
        yield probe
    finally:
        probe.restore()


@dataclass
class SnapshotCase:
    """Part 2: one (rootfs size, snapshotter, RUN command) series."""

    size_mb: int
    snapshotter: str
    command: str
    rows: list[dict[str, float]] = field(default_factory=list)


def _one_build(root: Path, ctx: Path, snapshotter: str, probe: Probe) -> dict[str, float]:
    import dockyard
    from dockyard.progress.events import Event, VertexDone, VertexStarted

    run_vertices: set[int] = set()
    vertex_time: list[float] = []

    def on_event(event: Event) -> None:
        if isinstance(event, VertexStarted) and event.instruction == "RUN":
            run_vertices.add(event.vertex)
            probe.active = True
        elif isinstance(event, VertexDone) and event.vertex in run_vertices:
            vertex_time.append(event.duration)
            probe.active = False

    probe.take()
    try:
        dockyard.build(ctx, root=root, tags=[TAG], no_cache=True, snapshotter=snapshotter,
                       runtime="runc", on_event=on_event)
    finally:
        probe.active = False
    row = probe.take()
    row["RUN vertex"] = sum(vertex_time)
    row["before RUN"] = sum(row.get(k, 0.0) for k in BEFORE)
    row["after RUN"] = sum(row.get(k, 0.0) for k in AFTER)
    return row


def part2(work: Path, reps: int, sizes: Sequence[int]) -> list[SnapshotCase]:
    """Snapshot work of a one-file RUN on rootfs of each size, overlay and native."""
    bb = busybox_tar()
    cases: list[SnapshotCase] = []
    commands = {"overlay": ("touch /one-file", "touch /data/d000/f00000"),
                "native": ("touch /one-file",)}
    for snapshotter, cmds in commands.items():
        root = work / f"dockyard-p2-{snapshotter}"
        for size in sizes:
            tar = make_big_tar(work, size, bb) if size else bb
            image = f"big:{size}mb"
            t0 = time.perf_counter()
            sh([dockyard_bin(), "--root", str(root), "import", str(tar), image])
            print(f"  {snapshotter} {size} MB: import {time.perf_counter() - t0:.1f}s",
                  flush=True)
            for cmd in cmds:
                if size == 0 and "/data/" in cmd:
                    continue  # busybox alone has no /data
                ctx = work / f"ctx-{size}-{cmd.split()[-1].strip('/').replace('/', '-')}"
                ctx.mkdir(parents=True, exist_ok=True)
                (ctx / "Dockerfile").write_text(f"FROM {image}\nRUN {cmd}\n")
                case = SnapshotCase(size, snapshotter, cmd)
                with probing() as probe:
                    # warm-up: unpacks the base layer into its snapshot (once per store)
                    t0 = time.perf_counter()
                    _one_build(root, ctx, snapshotter, probe)
                    print(f"  {snapshotter} {size} MB {cmd!r}: warm-up "
                          f"{time.perf_counter() - t0:.1f}s", flush=True)
                    forget(root)
                    for _ in range(reps):
                        case.rows.append(_one_build(root, ctx, snapshotter, probe))
                        forget(root)
                cases.append(case)
                print(f"    after RUN {Stats.of([r['after RUN'] for r in case.rows]).ms()} ms",
                      flush=True)
    return cases


def forget(root: Path) -> None:
    """Drop the bench image, the build cache and their snapshots (the bases stay).

    The next build then commits its snapshot again (a layer equal to a stored one would not
    be committed twice); native snapshots are full copies, so this also bounds the disk use.
    """
    sh([dockyard_bin(), "--root", str(root), "rmi", TAG], check=False)
    sh([dockyard_bin(), "--root", str(root), "cache", "prune", "--all"], check=False)
    sh([dockyard_bin(), "--root", str(root), "prune"], check=False)
    os.sync()


def report_part2(cases: list[SnapshotCase], reps: int) -> list[str]:
    """Markdown lines for part 2."""
    cols = ["RUN vertex", "runtime (Executor.run)", "before RUN", "after RUN",
            "diff (tar + sha256)", "blob commit (fsync)", "snapshot commit", "prepare"]
    out = [
        f"### Snapshot work of a one-file RUN ({reps} reps, runc, median (min-max), ms)",
        "",
        "| rootfs | snapshotter | RUN | " + " | ".join(cols) + " |",
        "|---" * (3 + len(cols)) + "|",
    ]
    for c in cases:
        size = f"{c.size_mb} MB" if c.size_mb else "busybox (2 MB)"
        cells = [Stats.of([r.get(k, 0.0) for r in c.rows]).ms() for k in cols]
        out.append(f"| {size} | {c.snapshotter} | `{c.command}` | " + " | ".join(cells) + " |")
    out += [
        "",
        "before RUN = " + " + ".join(BEFORE) + "; after RUN = " + " + ".join(AFTER) + ".",
        "",
        "Every timed call within the RUN step, median ms:",
        "",
        "| call | " + " | ".join(_case_title(c) for c in cases) + " |",
        "|---" * (1 + len(cases)) + "|",
    ]
    labels = list(dict.fromkeys(label for label, *_ in _WRAPPED))
    for label in labels:
        cells = [f"{statistics.median([r.get(label, 0.0) for r in c.rows]) * 1e3:.1f}"
                 for c in cases]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return out


def _case_title(c: SnapshotCase) -> str:
    size = f"{c.size_mb} MB" if c.size_mb else "2 MB"
    what = "new file" if c.command == "touch /one-file" else "copy-up"
    return f"{size} {c.snapshotter} {what}"


def runc_floor(work: Path, count: int) -> list[float]:
    """Seconds per bare ``runc run`` of busybox's ``true`` (``runc spec`` defaults without a
    network namespace or terminal): the runtime's own share of a RUN step."""
    bundle = work / "runc-floor"
    shutil.rmtree(bundle, ignore_errors=True)
    (bundle / "rootfs").mkdir(parents=True)
    with tarfile.open(busybox_tar()) as tf:
        tf.extractall(bundle / "rootfs", filter="fully_trusted")
    sh(["runc", "spec", "--bundle", str(bundle)])
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["/bin/true"]
    spec["root"] = {"path": str(bundle / "rootfs"), "readonly": False}
    spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"]
                                   if n["type"] != "network"]
    (bundle / "config.json").write_text(json.dumps(spec))
    state = work / "runc-floor-state"
    times = []
    try:
        for i in range(count):
            start = time.perf_counter()
            sh(["runc", "--root", str(state), "run", "--bundle", str(bundle), f"floor-{i}"])
            times.append(time.perf_counter() - start)
    finally:
        for i in range(count):
            sh(["runc", "--root", str(state), "delete", "--force", f"floor-{i}"], check=False)
        shutil.rmtree(bundle, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)
    return times


def main(argv: Sequence[str] | None = None) -> int:
    """Run both parts and print the markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="RUN steps in the long build")
    parser.add_argument("--variants", default="true,touch",
                        help="part 1 RUN commands: true (no change), touch (one new file)")
    parser.add_argument("--sizes", default="100,1000",
                        help="rootfs sizes in MB for part 2 (0 = busybox alone)")
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/dockyard-bench-run"))
    parser.add_argument("--only", choices=("1", "2"), help="run one part")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--keep", action="store_true", help="keep the stores afterwards")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_run.py needs root (mounts, runc, buildah)", file=sys.stderr)
        return 2
    # As bench/peers/dockyard.sh: this machine sets PYTHONDONTWRITEBYTECODE=1, which would
    # make every timed CLI run compile all of dockyard (an installed one never does).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = os.environ.get("DOCKYARD_PYCACHE",
                                                       "/var/tmp/dockyard-pycache")
    work: Path = args.workdir.absolute()
    work.mkdir(parents=True, exist_ok=True)
    stores = [work / "dockyard-p1", work / "dockyard-p2-overlay", work / "dockyard-p2-native",
              work / "buildah"]
    cleanup_stores(stores)
    started = time.perf_counter()
    lines: list[str] = [f"host: {os.cpu_count()} cpus, kernel {os.uname().release}; "
                        f"{tool_versions()}", ""]
    raw: dict[str, Any] = {}
    try:
        if args.only in (None, "1"):
            print("part 1: fixed cost per RUN step", flush=True)
            variants = [v for v in args.variants.split(",") if v in VARIANTS]
            res, failures = part1(work, args.reps, args.steps, variants)
            lines += [*report_part1(res, failures, args.steps, args.reps), ""]
            floor = runc_floor(work, 4 * args.reps)
            lines += [f"Bare `runc run` of busybox `/bin/true` (no dockyard): "
                      f"{Stats.of(floor).text(3)} s over {len(floor)} runs.", ""]
            raw["runc_floor"] = floor
            raw["part1"] = {"results": [r.__dict__ for r in res], "failures": failures}
        if args.only in (None, "2"):
            print("part 2: snapshot work after a one-file RUN", flush=True)
            sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
            cases = part2(work, args.reps, sizes)
            lines += report_part2(cases, args.reps)
            raw["part2"] = [c.__dict__ for c in cases]
    finally:
        if not args.keep:
            cleanup_stores(stores)
    lines += ["", f"(bench took {time.perf_counter() - started:.0f} s)"]
    print("\n" + "\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1))
    return 0


def tool_versions() -> str:
    """runc, crun and buildah versions, one line."""
    found = []
    for tool in ("runc", "crun", "buildah"):
        if shutil.which(tool):
            first = sh([tool, "--version"], check=False).stdout.splitlines()
            found.append(first[0] if first else tool)
    return "; ".join(found)


def cleanup_stores(stores: Sequence[Path]) -> None:
    """Delete bench stores, unmounting whatever a killed earlier run left mounted."""
    for store in stores:
        if not store.exists():
            continue
        if store.name == "buildah":
            sh(["buildah", "--root", str(store / "root"), "--runroot", str(store / "run"),
                "--storage-driver", "overlay", "rm", "-a"], check=False)
            sh(["buildah", "--root", str(store / "root"), "--runroot", str(store / "run"),
                "--storage-driver", "overlay", "rmi", "-a", "-f"], check=False)
        prefix = str(store) + "/"
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            points = [ln.split()[4] for ln in f if ln.split()[4].startswith(prefix)]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
        shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
