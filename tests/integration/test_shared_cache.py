"""The build cache shared through a registry (``--cache-to`` / ``--cache-from``, issue 15),
against Debian's ``docker-registry`` on a free loopback port, without auth and with htpasswd.

Two fresh stores share a cache: the second build is fully cached, its RUN steps never
execute (the executor is replaced by one that fails), and its image equals the first's
(``SOURCE_DATE_EPOCH``). A loopback proxy in front of the registry counts what is downloaded:
the second build reads the cache manifest and config only, and with ``--push`` to the same
registry it mounts the layers across repositories, downloading zero layer bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from faultproxy import RegistryProxy, proxy_for
from test_build_support import build, flatten, fresh_store, needs_runtime, write_tree
from test_registry_support import (
    PASSWORD,
    USER,
    Registry,
    basic_registry,
    docker_config,
    needs_registry,
    registry,
)

import dockyard
from dockyard.executor.run import Executor
from dockyard.progress.events import BuildWarning, VertexLog, VertexStarted
from dockyard.store.db import Store

__all__ = ["basic_registry", "docker_config", "registry"]  # fixtures

pytestmark = [needs_runtime, needs_registry]

DOCKERFILE = """\
FROM busybox AS builder
COPY src/ /src/
RUN cat /src/a.txt /src/b.txt > /src/joined && echo built > /src/marker
RUN sha256sum /src/joined > /src/sum

