"""The Python API: ``dockyard.build(...)``. The CLI's ``build`` command is a thin layer over it.

    import dockyard
    result = dockyard.build("ctx", tags=["app:1"], build_args={"V": "1"})
    print(result.image_id, [s.cached for s in result.steps])
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dockyard._signals import CancelOnSignal
from dockyard.errors import BuildError, DockerfileError, DockyardError, Location, UsageError
from dockyard.progress.events import BuildFinished, BuildWarning, Event
from dockyard.rootless.namespace import in_namespace
from dockyard.solver.solver import StepResult

if TYPE_CHECKING:
    from dockyard.quick import Recorder
    from dockyard.store.db import Store

__all__ = ["BuildResult", "PlatformResult", "StepResult", "build", "parse_platforms"]


@dataclass(frozen=True)
class PlatformResult:
    """One platform's image of a multi-platform build."""

    platform: str  # os/arch[/variant]
    image_id: str  # config digest
    manifest_digest: str
    steps: tuple[StepResult, ...]
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildResult:
    """What a build produced.

    A multi-platform build (``platform="linux/amd64,linux/arm64"``) gives one image per
    platform, in ``platforms``, and an image index listing them: ``image_id`` and
    ``manifest_digest`` are then the index's digest (what BuildKit's ``--iidfile`` and
    ``containerimage.digest`` give), ``steps`` every platform's steps in order, and
    ``config`` the first platform's image config.
    """

    image_id: str  # config digest, "sha256:..." (the index digest for several platforms)
    manifest_digest: str
    tags: tuple[str, ...]
    # RUN/COPY/ADD/WORKDIR steps in Dockerfile order across stages (FROM is not a step)
    steps: tuple[StepResult, ...]
    config: dict[str, Any] = field(default_factory=dict)
    platforms: tuple[PlatformResult, ...] = ()
    pushed: tuple[tuple[str, str], ...] = ()  # (reference, manifest digest) per pushed name
    loaded: tuple[str, ...] = ()  # the Docker daemon's "Loaded image: ..." lines (--load)
    wrote_stdout: bool = False  # an output went to standard output (-o -)

    @property
    def cached_all(self) -> bool:
        return all(s.cached for s in self.steps)

    def metadata(self) -> dict[str, Any]:
        """The ``--metadata-file`` document. Its ``steps`` are :attr:`steps`: one definition
        of a step everywhere (the API, this file, the tty summary): every RUN, COPY, ADD and
        WORKDIR looked up in the cache, never FROM."""
        out: dict[str, Any]
        if self.platforms:
            out = {
                "containerimage.digest": self.manifest_digest,
                "containerimage.descriptor": {
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                    "digest": self.manifest_digest,
                },
                "platforms": [
                    {"platform": p.platform, "containerimage.digest": p.manifest_digest,
                     "containerimage.config.digest": p.image_id} for p in self.platforms],
                "steps": [{**s.to_dict(), "platform": p.platform}
                          for p in self.platforms for s in p.steps],
            }
        else:
            out = {
                "containerimage.digest": self.manifest_digest,
                "containerimage.config.digest": self.image_id,
                "steps": [s.to_dict() for s in self.steps],
            }
        if self.tags:
            out["image.name"] = ",".join(self.tags)
        return out


def _parse_duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    text = text.strip()
    total = 0.0
    num = ""
    for ch in text:
        if ch.isdigit() or ch == ".":
            num += ch
        elif ch in units and num:
            total += float(num) * units[ch]
            num = ""
        else:
            raise UsageError(f"invalid duration {text!r} (use e.g. 30m, 24h, 7d)")
    if num:
        total += float(num)
    return total


