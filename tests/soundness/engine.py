"""The soundness runner: build after every mutation in one store, and compare each result with
a ``--no-cache`` build of the same inputs in a fresh store.

What is compared (:func:`compare`): the image config without its times (``created``, the
history's ``created``) and each layer's entries without their times (name, type, mode,
owner, size, content digest, link target, device numbers, xattrs and other PAX records) in
order: the diff ids "all but the times". With ``SOURCE_DATE_EPOCH`` set the times are
clamped, so the diff ids, the image id (config digest) and the manifest digest must be equal
too. A build must also leave its context as it found it.

Incremental builds run the real CLI in-process (``dockyard.cli.main.main``), so the
build-level up-to-date check (``dockyard.quick``) is under test as well; a build that must
be interrupted by an edit runs through ``dockyard.build`` with an event hook. Fresh builds
are shared: their summaries are kept by the digest of all inputs (the tree, the options,
what each tag points to), so an input state is built fresh only once per process.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import http.server
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from . import corpus, mutations, tree
from .corpus import VARIANTS, Project
from .mutations import State

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

TIME_KEYS = frozenset({"mtime", "atime", "ctime"})


# ----------------------------------------------------------------------------- images


@dataclass(frozen=True)
class LayerSummary:
    """One layer's entries with the times left out, and their digest."""

    digest: str
    entries: tuple[str, ...]


@dataclass(frozen=True)
class ImageSummary:
    """What the comparison looks at."""

    image_id: str
    manifest_digest: str
    config: Mapping[str, Any]
    diff_ids: tuple[str, ...]
    layers: tuple[LayerSummary, ...]


_layer_memo: dict[str, LayerSummary] = {}


def summarize(archive: Path) -> ImageSummary:
    """Read a docker/OCI archive as ``dockyard save`` and ``-o type=docker`` write it."""
    with tarfile.open(archive) as tf:
        manifest = json.load(_member(tf, "manifest.json"))[0]
        index = json.load(_member(tf, "index.json"))
        config_bytes = _member(tf, manifest["Config"]).read()
        layers = []
        for name in manifest["Layers"]:
            diff_id = "sha256:" + name.rsplit("/", 1)[-1]
            if diff_id not in _layer_memo:
                _layer_memo[diff_id] = _layer_summary(_member(tf, name))
            layers.append(_layer_memo[diff_id])
    config = json.loads(config_bytes)
    return ImageSummary(
        image_id="sha256:" + hashlib.sha256(config_bytes).hexdigest(),
        manifest_digest=index["manifests"][0]["digest"],
        config=config,
        diff_ids=tuple(config.get("rootfs", {}).get("diff_ids", [])),
        layers=tuple(layers),
    )


def _member(tf: tarfile.TarFile, name: str) -> io.BufferedReader:
    f = tf.extractfile(name)
    if f is None:
        raise ValueError(f"{name} is not a file in the archive")
    return f  # type: ignore[return-value]


def _layer_summary(f: Any) -> LayerSummary:
    entries = []
    with tarfile.open(fileobj=f, mode="r|") as layer:
        for m in layer:
            pax = {k: v for k, v in sorted(m.pax_headers.items()) if k not in TIME_KEYS}
            fields = [m.name, m.type.decode(), f"{m.mode:o}", f"{m.uid}:{m.gid}",
                      m.uname, m.gname, str(m.size), m.linkname,
                      f"{m.devmajor},{m.devminor}", json.dumps(pax, sort_keys=True)]
            if m.isreg():
                data = layer.extractfile(m)
                fields.append(hashlib.sha256(data.read() if data else b"").hexdigest())
            entries.append(" ".join(fields))
    digest = hashlib.sha256("\n".join(entries).encode("utf-8", "surrogateescape")).hexdigest()
    return LayerSummary(digest, tuple(entries))


def timeless_config(config: Mapping[str, Any], keep_diff_ids: bool) -> dict[str, Any]:
    out = json.loads(json.dumps(config))
    out.pop("created", None)
    for h in out.get("history") or []:
        h.pop("created", None)
    if not keep_diff_ids:
        out.get("rootfs", {}).pop("diff_ids", None)
    return out