FROM busybox
COPY --from=builder /src/joined /src/sum /out/
RUN wc -c /out/joined > /out/size
CMD ["cat", "/out/size"]
"""
FILES = {"Dockerfile": DOCKERFILE, "src/a.txt": "alpha\n" * 500, "src/b.txt": "beta\n" * 700}


@pytest.fixture
def sde(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")


@pytest.fixture
def proxy(registry: Registry) -> Iterator[RegistryProxy]:
    with proxy_for(registry.host) as p:
        yield p


@contextmanager
def runs_refused() -> Iterator[list[str]]:
    """Within the block, any RUN that executes fails the build (and is recorded)."""
    tried: list[str] = []

    def refuse(self: Any, rootfs: Any, spec: Any, **kwargs: Any) -> int:
        tried.append(" ".join(spec.args))
        raise AssertionError(f"a RUN step executed: {spec.args}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Executor, "run", refuse)
        yield tried


def cache_layers(proxy: RegistryProxy, ref_repo: str, tag: str = "cache") -> set[str]:
    """The layer digests the cache manifest at ``ref_repo:tag`` lists (read upstream)."""
    import urllib.request

    req = urllib.request.Request(
        f"http://{proxy.upstream}/v2/{ref_repo}/manifests/{tag}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(req) as resp:
        manifest = json.loads(resp.read())
    return {layer["digest"] for layer in manifest["layers"]}


def logs(events: list[Any], prefix: str) -> str:
    """The log text of the progress steps whose name starts with ``prefix``."""
    vertices = {e.vertex for e in events if isinstance(e, VertexStarted)
                and e.name.startswith(prefix)}
    return "".join(e.data.decode() for e in events
                   if isinstance(e, VertexLog) and e.vertex in vertices)


def test_two_fresh_stores_share_a_cache(tmp_path: Path, proxy: RegistryProxy,
                                        sde: None) -> None:
    ref = f"{proxy.host}/team/app-cache:cache"
    a_root = fresh_store(tmp_path / "a")
    a_ctx = write_tree(tmp_path / "ctx-a", FILES)
    first = build(a_ctx, a_root, tags=["app:1"], cache_to=[f"type=registry,ref={ref},mode=max"])
    assert not any(s.cached for s in first.steps)
    exported = logs(first.events, "exporting cache to")
    assert "uploaded" in exported and "writing cache manifest sha256:" in exported
    layers = cache_layers(proxy, "team/app-cache")
    assert len(layers) == 5  # COPY, 2 RUN (builder), COPY --from, RUN

    # the second machine: another store, another checkout of the same sources
    proxy.reset()
    b_root = fresh_store(tmp_path / "b")
    b_ctx = write_tree(tmp_path / "elsewhere" / "ctx-b", FILES)
    with runs_refused() as tried:
        second = build(b_ctx, b_root, tags=["app:1"], cache_from=[ref])
    assert all(s.cached for s in second.steps), second.steps
    assert tried == []
    assert second.result.image_id == first.result.image_id
    assert second.result.manifest_digest == first.result.manifest_digest
    # lazy: the manifest and the config were read, no layer
    assert not set(proxy.blob_downloads()) & layers
    assert len(proxy.blob_downloads()) == 1  # the cache config
    # the image's layers are only known remotely so far: a consistent store all the same
    check = dockyard.store_check(root=b_root)
    assert check.ok, check.problems

    # a fully cached build that pushes to the same registry mounts, downloads nothing
    proxy.reset()
    with runs_refused():
        pushed = build(b_ctx, b_root, tags=[f"{proxy.host}/team/app:1"], cache_from=[ref],
                       outputs=["type=image,push=true"])
    assert all(s.cached for s in pushed.steps)
    assert pushed.result.image_id == first.result.image_id
    downloaded = proxy.blob_downloads()
    assert sum(n for d, n in downloaded.items() if d in layers) == 0, downloaded
    mounts = [s for s in proxy.seen if s.method == "POST" and "mount=" in s.path]
    assert len(mounts) == 2  # the final image's two built layers (COPY --from, RUN)

    # what was pushed is a real image: a third store pulls it and reads the files
    c_root = tmp_path / "c"
    store = Store.open(c_root)
    try:
        dockyard.pull(f"{proxy.host}/team/app:1", root=c_root)
    finally:
        store.close()
    out_a = flatten(a_root, "app:1", tmp_path / "fa")
    out_c = flatten(c_root, f"{proxy.host}/team/app:1", tmp_path / "fc")
    assert (out_c / "out/size").read_text() == (out_a / "out/size").read_text()
    assert (out_c / "out/joined").read_bytes() == (out_a / "out/joined").read_bytes()

    # the lazily imported layers are fetched when something needs their bytes
    out_b = flatten(b_root, "app:1", tmp_path / "fb")
    assert (out_b / "out/sum").read_text() == (out_a / "out/sum").read_text()


def test_a_change_downloads_only_the_parent_it_needs(
    tmp_path: Path, proxy: RegistryProxy, sde: None
) -> None:
    ref = f"{proxy.host}/team/partial:cache"
    a_root = fresh_store(tmp_path / "a")
    build(write_tree(tmp_path / "ctx-a", FILES), a_root,
          cache_to=[f"type=registry,ref={ref},mode=max"])
    layers = cache_layers(proxy, "team/partial")
    changed = dict(FILES, Dockerfile=DOCKERFILE.replace("wc -c", "wc -l"))
    proxy.reset()
    b_root = fresh_store(tmp_path / "b")
    result = build(write_tree(tmp_path / "ctx-b", changed), b_root, cache_from=[ref])
    cached = {s.display: s.cached for s in result.steps}
    assert [c for d, c in cached.items() if "wc -l" in d] == [False]
    assert sum(cached.values()) == len(cached) - 1
    downloaded = set(proxy.blob_downloads()) & layers
    # the missed RUN needs its parent (the final stage's COPY --from layer) and nothing of
    # the builder stage
    assert len(downloaded) == 1, downloaded


def test_htpasswd_registry(tmp_path: Path, basic_registry: Registry, docker_config: Path,
                           sde: None) -> None:
    dockyard.login(basic_registry.host, USER, PASSWORD)
    ref = f"{basic_registry.host}/private/cache:main"
    a_root = fresh_store(tmp_path / "a")
    first = build(write_tree(tmp_path / "ctx-a", FILES), a_root,
                  cache_to=[f"type=registry,ref={ref},mode=max"])
    b_root = fresh_store(tmp_path / "b")
    with runs_refused() as tried:
        second = build(write_tree(tmp_path / "ctx-b", FILES), b_root, cache_from=[ref])
    assert all(s.cached for s in second.steps)
    assert tried == []
    assert second.result.manifest_digest == first.result.manifest_digest
    # without credentials the cache cannot be read: a warning, and the build goes on
    (docker_config / "config.json").unlink()
    c_root = fresh_store(tmp_path / "c")
    third = build(write_tree(tmp_path / "ctx-c", FILES), c_root, cache_from=[ref])
    warnings = [e.message for e in third.events if isinstance(e, BuildWarning)]
    assert any("cannot be used" in w and "authentication required" in w for w in warnings), \
        warnings
    assert not any(s.cached for s in third.steps)
    assert third.result.manifest_digest == first.result.manifest_digest


def test_local_directory_cache(tmp_path: Path, sde: None) -> None:
    cache_dir = tmp_path / "cache"
    a_root = fresh_store(tmp_path / "a")
    first = build(write_tree(tmp_path / "ctx-a", FILES), a_root,
                  cache_to=[f"type=local,dest={cache_dir},mode=max"])
    index = json.loads((cache_dir / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "latest"
    assert "5 layers (5 compressed now)" in logs(first.events, "exporting cache to")
    b_root = fresh_store(tmp_path / "b")
    second = build(write_tree(tmp_path / "ctx-b", FILES), b_root,
                   cache_from=[f"type=local,src={cache_dir}"])
    assert all(s.cached for s in second.steps)
    assert second.result.manifest_digest == first.result.manifest_digest
    # a second export into the same directory writes no layer and compresses nothing
    again = build(write_tree(tmp_path / "ctx-a", FILES), a_root,
                  cache_to=[f"type=local,dest={cache_dir},mode=max"])
    text = logs(again.events, "exporting cache to")
    assert "(0 compressed now)" in text and "layers: 0 written, 5 already there" in text
    out = flatten(b_root, second.result.image_id, tmp_path / "fb")
    assert (out / "out/joined").read_text() == "alpha\n" * 500 + "beta\n" * 700


def test_inline_cache(tmp_path: Path, proxy: RegistryProxy, sde: None) -> None:
    image = f"{proxy.host}/team/inline:1"
    a_root = fresh_store(tmp_path / "a")
    first = build(write_tree(tmp_path / "ctx-a", FILES), a_root, tags=[image],
                  cache_to=["type=inline"], outputs=["type=image,push=true"])
    config = json.loads(Store.open(a_root).config_bytes(
        Store.open(a_root).get_image(first.result.image_id)))
    assert "dockyard.cache.v1" in config
    b_root = fresh_store(tmp_path / "b")
    proxy.reset()
    second = build(write_tree(tmp_path / "ctx-b", FILES), b_root, tags=[image],
                   cache_from=[image], cache_to=["type=inline"])
    by_stage = {s.stage: [] for s in second.steps}
    for s in second.steps:
        by_stage[s.stage].append(s.cached)
    # mode=min: the final stage's steps are in the image; the builder stage runs again,
    # and the final stage hits (COPY --from is keyed by content)
    assert all(by_stage["stage-1"]), second.steps
    assert second.result.image_id == first.result.image_id


def test_missing_cache_source_is_a_warning(tmp_path: Path, proxy: RegistryProxy) -> None:
    root = fresh_store(tmp_path / "a")
    result = build(write_tree(tmp_path / "ctx", FILES), root,
                   cache_from=[f"{proxy.host}/nothing/here:cache",
                               "type=local,src=" + str(tmp_path / "no-such-dir"),
                               "127.0.0.1:9/unreachable:cache"])
    warnings = [e.message for e in result.events if isinstance(e, BuildWarning)]
    assert len([w for w in warnings if "cannot be used, building without it" in w]) == 3, \
        warnings
    assert any("MANIFEST_UNKNOWN" in w for w in warnings)


def test_bad_specs_are_usage_errors(tmp_path: Path) -> None:
    from dockyard.errors import UsageError

    root = fresh_store(tmp_path / "a")
    ctx = write_tree(tmp_path / "ctx", FILES)
    for bad, message in [
        ("type=registry", "needs ref="),
        ("type=registry,ref=x/y,mode=all", "mode must be min or max"),
        ("type=registry,ref=x/y,compression=lz4", "compression must be gzip or zstd"),
        ("type=registry,ref=x/y,compression=zstd,oci-mediatypes=false", "needs oci-mediat"),
        ("type=gha", "BuildKit services"),
        ("type=local", "needs dest=DIR"),
        ("type=inline,mode=max", "mode=min only"),
        ("type=registry,ref=x/y,color=red", "unknown key 'color'"),
    ]:
        with pytest.raises(UsageError, match=message):
            dockyard.build(ctx, root=root, cache_to=[bad])
    with pytest.raises(UsageError, match="type=inline is for --cache-to"):
        dockyard.build(ctx, root=root, cache_from=["type=inline"])


def test_copy_from_and_mount_from_pull_images(tmp_path: Path, registry: Registry) -> None:
    image = f"{registry.host}/tools/data:1"
    src_root = fresh_store(tmp_path / "src")

    def publish(text: str) -> None:
        build(write_tree(tmp_path / f"img-{text}", {
            "Dockerfile": "FROM busybox\nCOPY v.txt /v.txt\n", "v.txt": text}),
            src_root, tags=[image], outputs=["type=image,push=true"])

    publish("one\n")
    base = f"{registry.host}/base/busybox:1"  # --pull=always pulls FROM's image too
    dockyard.push("busybox:latest", base, root=src_root)
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": (
        f"FROM {base}\nCOPY --from={image} /v.txt /copied\n"
        f"RUN --mount=from={image},target=/m cat /m/v.txt > /mounted\n")})
    root = fresh_store(tmp_path / "b")
    dockyard.pull(base, root=root)
    from dockyard.errors import BuildError

    with pytest.raises(BuildError, match=r"COPY --from=.*not in the local store and "
                                         r"--pull=never") as info:
        build(ctx, root, pull="never")
    assert info.value.location is not None and info.value.location.start_line == 2

    def files() -> tuple[str, str]:
        out = flatten(root, "app", tmp_path / f"f{len(list(tmp_path.iterdir()))}")
        return (out / "copied").read_text(), (out / "mounted").read_text()

    build(ctx, root, tags=["app"])  # --pull=missing: pulled, as FROM would be
    assert files() == ("one\n", "one\n")
    publish("two\n")
    again = build(ctx, root, tags=["app"])  # missing: the store's image is used
    assert all(s.cached for s in again.steps)
    assert files() == ("one\n", "one\n")
    fresh = build(ctx, root, tags=["app"], pull="always")  # always: pulled again
    assert not any(s.cached for s in fresh.steps)
    assert files() == ("two\n", "two\n")


LINKS = """\
FROM busybox AS src
RUN mkdir -p /tree/a/b && echo x > /tree/a/b/f && chmod 711 /tree/a \\
 && mkdir /links && echo same > /links/h1 && ln /links/h1 /links/h2 && echo same > /links/h3