@in_namespace
def build(
    context: str | os.PathLike[str] = ".",
    *,
    dockerfile: str | None = None,
    tags: Sequence[str] = (),
    build_args: Mapping[str, str] | Iterable[str] | None = None,
    target: str | None = None,
    no_cache: bool = False,
    no_cache_filter: Iterable[str] = (),
    cache_ttl: str | None = None,
    outputs: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    platform: str | None = None,
    network: str = "default",
    secrets: Sequence[str] = (),
    ssh: Sequence[str] = (),
    allow: Sequence[str] = (),
    build_contexts: Mapping[str, str] | None = None,
    jobs: int | None = None,
    root: str | os.PathLike[str] | None = None,
    snapshotter: str = "auto",
    runtime: str | None = None,
    on_event: Callable[[Event], None] | None = None,
    iidfile: str | None = None,
    metadata_file: str | None = None,
    stdin: Any = None,
    pull: str = "missing",
    quick: Recorder | None = None,
    add_hosts: Sequence[str] = (),
    ulimits: Sequence[str] = (),
    shm_size: str | None = None,
    cache_from: Sequence[str] = (),
    cache_to: Sequence[str] = (),
) -> BuildResult:
    """Build ``context`` (a directory, a tarball or ``-``) into an image in the store at ``root``.

    ``pull``: ``missing`` pulls a FROM image that is not in the store, ``always`` pulls every
    FROM image, ``never`` only uses the store. ``quick``: the CLI's up-to-date check
    recorder (``dockyard.quick``), told about the store's generation. ``add_hosts``
    (``NAME:ADDRESS``) are added to every RUN's /etc/hosts, as ``docker build --add-host``.
    ``outputs``: buildx's ``--output`` specs; ``type=image,name=A,B`` also tags the image,
    ``type=docker`` without ``dest`` loads it into the Docker daemon (``--load``).
    Tags, outputs, build args, hosts, secrets and the cache TTL are checked before the
    context is opened, so a bad value costs no step.
    ``ulimits`` (``nofile=1024:2048``) and ``shm_size`` (``128m``) apply to every RUN, as
    ``docker build --ulimit/--shm-size``; neither is part of a cache key.
    ``cache_from`` / ``cache_to``: shared build caches, as ``--cache-from`` / ``--cache-to``
    take them (``type=registry,ref=REG/REPO:TAG,mode=max``, ``type=local,src=DIR``,
    ``type=inline``; see docs/cache.md).
    Raises the same located errors as the CLI (``DockerfileError``, ``BuildError`` ...).
    """
    from dockyard._api import _request
    from dockyard._api._buildcache import parse_specs
    from dockyard._api._frontend import parse_build_args
    from dockyard._api._root import default_root
    from dockyard.context.context import BuildContext, open_named_contexts
    from dockyard.dockerfile.stages import host_platform, load_dockerfile, resolve
    from dockyard.plan.planner import plan_build
    from dockyard.store.db import Store

    emit = on_event or (lambda event: None)
    started = time.time()
    if pull not in ("always", "missing", "never"):
        raise UsageError(f"--pull={pull}: expected always, missing or never")
    # everything that can be wrong with the request, before the first step
    checked_tags = _request.check_tags(tags)
    checked_outputs = _request.check_outputs(outputs)
    extra_hosts = _request.parse_add_hosts(add_hosts)
    args = parse_build_args(build_args or {})
    if cache_ttl:
        _parse_duration(cache_ttl)  # a bad TTL is refused now (parsed again per platform)
    secret_values = _load_secrets(secrets)
    network = _network(network)
    ssh_sockets = _parse_ssh(ssh)
    cache = parse_specs(cache_from, cache_to)
    host = str(host_platform())
    # None: the host's, implicitly (the image then keeps its base image's platform fields)
    targets: list[str | None] = list(parse_platforms(platform)) or [None]
    multi = len(targets) > 1
    # absolute: the runtime resolves a relative rootfs against its bundle directory
    store_root = (Path(root) if root is not None else Path(default_root())).absolute()
    store = Store.open(store_root)
    _sweep_stale_runs(store)
    if quick is not None:
        quick.begin(store)
    with ExitStack() as stack:
        stack.callback(store.close)
        # The shared lock before the first file in tmp/: prune empties tmp/ under the
        # exclusive lock, taking whatever it finds there for a killed process's.
        stack.enter_context(store.build_lock())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(
            dir=store.root / "tmp", prefix="build-")))
        ctx = BuildContext.open(os.fspath(context), dockerfile=dockerfile, tmpdir=tmp,
                                stdin=stdin)
        named = open_named_contexts(dict(build_contexts or {}), tmpdir=tmp)
        text = ctx.dockerfile_text or ""
        filename = dockerfile if dockerfile and dockerfile != "-" else ctx.dockerfile_name
        df = load_dockerfile(text, filename)
        for message, line in df.parse.warnings:
            emit(BuildWarning(message, time.time(), f"{filename}:{line}"))
        pulled_here: set[tuple[str, str]] = set()

        # --build-context NAME=docker-image://REF: lower-cased NAME -> REF (FROM NAME is REF)
        named_images = {name.lower(): spec.removeprefix("docker-image://")
                        for name, spec in (build_contexts or {}).items()
                        if spec.startswith("docker-image://")}

        def image_config(ref: str, location: Location, plat: str) -> tuple[str, dict[str, Any]]:
            # Without --platform a stored image is used whatever its platform (as before);
            # with one, only that platform's image of the name (a manifest list's entry).
            wanted = plat if explicit else None
            image = None
            if pull != "always" or (ref, plat) in pulled_here:
                try:
                    image = store.get_image(ref, platform=wanted)
                except DockyardError as err:
                    if pull == "never":
                        raise DockerfileError(
                            f"base image {ref!r} is not in the local store"
                            + (f" for {plat}" if wanted else ""),
                            location,
                            hint=f"--pull=never: {err}; pull it, or load it with 'dockyard "
                            "load' or 'dockyard import'",
                            source=text,
                        ) from None
            if image is None:
                from dockyard.registry.pull import pull as pull_image

                try:
                    pulled = pull_image(store, ref, platform=plat)
                except DockyardError as err:
                    raise DockerfileError(
                        f"base image {ref!r} is not in the local store"
                        + (f" for {plat}" if wanted else "") + f" and cannot be pulled: {err}",
                        location,
                        hint=_base_hint(store),
                        source=text,
                    ) from None
                pulled_here.add((ref, plat))
                image = store.get_image(pulled.image_id)
            return image.id, store.read_config(image).to_dict()

        explicit = targets != [None]
        sde_text = os.environ.get("SOURCE_DATE_EPOCH") or args.get("SOURCE_DATE_EPOCH")
        history_key = str(ctx.dockerfile_path or filename)
        full_tags = tuple(dict.fromkeys((*checked_tags, *checked_outputs.names)))
        built: list[PlatformResult] = []
        made_here: set[str] = set()  # every platform's solve shares what this build made
        solved: list[tuple[Any, Any]] = []  # (solver, plan) per platform, for cache export
        backend: Any = None
        cache_vertex = 0
        offset = 0  # each platform's vertices are numbered after the previous platform's
        for number, target_platform in enumerate(targets):
            plat = target_platform or host
            graph = resolve(df, args, target, plat, named_contexts=[*named, *named_images])
            if number == 0:
                for warning in graph.warnings:
                    emit(BuildWarning(warning, time.time()))
            plan = plan_build(graph, image_config, platform=plat, build_args=args,
                              named_images=named_images)
            if quick is not None and _fetches_urls(plan):
                quick.refuse()  # a server's answer is an input no context walk can see
            if number == 0 and cache.sources:
                from dockyard._api._buildcache import import_caches, next_vertex

                cache_vertex = next_vertex(plan) * len(targets)
                backend = _imported_backend(store, import_caches(
                    store, cache.sources, platform=plat, emit=emit, vertex=cache_vertex))
                cache_vertex += len(cache.sources)
            emit_here = _platform_events(emit, plat, offset) if multi else emit
            offset += max([s.from_vertex for s in plan.stages]
                          + [st.vertex for s in plan.stages for st in s.steps] + [0])
            target_name = graph.target_stage.name or str(graph.target)
            # a foreign platform's steps are explained against that platform's last build
            history_name = target_name if plat == host else f"{target_name}@{plat}"
            final, solver = _solve(
                plan, store, ctx, named, emit_here, text, history_key, history_name,
                snapshotter=snapshotter, runtime=runtime, started=started,
                options=_options(no_cache, no_cache_filter, cache_ttl, jobs, network, sde_text,
                                 allow, secret_values, ssh_sockets, plat, build_contexts or {},
                                 image_platform=plat if explicit else None, made_here=made_here,
                                 extra_hosts=extra_hosts, ulimits=ulimits,
                                 shm_size=shm_size, pull=pull),
                cache=backend,
            )
            solved.append((solver, plan))
            target_plan = plan.stages[plan.target]
            extra = None
            if cache.inline is not None:
                from dockyard._api._buildcache import inline_cache

                extra = inline_cache(store, cache, solver, plan, final.diff_ids)
            _config_digest, manifest_digest, config = _assemble(
                store, final, target_plan.config, plat,
                int(sde_text) if sde_text else None, labels or {}, target_plan.base.kind, extra,
            )
            record = store.put_image(*_image_bytes(store, manifest_digest),
                                     names=() if multi else full_tags)
            steps = tuple(solver.results[v] for v in sorted(solver.results))
            built.append(PlatformResult(plat, record.id, manifest_digest, steps, config))
        if multi:
            index_digest = store.put_platform_images(
                [(b.platform, b.image_id) for b in built], full_tags)
            result = BuildResult(index_digest, index_digest, full_tags,
                                 tuple(s for b in built for s in b.steps), built[0].config,
                                 tuple(built))
            default = store.get_image(built[0].image_id if not full_tags else full_tags[0]).id
        else:
            one = built[0]
            result = BuildResult(one.image_id, one.manifest_digest, full_tags, one.steps,
                                 one.config)
            default = one.image_id
        done: list[tuple[str, str]] = []
        for spec in checked_outputs.specs:
            from dockyard.exporter import export

            done += export(store, default, spec, list(checked_tags),
                           platforms=[(b.platform, b.image_id) for b in built] if multi else ())
        result = replace(
            result,
            pushed=tuple((ref, digest) for ref, digest in done if ref != "loaded"),
            loaded=tuple(line for ref, line in done if ref == "loaded"),
            wrote_stdout=checked_outputs.to_stdout)
        if cache.targets:
            from dockyard._api._buildcache import export_caches, next_vertex

            export_caches(store, cache, solved, emit=emit,
                          vertex=cache_vertex or next_vertex(solved[0][1]) * len(targets))
        if iidfile:
            Path(iidfile).write_text(result.image_id)
        if metadata_file:
            Path(metadata_file).write_text(json.dumps(result.metadata(), indent=2) + "\n")
        if quick is not None:
            quick.end(store)
        emit(BuildFinished(time.time(), result.image_id, time.time() - started))
        return result