def compare(got: ImageSummary, fresh: ImageSummary, exact: bool) -> list[str]:
    """The differences between an incremental result and the fresh one (empty: equal).
    ``exact`` (SOURCE_DATE_EPOCH set): the digests must be equal too."""
    diffs: list[str] = []
    a, b = timeless_config(got.config, exact), timeless_config(fresh.config, exact)
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            diffs.append(f"config {key}: {json.dumps(a.get(key))[:300]} != fresh "
                         f"{json.dumps(b.get(key))[:300]}")
    if len(got.layers) != len(fresh.layers):
        diffs.append(f"{len(got.layers)} layers != fresh {len(fresh.layers)}")
    for i, (la, lb) in enumerate(zip(got.layers, fresh.layers, strict=False)):
        if la.digest != lb.digest:
            only_a = [e for e in la.entries if e not in set(lb.entries)]
            only_b = [e for e in lb.entries if e not in set(la.entries)]
            diffs.append(f"layer {i} (times aside) differs: cached-side only {only_a[:6]}, "
                         f"fresh only {only_b[:6]}")
    if exact and not diffs:
        if got.diff_ids != fresh.diff_ids:
            diffs.append(f"diff ids differ with SOURCE_DATE_EPOCH set: {got.diff_ids} != "
                         f"fresh {fresh.diff_ids}")
        if got.image_id != fresh.image_id:
            diffs.append(f"image id {got.image_id} != fresh {fresh.image_id} "
                         "with SOURCE_DATE_EPOCH set")
        if got.manifest_digest != fresh.manifest_digest:
            diffs.append(f"manifest digest {got.manifest_digest} != fresh "
                         f"{fresh.manifest_digest} with SOURCE_DATE_EPOCH set")
    return diffs


# ----------------------------------------------------------------------------- stores


def _cli(root: Path, *args: str) -> tuple[int, str]:
    """``dockyard --root ROOT ARGS`` in this process; (exit code, stdout+stderr)."""
    from dockyard.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(["--root", str(root), *args])
    if code == 130:  # SIGINT/SIGTERM during the build: stop the run, not just this step
        raise KeyboardInterrupt(out.getvalue()[-200:])
    return code, out.getvalue()


def _checked(root: Path, *args: str) -> str:
    code, out = _cli(root, *args)
    if code != 0:
        raise RuntimeError(f"dockyard {' '.join(args)} failed ({code}):\n{out[-3000:]}")
    return out