FROM busybox
COPY --from=src --parents /tree/./a/b/f /app/
COPY --from=src /links/ /links/
COPY ctx/ /ctx/
"""


def test_hardlinks_and_parents_records_are_shared(tmp_path: Path, proxy: RegistryProxy,
                                                  sde: None) -> None:
    """COPY keys that hold hard-link groups and ``--parents``' directories (selection
    records with ``result["parents"]``) hit on a second machine whose checkout is elsewhere
    with other mtimes and inodes; the imported selection records mean no stage layer is
    downloaded to digest a ``COPY --from``, and the image is the first machine's."""
    import os

    ref = f"{proxy.host}/team/links-cache:cache"

    def checkout(path: Path, stamp: int) -> Path:
        ctx = write_tree(path, {"Dockerfile": LINKS, "ctx/one": "1\n", "ctx/other": "1\n"})
        os.link(ctx / "ctx/one", ctx / "ctx/two")
        for p in ctx.rglob("*"):
            os.utime(p, (stamp, stamp))
        return ctx

    a_root = fresh_store(tmp_path / "a")
    first = build(checkout(tmp_path / "ctx-a", 1_000_000_000), a_root, tags=["t"],
                  cache_to=[f"type=registry,ref={ref},mode=max"])
    tree = flatten(a_root, "t", tmp_path / "fa")
    assert os.stat(tree / "links/h1").st_ino == os.stat(tree / "links/h2").st_ino
    assert os.stat(tree / "ctx/one").st_ino == os.stat(tree / "ctx/two").st_ino
    assert oct(os.stat(tree / "app/a").st_mode & 0o777) == oct(0o711)
    layers = cache_layers(proxy, "team/links-cache")

    proxy.reset()
    b_root = fresh_store(tmp_path / "b")
    with runs_refused() as tried:
        second = build(checkout(tmp_path / "elsewhere" / "ctx-b", 1_600_000_000), b_root,
                       tags=["t"], cache_from=[ref])
    assert all(s.cached for s in second.steps), second.steps
    assert tried == []
    assert second.result.manifest_digest == first.result.manifest_digest
    assert not set(proxy.blob_downloads()) & layers, proxy.blob_downloads()
    store = Store.open(b_root)
    try:
        selections = [r for r in store.list_cache_records()
                      if r.result.get("instruction") == "selection"]
    finally:
        store.close()
    assert any("tree/a" in (r.result.get("parents") or {}) for r in selections), selections

    # a hard link split on the second machine misses, as it would locally
    c_ctx = checkout(tmp_path / "ctx-c", 1_600_000_000)
    (c_ctx / "ctx/two").unlink()
    (c_ctx / "ctx/two").write_text("1\n")
    third = build(c_ctx, fresh_store(tmp_path / "c"), tags=["t"], cache_from=[ref])
    assert [s.cached for s in third.steps if s.display.startswith("COPY ctx/")] == [False]