def parse_platforms(text: str | None) -> tuple[str, ...]:
    """``--platform`` values: comma-separated ``os/arch[/variant]`` (normalized, in order,
    without repeats); ``local`` is this machine's. Empty: none given."""
    from dockyard.dockerfile.stages import Platform, host_platform

    out: list[str] = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        plat = str(host_platform()) if item.lower() == "local" else str(Platform.parse(item))
        if plat not in out:
            out.append(plat)
    return tuple(out)


def _options(
    no_cache: bool, no_cache_filter: Iterable[str], cache_ttl: str | None, jobs: int | None,
    network: str, sde_text: str | None, allow: Sequence[str], secrets: dict[str, bytes],
    ssh: dict[str, str], platform: str, build_contexts: Mapping[str, str], *,
    image_platform: str | None, made_here: set[str], pull: str = "missing",
    extra_hosts: tuple[tuple[str, str], ...] = (),
    ulimits: Sequence[str] = (), shm_size: str | None = None,
) -> Any:
    from dockyard.solver.solver import SolveOptions

    return SolveOptions(
        no_cache=no_cache,
        no_cache_filter=frozenset(s.strip().lower() for s in no_cache_filter if s.strip()),
        cache_ttl=_parse_duration(cache_ttl) if cache_ttl else None,
        cache_ttl_text=cache_ttl or "",
        jobs=max(0, jobs or 0),
        network="none" if network == "none" else "host",
        network_tool=network if network in ("slirp4netns", "pasta") else None,
        source_date_epoch=int(sde_text) if sde_text else None,
        allow_insecure="security.insecure" in allow,
        secrets=secrets,
        ssh=ssh,
        platform=platform,
        image_platform=image_platform,
        made_here=made_here,
        extra_hosts=extra_hosts,
        pull=pull,
        image_contexts={
            name.lower(): spec.removeprefix("docker-image://")
            for name, spec in build_contexts.items()
            if spec.startswith("docker-image://")
        },
        ulimits=_parse_ulimits(ulimits),
        shm_size=_parse_shm_size(shm_size),
    )