def _base_tar(variant: corpus.BaseVariant, dest: Path) -> Path:
    from bases import busybox_rootfs_tar

    out = dest / f"{variant.name}.tar"
    if variant.busybox:
        shutil.copyfile(busybox_rootfs_tar(), out)
        mode = "a"
    else:
        mode = "w"
    with tarfile.open(out, mode, format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({str(Path(p).parent) for p in variant.extra} - {"."})
        if not variant.busybox:
            for d in dirs:
                info = tarfile.TarInfo(f"./{d}")
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, tree.T0
                tar.addfile(info)
        for path, content in sorted(variant.extra.items()):
            data = content.encode()
            info = tarfile.TarInfo(f"./{path}")
            info.size, info.mode, info.mtime = len(data), 0o644, tree.T0
            tar.addfile(info, io.BytesIO(data))
    return out


_template: Path | None = None


def template_store(work: Path) -> Path:
    """A store with every base variant imported (made once per process)."""
    global _template
    if _template is not None and _template.exists():
        return _template
    root = work / "template-store"
    shutil.rmtree(root, ignore_errors=True)
    tars = work / "base-tars"
    tars.mkdir(parents=True, exist_ok=True)
    for variant in corpus.BASES:
        changes = [a for c in variant.changes for a in ("-c", c)]
        _checked(root, "import", *changes, str(_base_tar(variant, tars)), variant.name)
    _template = root
    return root


def copy_store(src: Path, dest: Path) -> Path:
    subprocess.run(["cp", "-a", str(src), str(dest)], check=True)
    return dest


# ----------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _process_inputs(state: State) -> Iterator[None]:
    """The caller's umask and environment as the state says, for one build."""
    saved_env = dict(os.environ)
    for name in ("DOCKYARD_NO_QUICK", "SOURCE_DATE_EPOCH", "SOUND_NOISE"):
        os.environ.pop(name, None)
    for name in state.env_args:
        os.environ.pop(name, None)
    os.environ.update(state.env)
    if state.sde and state.sde_via == "env":
        os.environ["SOURCE_DATE_EPOCH"] = state.sde
    old_umask = os.umask(state.umask)
    try:
        yield
    finally:
        os.umask(old_umask)
        os.environ.clear()
        os.environ.update(saved_env)


def build_argv(project: Project, state: State, ctx: Path, tag: str) -> list[str]:
    argv = ["build", "-t", tag, "--progress", "plain"]
    for k, v in sorted(state.args.items()):
        argv += ["--build-arg", f"{k}={v}"]
    for k in state.env_args:
        argv += ["--build-arg", k]
    if state.sde and state.sde_via == "arg":
        argv += ["--build-arg", f"SOURCE_DATE_EPOCH={state.sde}"]
    if state.network != "default":
        argv += ["--network", state.network]
    if state.target:
        argv += ["--target", state.target]
    return [*argv, str(ctx)]


class _Served(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        data = self.files.get(self.path.lstrip("/"))
        if data is None:
            self.send_error(404)
            return
        etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", etag)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


# ----------------------------------------------------------------------------- the runner


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "(no output)"


@dataclass
class Failure:
    """One difference found: where, after what, and how to replay it."""

    seed: int
    step: int
    project: str
    kind: str
    mutation: str
    problems: list[str]
    log_tail: str = ""

    def render(self) -> str:
        lines = [f"seed {self.seed} step {self.step}: project {self.project}, "
                 f"after {self.kind} ({self.mutation}):"]
        lines += [f"  - {p}" for p in self.problems]
        if self.log_tail:
            lines += ["  build output (tail):", *["    " + ln for ln in
                                                   self.log_tail.splitlines()[-25:]]]
        return "\n".join(lines)


@dataclass
class Stats:
    steps: int = 0
    builds: int = 0
    fresh_builds: int = 0
    fresh_reused: int = 0
    quick_hits: int = 0
    steps_cached: int = 0
    steps_missed: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def line(self) -> str:
        return (f"{self.steps} mutation steps, {self.builds} incremental builds "
                f"({self.quick_hits} answered by the up-to-date check; steps {self.steps_cached}"
                f" cached / {self.steps_missed} missed), {self.fresh_builds} fresh builds "
                f"({self.fresh_reused} reused by input digest), {self.seconds:.0f} s")


_fresh_cache: dict[str, ImageSummary | str] = {}
_tagged: dict[tuple[tuple[str, str], ...], Path] = {}


class Runner:
    """One store for incremental builds; fresh stores on demand; one episode at a time."""

    def __init__(self, work: Path, excluded: Mapping[str, str] | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.excluded = dict(excluded or {})
        self.log = log or (lambda _line: None)
        self.template = template_store(work.parent if work.parent.name else work)
        self.store = copy_store(self.template, work / "store")
        self.stats = Stats()
        self.failures: list[Failure] = []
        self._store_tags: dict[str, str] = {}
        self._server: http.server.ThreadingHTTPServer | None = None
        self._coarse: Path | None = None
        self._unique = 0
        self._quick_hit = False
        self._patch_quick()

    # -- lifecycle
    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._coarse is not None:
            subprocess.run(["umount", str(self._coarse)], check=False, capture_output=True)
        import dockyard.quick as quick

        if getattr(quick.try_build, "_sound_original", None):
            quick.try_build = quick.try_build._sound_original  # type: ignore[attr-defined]

    def _patch_quick(self) -> None:
        """Count the builds the up-to-date check answered (an observation, not a change)."""
        import dockyard.quick as quick

        original = getattr(quick.try_build, "_sound_original", quick.try_build)

        def counting(argv: list[str], root: str) -> int | None:
            code = original(argv, root)
            self._quick_hit = code is not None
            return code

        counting._sound_original = original  # type: ignore[attr-defined]
        quick.try_build = counting

    def _url_base(self) -> str:
        if self._server is None:
            self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Served)
            threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def coarse_root(self) -> Path:
        """A filesystem with 1-second timestamps: ext4 with 128-byte inodes, loop-mounted."""
        if self._coarse is None:
            image = self.work / "coarse.img"
            mnt = self.work / "coarse"
            mnt.mkdir(exist_ok=True)
            with open(image, "wb") as f:
                f.truncate(64 << 20)
            subprocess.run(["mkfs.ext4", "-q", "-F", "-I", "128", str(image)], check=True,
                           capture_output=True)
            subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True,
                           capture_output=True)
            self._coarse = mnt
        return self._coarse

    # -- episodes
    def start(self, project: Project, seed: int, coarse: bool = False) -> Episode:
        root = self.coarse_root() if coarse else self.work
        ctx = root / f"ctx-{project.name}"
        if ctx.exists():
            shutil.rmtree(ctx)
        ctx.mkdir()
        project.make(ctx)
        state = State.initial(project)
        state.coarse = coarse
        if project.url_files:
            state.args["URL_BASE"] = self._url_base()
        return Episode(self, project, ctx, state, seed)

    def set_tags(self, root: Path, tags: Mapping[str, str], known: dict[str, str]) -> None:
        for tag, variant in sorted(tags.items()):
            if known.get(tag) != variant:
                _checked(root, "tag", variant, tag)
                known[tag] = variant

    def tagged_template(self, tags: Mapping[str, str]) -> Path:
        """The template store with ``tags`` set (made once per mapping and process)."""
        key = tuple(sorted(tags.items()))
        found = _tagged.get(key)
        if found is None or not found.exists():
            dest = self.template.parent / f"tagged-{len(_tagged)}"
            shutil.rmtree(dest, ignore_errors=True)
            found = copy_store(self.template, dest)
            self.set_tags(found, tags, {})
            _tagged[key] = found
        return found

    def serve(self, state: State, project: Project) -> None:
        _Served.files = {name: tmpl.format(v=state.url_variant[name]).encode()
                         for name, tmpl in project.url_files.items()}

    # -- builds
    def inputs_digest(self, project: Project, state: State, ctx: Path) -> str:
        return hashlib.sha256(json.dumps({
            "project": project.name, "tree": tree.tree_digest(ctx), **state.describe(),
        }, sort_keys=True).encode()).hexdigest()

    def fresh(self, project: Project, state: State, ctx: Path) -> tuple[str, ImageSummary | str]:
        """The fresh result of the current inputs: an ImageSummary, or the error text."""
        digest = self.inputs_digest(project, state, ctx)
        cached = _fresh_cache.get(digest)
        if cached is not None:
            self.stats.fresh_reused += 1
            return digest, cached
        self.stats.fresh_builds += 1
        root = copy_store(self.tagged_template(state.tags),
                          Path(tempfile.mkdtemp(dir=self.work, prefix="fresh-")) / "store")
        try:
            out = root.parent / "fresh.tar"
            self.serve(state, project)
            argv = build_argv(project, state, ctx, f"sound/{project.name}")
            argv[1:1] = ["--no-cache", "-o", f"type=docker,dest={out}"]
            with _process_inputs(state):
                code, text = _cli(root, *argv)
            result: ImageSummary | str = summarize(out) if code == 0 else text[-3000:]
            out.unlink(missing_ok=True)
        finally:
            shutil.rmtree(root.parent, ignore_errors=True)
        _fresh_cache[digest] = result
        return digest, result

    def build(self, project: Project, state: State, ctx: Path) -> tuple[int, str]:
        """The incremental build, through the CLI (so the up-to-date check runs first)."""
        self.set_tags(self.store, state.tags, self._store_tags)
        self.serve(state, project)
        self._quick_hit = False
        with _process_inputs(state):
            code, text = _cli(self.store, *build_argv(project, state, ctx,
                                                      f"sound/{project.name}"))
        self.stats.builds += 1
        self.stats.quick_hits += self._quick_hit
        self.stats.steps_cached += text.count(" CACHED")
        self.stats.steps_missed += text.count("CACHE MISS")
        return code, text

    def build_with_hook(self, project: Project, state: State, ctx: Path,
                        hook: Callable[[Any], None]) -> tuple[int, str]:
        """The incremental build through ``dockyard.build``, ``hook`` seeing every event."""
        import dockyard
        from dockyard.dockerfile.stages import parse_build_args

        self.set_tags(self.store, state.tags, self._store_tags)
        self.serve(state, project)
        argv = build_argv(project, state, ctx, "")
        items = [argv[i + 1] for i, a in enumerate(argv) if a == "--build-arg"]
        self.stats.builds += 1
        with _process_inputs(state):
            try:
                dockyard.build(ctx, tags=[f"sound/{project.name}"], root=self.store,
                               build_args=parse_build_args(items), target=state.target,
                               network=state.network, on_event=hook)
            except dockyard.DockyardError as err:
                return 1, str(err)
        return 0, ""

    def export(self, project: Project) -> ImageSummary:
        out = self.work / "incremental.tar"
        _checked(self.store, "save", "-o", str(out), f"sound/{project.name}")
        try:
            return summarize(out)
        finally:
            out.unlink(missing_ok=True)

    def next_unique(self) -> str:
        self._unique += 1
        return "defghijklmnopqrstuvwxyz"[self._unique % 23]


@dataclass
class Episode:
    """One project's context, its inputs, and the builds of its mutation steps."""

    runner: Runner
    project: Project
    ctx: Path
    state: State
    seed: int
    step_no: int = 0
    saved: list[tuple[int, Path, State]] = field(default_factory=list)
    order: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self.order = random.Random(self.seed ^ 0x5EED)

    def check(self, kind: str, mutation: str, fresh_first: bool | None = None) -> list[str]:
        """Build (incrementally) and compare with the fresh build of the same inputs.

        The order of the two builds is drawn: with the fresh build first, the incremental
        one starts well after the mutation (the up-to-date check may then write its record);
        with it second, it starts within milliseconds of the mutation (a racy walk)."""
        r, p, s = self.runner, self.project, self.state
        if fresh_first is None:
            fresh_first = self.order.random() < 0.5
        problems: list[str] = []
        before = tree.tree_digest(self.ctx)
        if fresh_first:
            _, fresh = r.fresh(p, s, self.ctx)
            if tree.tree_digest(self.ctx) != before:
                problems.append("the fresh build changed its context")
        code, log = r.build(p, s, self.ctx)
        after = tree.tree_digest(self.ctx)
        if after != before:
            problems.append("the build changed its context")
        if not fresh_first:
            _, fresh = r.fresh(p, s, self.ctx)
            if tree.tree_digest(self.ctx) != after:
                problems.append("the fresh build changed its context")
        if code != 0:
            error = _last_line(log)
            if not (p.may_fail and isinstance(fresh, str) and _last_line(fresh) == error):
                problems.append(f"the incremental build failed: {error}")
                if isinstance(fresh, str):
                    problems.append(f"the fresh build failed too: {_last_line(fresh)}")
        elif isinstance(fresh, str):
            problems.append("the fresh build failed where the incremental one succeeded: "
                            + _last_line(fresh))
        else:
            problems += compare(r.export(p), fresh, exact=s.sde is not None)
        self._record(kind, mutation, problems, log)
        return problems

    def _record(self, kind: str, mutation: str, problems: list[str], log: str) -> None:
        r = self.runner
        r.stats.steps += 1
        r.stats.kinds[kind] = r.stats.kinds.get(kind, 0) + 1
        self.step_no += 1
        r.log(f"[{self.seed}:{self.step_no}] {self.project.name} {kind}: {mutation}"
              + (f" -> {len(problems)} problem(s)" if problems else ""))
        if problems:
            r.failures.append(Failure(self.seed, self.step_no, self.project.name, kind,
                                      mutation, problems, log))

    # -- steps
    def initial(self) -> list[str]:
        problems = self.check("initial", "first build of the episode")
        self.save()
        return problems

    def mutate(self, kind: str, rng: random.Random) -> list[str] | None:
        """Apply one mutation of ``kind`` and check; None if it changed nothing here."""
        if kind == mutations.EDIT_DURING_BUILD:
            problems = self.edit_during_build(rng)
        elif kind == mutations.RACY_EDIT:
            problems = self.racy_edit(rng)
        elif kind == mutations.NOOP:
            # twice: the second build finds the record the first one left (if not racy)
            problems = self.check(kind, "nothing changed") + self.check(
                kind, "nothing changed, again", fresh_first=False)
        elif kind == mutations.REVERT:
            problems = self.revert(rng)
        else:
            what = mutations.KINDS[kind](rng, self.ctx, self.project, self.state)
            problems = None if what is None else self.check(kind, what)
        if problems is not None:
            self.save()
        return problems

    def save(self) -> None:
        """Keep the context and options of this step for a later revert (the last few)."""
        snap = self.runner.work / f"saved-{self.step_no}"
        shutil.rmtree(snap, ignore_errors=True)
        subprocess.run(["cp", "-a", str(self.ctx), str(snap)], check=True)
        self.saved.append((self.step_no, snap, copy.deepcopy(self.state)))
        while len(self.saved) > 6:
            shutil.rmtree(self.saved.pop(0)[1], ignore_errors=True)

    def revert(self, rng: random.Random) -> list[str] | None:
        """Put the context (a new copy: new inodes and ctimes, same times) and the options
        back as they were after an earlier step, as a checkout of an older commit does."""
        earlier = self.saved[:-1]
        if not earlier:
            return None
        step, snap, state = rng.choice(earlier)
        shutil.rmtree(self.ctx)
        subprocess.run(["cp", "-a", str(snap), str(self.ctx)], check=True)
        self.state = copy.deepcopy(state)
        return self.check(mutations.REVERT, f"context and options as after step {step}")

    def close(self) -> None:
        for _, snap, _ in self.saved:
            shutil.rmtree(snap, ignore_errors=True)
        self.saved.clear()

    def edit_during_build(self, rng: random.Random) -> list[str] | None:
        """The COPY source is given a new content X (so the COPY misses), and changed to Y
        while the COPY runs (after its key was computed). The build may have copied X or Y;
        afterwards the file is set back to X and rebuilt: that build must give X's result."""
        assert self.project.during_build is not None
        line, rel = self.project.during_build
        template = self.project.edits[rel]
        if mutations._variant_of(self.ctx, rel, template) is None:
            return None
        x = template.format(v=self.runner.next_unique())
        y = template.format(v=rng.choice(VARIANTS))
        tree.overwrite_in_place(self.ctx, rel, x)
        fired: list[str] = []
        vertex: list[int] = []

        def hook(event: Any) -> None:
            kind = getattr(event, "kind", "")
            if kind == "vertex_started" and event.instruction in ("COPY", "ADD") \
                    and event.line == line:
                vertex.append(event.vertex)
            elif kind == "cache_miss" and vertex and event.vertex == vertex[0] and not fired:
                tree.overwrite_in_place(self.ctx, rel, y)
                fired.append("edited")

        r, p, s = self.runner, self.project, self.state
        code, err = r.build_with_hook(p, s, self.ctx, hook)
        if not fired:
            tree.overwrite_in_place(self.ctx, rel, y)
        _, fresh_y = r.fresh(p, s, self.ctx)
        tree.overwrite_in_place(self.ctx, rel, x)
        _, fresh_x = r.fresh(p, s, self.ctx)
        problems: list[str] = []
        if code != 0:
            problems.append(f"the build with an edit during its COPY failed: {err}")
        else:
            got = r.export(p)
            exact = s.sde is not None
            if all(isinstance(f, str) or compare(got, f, exact) for f in (fresh_x, fresh_y)):
                problems.append("the build edited during its COPY matches neither the fresh "
                                "build of the old content nor that of the new one")
        what = (f"{rel}: set to a new content, then changed again while line {line} copied it "
                f"({'during the copy' if fired else 'the COPY did not miss: after the build'})"
                "; set back and rebuilt")
        self._record(mutations.EDIT_DURING_BUILD, what + " [the interrupted build]", problems,
                     err)
        problems = self.check(mutations.EDIT_DURING_BUILD, what + " [the rebuild]")
        tree.overwrite_in_place(self.ctx, rel, y)
        return problems

    def racy_edit(self, rng: random.Random) -> list[str] | None:
        """Edit, build at once, edit again at once (same size and mtime), build: the second
        edit lands within the timestamp granularity of the first build's reads (on a
        filesystem with 1-second timestamps, in the same second)."""
        files = {rel: t for rel, t in self.project.edits.items()
                 if mutations._variant_of(self.ctx, rel, t)}
        if not files:
            return None
        rel = rng.choice(sorted(files))
        template = files[rel]
        if self.state.coarse:  # start at the beginning of a second
            time.sleep(1 - (time.time() % 1) + 0.01)
        old = mutations._variant_of(self.ctx, rel, template)
        first = str(mutations._other(rng, VARIANTS, old))
        second = str(mutations._other(rng, VARIANTS, first))
        tree.overwrite_in_place(self.ctx, rel, template.format(v=first))
        t0 = time.time()
        self.runner.build(self.project, self.state, self.ctx)
        tree.overwrite_in_place(self.ctx, rel, template.format(v=second))
        took = time.time() - t0
        return self.check(mutations.RACY_EDIT, f"{rel}: {old} -> {first}, built, -> {second} "
                                               f"{took:.2f} s later", fresh_first=False)


# ----------------------------------------------------------------------------- sequences


def episode_kinds(project: Project, excluded: Mapping[str, str], coarse: bool) -> list[str]:
    """The kinds a random step may draw in an episode of ``project``."""
    kinds = [k for k in (*mutations.KINDS, mutations.EDIT_DURING_BUILD, mutations.RACY_EDIT)
             if k not in excluded and mutations.applicable(k, project)]
    if coarse:  # what the episode on that filesystem is for
        kinds += [mutations.RACY_EDIT] * 3
    return kinds


def random_projects(excluded: Mapping[str, str],
                    projects: Sequence[Project] = corpus.PROJECTS) -> list[Project]:
    """The projects random runs draw from: not probe-only, not marked in ``excluded``."""
    return [p for p in projects if p.in_random and p.known_project not in excluded]


def random_run(runner: Runner, seed: int, steps: int,
               projects: Sequence[Project] = corpus.PROJECTS) -> None:
    """``steps`` random mutation steps in episodes of 3 to 9, everything drawn from ``seed``;
    kinds and projects in ``runner.excluded`` are left out. Failures go to ``runner``."""
    rng = random.Random(seed)
    allowed = random_projects(runner.excluded, projects)
    t0 = time.monotonic()
    while runner.stats.steps < steps:
        episode_seed = rng.randrange(1 << 32)
        run_episode(runner, episode_seed, allowed, steps - runner.stats.steps)
    runner.stats.seconds += time.monotonic() - t0


def run_episode(runner: Runner, episode_seed: int, projects: Sequence[Project],
                budget: int = 1 << 30) -> None:
    """One episode, everything drawn from ``episode_seed`` (replayable on its own)."""
    rng = random.Random(episode_seed)
    project = rng.choice(list(projects))
    coarse = (mutations.COARSE_TIMESTAMPS not in runner.excluded
              and mutations.applicable(mutations.COARSE_TIMESTAMPS, project)
              and rng.random() < 0.2)
    length = rng.randint(3, 9)
    episode = runner.start(project, episode_seed, coarse=coarse)
    episode.initial()
    kinds = episode_kinds(project, runner.excluded, coarse)
    done = 1
    try:
        while done < min(length, budget) and kinds:
            for _ in range(10):
                draw = rng.random()
                kind = (mutations.REVERT if draw < 0.2 else mutations.NOOP if draw < 0.3
                        else rng.choice(kinds))
                if episode.mutate(kind, rng) is not None:
                    break
            done += 1
    finally:
        episode.close()