def manifest_of(proxy: RegistryProxy, repo: str, tag: str = "cache") -> dict[str, Any]:
    import urllib.request

    req = urllib.request.Request(
        f"http://{proxy.upstream}/v2/{repo}/manifests/{tag}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                           "application/vnd.docker.distribution.manifest.v2+json"})
    with urllib.request.urlopen(req) as resp:
        data: dict[str, Any] = json.loads(resp.read())
    return data


@pytest.mark.parametrize(("options", "manifest_type", "layer_type"), [
    ("compression=zstd", "application/vnd.oci.image.manifest.v1+json",
     "application/vnd.oci.image.layer.v1.tar+zstd"),
    ("oci-mediatypes=false", "application/vnd.docker.distribution.manifest.v2+json",
     "application/vnd.docker.image.rootfs.diff.tar.gzip"),
])
def test_compression_and_media_types(tmp_path: Path, proxy: RegistryProxy, sde: None,
                                     options: str, manifest_type: str, layer_type: str) -> None:
    repo = "team/" + options.split("=")[0]
    ref = f"{proxy.host}/{repo}:cache"
    a_root = fresh_store(tmp_path / "a")
    first = build(write_tree(tmp_path / "ctx-a", FILES), a_root,
                  cache_to=[f"type=registry,ref={ref},mode=max,{options}"])
    manifest = manifest_of(proxy, repo)
    assert manifest["mediaType"] == manifest_type
    assert {layer["mediaType"] for layer in manifest["layers"]} == {layer_type}
    b_root = fresh_store(tmp_path / "b")
    with runs_refused():
        second = build(write_tree(tmp_path / "ctx-b", FILES), b_root, cache_from=[ref])
    assert all(s.cached for s in second.steps)
    assert second.result.manifest_digest == first.result.manifest_digest
    # the layers come down in that form when their bytes are needed, verified
    out = flatten(b_root, second.result.image_id, tmp_path / "fb")
    assert (out / "out/joined").read_text() == "alpha\n" * 500 + "beta\n" * 700
    assert dockyard.store_check(root=b_root).ok


def test_several_cache_sources_combine(tmp_path: Path, proxy: RegistryProxy, sde: None) -> None:
    """The builder stage's records in one cache, the final stage's in another: with both, a
    fresh store hits every step; with the second only, the builder stage runs again."""
    builders = f"{proxy.host}/team/builders:cache"
    finals = f"{proxy.host}/team/finals:cache"
    build(write_tree(tmp_path / "ctx-a", FILES), fresh_store(tmp_path / "a"),
          target="builder", cache_to=[f"type=registry,ref={builders}"])
    first = build(write_tree(tmp_path / "ctx-a2", FILES), fresh_store(tmp_path / "a2"),
                  cache_to=[f"type=registry,ref={finals}"])  # mode=min: the final stage
    with runs_refused():
        both = build(write_tree(tmp_path / "ctx-b", FILES), fresh_store(tmp_path / "b"),
                     cache_from=[builders, finals])
    assert all(s.cached for s in both.steps), both.steps
    assert both.result.manifest_digest == first.result.manifest_digest
    one = build(write_tree(tmp_path / "ctx-c", FILES), fresh_store(tmp_path / "c"),
                cache_from=[finals])
    assert {s.stage: s.cached for s in one.steps if s.display.startswith("RUN")} == {
        "builder": False, "stage-1": True}, one.steps
    assert one.result.manifest_digest == first.result.manifest_digest


def test_export_mounts_what_the_registry_holds_elsewhere(tmp_path: Path, proxy: RegistryProxy,
                                                         sde: None) -> None:
    """An image pushed to one repository, then its cache exported to another of the same
    registry: every layer is mounted across repositories, none uploaded or compressed again."""
    root = fresh_store(tmp_path / "a")
    ctx = write_tree(tmp_path / "ctx", FILES)
    build(ctx, root, tags=[f"{proxy.host}/team/pushed:1"], outputs=["type=image,push=true"])
    proxy.reset()
    again = build(ctx, root, cache_to=[f"type=registry,ref={proxy.host}/team/mounted:cache"])
    text = logs(again.events, "exporting cache to")
    assert "(0 compressed now)" in text, text
    assert "layers: 0 uploaded, 2 mounted, 0 already there" in text, text  # mode=min
    mounts = [s for s in proxy.seen if s.method == "POST" and "mount=" in s.path]
    assert len(mounts) == 2 and all(s.status == 201 for s in mounts), mounts
    patches = [s for s in proxy.seen if s.method in ("PATCH", "PUT") and "/blobs/" in s.path]
    assert len(patches) == 1, patches  # the cache config only


def test_a_store_that_exported_gives_a_fresh_stores_manifest(tmp_path: Path, sde: None) -> None:
    """A cache export keeps compressed forms of the layers; a later build that makes one of
    them again (the same diff id on a changed parent) must still describe it as a fresh
    store does, or the image digest depends on the store's history (the farm saw it: B and
    C, fully cached, did not give A's digest)."""
    a_root = fresh_store(tmp_path / "a")
    build(write_tree(tmp_path / "ctx-1", FILES), a_root,
          cache_to=[f"type=local,dest={tmp_path / 'cache'},mode=max"])
    same_size = dict(FILES, **{"src/a.txt": "ALPHA\n" * 500})  # joined changes, its size not
    again = build(write_tree(tmp_path / "ctx-2", same_size), a_root)
    cached = [s.cached for s in again.steps if s.stage == "stage-1"]
    assert cached == [False, True] or cached == [False, False], again.steps
    fresh = build(write_tree(tmp_path / "ctx-3", same_size), fresh_store(tmp_path / "f"))
    assert again.result.image_id == fresh.result.image_id
    assert again.result.manifest_digest == fresh.result.manifest_digest