def _solve(
    plan: Any, store: Any, ctx: Any, named: Any, emit: Callable[[Event], None], text: str,
    history_key: str, history_name: str, *, snapshotter: str, runtime: str | None,
    started: float, options: Any, cache: Any = None,
) -> tuple[Any, Any]:
    """Solve one platform's plan; records its history for the next build's explanations.
    ``cache``: the solver's cache backend factory (None: the local store's)."""
    from dockyard.solver.solver import Solver

    previous = store.get_build_history(history_key, history_name)
    solver = Solver(plan, store, ctx, named, options, emit,
                    snapshotter_kind=snapshotter, runtime=runtime, history=previous,
                    cache=cache)
    error: BaseException | None = None
    try:
        with CancelOnSignal(solver.cancel):
            final = solver.solve()
    except DockyardError as err:
        error = err
        _locate(err, text)
        raise
    except KeyboardInterrupt as err:
        error = err
        raise
    finally:
        failing = sys.exc_info()[1]
        solver.close()
        history = solver.history_record()
        # A no-op rebuild records exactly what is there: skip the rewrite.
        if previous is None or history["steps"] != previous.get("steps"):
            try:
                store.put_build_history(history_key, history_name, history)
            except Exception:
                if failing is None:
                    raise  # else the step's own error (a full disk, say) is the one to show
        if error is not None:
            emit(BuildFinished(time.time(), None, time.time() - started, error=str(error)))
    return final, solver


def _imported_backend(store: Any, imported: list[Any]) -> Any:
    """The cache backend factory for a build with imported caches: the local store first,
    then the imported ones (None when none could be read: the local store alone)."""
    if not imported:
        return None
    from dockyard.solver.cache import ChainCache, ImportedCache, LocalCache

    def backend(layers: Any) -> Any:
        return ChainCache([LocalCache(store, layers), ImportedCache(store, imported)])

    return backend


def _platform_events(
    emit: Callable[[Event], None], platform: str, offset: int,
) -> Callable[[Event], None]:
    """One platform's events of a multi-platform build: vertices numbered apart from the
    other platforms', and step names prefixed with the platform as BuildKit shows them
    (``[linux/arm64 builder 2/4] RUN make``)."""
    import dataclasses

    def handle(event: Event) -> None:
        vertex = getattr(event, "vertex", None)
        if isinstance(vertex, int) and vertex > 0:
            changes: dict[str, Any] = {"vertex": vertex + offset}
            name = getattr(event, "name", None)
            if isinstance(name, str) and name.startswith("["):
                changes["name"] = f"[{platform} {name[1:]}"
            event = dataclasses.replace(event, **changes)
        emit(event)

    return handle


def _fetches_urls(plan: Any) -> bool:
    """Whether a stage the build needs ADDs a URL (asked for again on every build)."""
    from dockyard.plan.model import CopyOp
    from dockyard.solver.ops.copy import is_url

    return any(
        isinstance(step.op, CopyOp) and step.op.is_add and any(is_url(s) for s in step.op.sources)
        for stage in plan.needed() for step in stage.steps
    )


def _image_bytes(store: Any, manifest_digest: str) -> tuple[bytes, bytes]:
    manifest = store.blobs.read_bytes(manifest_digest)
    config_digest = json.loads(manifest)["config"]["digest"]
    return manifest, store.blobs.read_bytes(config_digest)


def _assemble(
    store: Any,
    state: Any,
    run_config: dict[str, Any],
    platform: str,
    source_date_epoch: int | None,
    labels: Mapping[str, str],
    base_kind: str,
    extra: Mapping[str, Any] | None = None,
) -> tuple[str, str, dict[str, Any]]:
    """Write the config and manifest blobs for the target stage; returns their digests."""
    from dockyard.image.oci import (
        MEDIA_TYPE_OCI_CONFIG,
        MEDIA_TYPE_OCI_LAYER,
        MEDIA_TYPE_OCI_MANIFEST,
    )

    cfg = dict(run_config)
    author = cfg.pop("_author", None)
    if labels:
        merged = dict(cfg.get("Labels") or {})
        merged.update(labels)
        cfg["Labels"] = merged
    # empty values are left out (Go's omitempty); CMD [] and ENTRYPOINT [] are stored as null,
    # as BuildKit does
    cfg = {k: v for k, v in cfg.items() if v not in (None, [], {})}
    # Times come from the cache: a step keeps the time its result was made, so a fully cached
    # rebuild gives the same image (as Docker's builders do). SOURCE_DATE_EPOCH clamps them.
    now = _rfc3339(time.time())
    sde = _rfc3339(source_date_epoch) if source_date_epoch is not None else None
    created = sde or state.created or now
    history = []
    for entry in state.history:
        item = dict(entry)
        if sde is not None:
            item["created"] = min(str(item.get("created") or sde), sde)
        else:
            item.setdefault("created", now)
        if "comment" not in item and item.get("created_by", "").endswith("# buildkit"):
            item["comment"] = "buildkit.dockerfile.v0"
        history.append(item)
    os_, _, arch = platform.partition("/")
    arch, _, variant = arch.partition("/")
    base_cfg = state.base_config if isinstance(state.base_config, dict) else {}
    config: dict[str, Any] = {
        "architecture": arch,
        "os": os_,
        "config": cfg,
        "created": created,
        "history": history,
        "rootfs": {"type": "layers", "diff_ids": list(state.diff_ids)},
    }
    if variant:
        config["variant"] = variant
    if extra:  # the inline build cache (cache_to type=inline)
        config.update(extra)
    if author:
        config["author"] = author
    elif base_cfg.get("author"):
        config["author"] = base_cfg["author"]
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_digest = store.blobs.put_bytes(config_bytes)
    layers = [
        {"mediaType": MEDIA_TYPE_OCI_LAYER, "digest": d, "size": store.blobs.size(d)}
        if store.blobs.has(d) else _compressed_descriptor(store, d)
        for d in state.diff_ids
    ]
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": {"mediaType": MEDIA_TYPE_OCI_CONFIG, "digest": config_digest,
                   "size": len(config_bytes)},
        "layers": layers,
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    manifest_digest = store.blobs.put_bytes(manifest_bytes)
    return config_digest, manifest_digest, config


def _compressed_descriptor(store: Any, diff_id: str) -> dict[str, Any]:
    from dockyard.image.oci import layer_media_type

    rec = store.get_layer(diff_id)
    if rec is not None and rec.size is None and rec.pulled:
        # a pulled base layer not unpacked yet: checked now, which tells its size
        rec = store.layers.check_pulled(diff_id)
    if rec is not None:
        if rec.size is not None and (rec.snapshots or rec.remotes or store.layers.local(diff_id)):
            # the uncompressed tar, written from a snapshot, inflated from a compressed form
            # (a pulled base's) or downloaded when something reads it; chosen before any
            # compressed form this store happens to hold (a cache export's), so the manifest
            # digest does not depend on the store's history
            return {"mediaType": layer_media_type("none"), "digest": diff_id, "size": rec.size}
        for kind, blob in rec.blobs.items():
            if store.blobs.has(blob.digest):
                return {"mediaType": layer_media_type(kind), "digest": blob.digest,
                        "size": blob.size}
    raise BuildError(f"layer {diff_id} is missing from the store")


def _rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(ts)))


def _base_hint(store: Any) -> str:
    """How to get a base image when pulling it failed: what the store has, and the ways in
    that need no registry."""
    names = sorted({ref.familiar for image in store.list_images() for ref in image.tags})
    have = (f"the store has {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}; "
            if names else "the store has no images yet; ")
    return (have + "get a base with 'dockyard load -i IMAGE.tar' (a docker save or OCI "
            "archive), 'dockyard import ROOTFS.tar NAME' (a root filesystem), or 'dockyard "
            "pull NAME' from a registry this machine reaches")


def _locate(err: DockyardError, source: str) -> None:
    if getattr(err, "source", "missing") is None:
        err.source = source  # type: ignore[attr-defined]


def _load_secrets(items: Sequence[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for item in items:
        fields: dict[str, str] = {}
        for part in item.split(","):
            key, _, value = part.partition("=")
            fields[key.strip()] = value
        sid = fields.get("id")
        if not sid:
            raise UsageError(f"--secret {item!r}: missing id=")
        if "src" in fields or "source" in fields:
            path = fields.get("src") or fields.get("source") or ""
            try:
                out[sid] = Path(path).read_bytes()
            except OSError as err:
                raise UsageError(f"--secret id={sid}: cannot read {path}: {err.strerror}") from None
        elif "env" in fields:
            env_value = os.environ.get(fields["env"])
            if env_value is None:
                raise UsageError(f"--secret id={sid}: environment variable {fields['env']} "
                                 "is not set")
            out[sid] = env_value.encode()
        else:
            own = os.environ.get(sid)
            if own is not None:
                out[sid] = own.encode()
            elif Path(sid).exists():
                out[sid] = Path(sid).read_bytes()
            else:
                raise UsageError(f"--secret {item!r}: give src=FILE or env=VAR")
    return out


def _network(requested: str) -> str:
    """``--network`` as it will be given: ``host``, ``none``, ``slirp4netns`` or ``pasta``
    (``default`` is the host's, unless a rootless build cannot use it)."""
    from dockyard.rootless.idmap import in_user_namespace
    from dockyard.rootless.network import choose

    return choose(requested, rootless=in_user_namespace())


def _parse_ulimits(items: Sequence[str]) -> tuple[Any, ...]:
    if not items:
        return ()
    from dockyard.executor.spec import parse_ulimit

    parsed = {u.name: u for u in map(parse_ulimit, items)}  # a later one wins, as docker's
    return tuple(parsed.values())


def _parse_shm_size(text: str | None) -> int | None:
    if not text:
        return None
    from dockyard.errors import DockerfileError
    from dockyard.executor.mounts import parse_size

    try:
        size = parse_size(text)
    except DockerfileError:
        raise UsageError(f"--shm-size {text}: not a size (e.g. 64m, 1g)") from None
    if size <= 0:
        raise UsageError(f"--shm-size {text}: must be more than 0")
    return size


def _parse_ssh(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        sid, _, sock = item.partition("=")
        sock = sock or os.environ.get("SSH_AUTH_SOCK", "")
        if not sock:
            raise UsageError(f"--ssh {item}: no socket given and SSH_AUTH_SOCK is not set")
        out[sid or "default"] = sock
    return out


def _sweep_stale_runs(store: Store) -> None:
    """Containers, mounts, bundles and secrets left by a dockyard process that was killed
    (SIGKILL): removed by the next build. On an idle store (its exclusive lock is free at
    once: no dockyard process uses it) all of them go, as ``prune`` removes them
    (``store.leftover_runs.run_leftovers``); while other processes run, those of the owners
    that are gone (``executor.run.sweep_stale``; a mount not under a container of theirs,
    e.g. of a killed ``COPY --from``, then waits for the next build on an idle store)."""
    from dockyard.executor.runtime import state_dir as run_dir
    from dockyard.snapshot.base import our_mounts

    state_dir = run_dir(store.root)  # rootless: under $XDG_RUNTIME_DIR
    try:
        owners = any(os.scandir(state_dir / "owners"))
    except OSError:
        owners = False
    ours = (store.root / "mnt").resolve(), state_dir.resolve()
    mounted = any(parent in ours for point in our_mounts(store.root)
                  for parent in point.parents)
    if not (owners or mounted):
        return
    from dockyard.store.lock import StoreLockTimeout

    try:
        with store.exclusive_lock(timeout=0):
            from dockyard.store.leftover_runs import run_leftovers

            run_leftovers(store, remove=True)
            return
    except StoreLockTimeout:
        pass
    if owners:
        from dockyard.executor.run import sweep_stale

        sweep_stale(state_dir)
