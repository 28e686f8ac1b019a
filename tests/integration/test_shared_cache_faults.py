"""Registry faults between dockyard and the shared cache (issue 15): a loopback proxy in front
of a real ``docker-registry`` drops connections, answers 429/500/503, cuts bodies short and
flips bytes (a wrong digest). Every transfer succeeds after retries, or fails with an error
that names what failed and how often it was tried; nothing broken is stored, and the store
stays consistent (every blob hashes to its name, no temp file is left, every recorded form
of a layer is present).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultproxy import RegistryProxy, proxy_for
from test_build_support import build, flatten, fresh_store, needs_runtime, write_tree
from test_registry_support import Registry, needs_registry, registry, store_tmp

import dockyard
from dockyard.errors import DockyardError
from dockyard.progress.events import BuildWarning

__all__ = ["registry"]  # fixture

pytestmark = [needs_runtime, needs_registry]

DOCKERFILE = """\
FROM busybox
COPY data/ /data/
RUN cat /data/* > /all && wc -c /all > /size
RUN echo done > /done
"""


def files(tag: str) -> dict[str, str | bytes]:
    return {"Dockerfile": DOCKERFILE, "data/a.bin": (tag * 40000).encode(),
            "data/b.txt": f"{tag}\n" * 3000}


@pytest.fixture
def proxy(registry: Registry) -> Iterator[RegistryProxy]:
    with proxy_for(registry.host) as p:
        yield p


def assert_store_clean(root: Path) -> None:
    """``dockyard store check`` finds nothing wrong; and, directly: every blob hashes to its
    name, no temp file is left, every recorded form of a layer is there."""
    report = dockyard.store_check(root=root)
    assert report.ok, report.problems
    blob_dir = root / "blobs" / "sha256"
    for path in blob_dir.iterdir():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest == path.name, f"blob {path.name} holds {digest}"
    assert store_tmp(root) == []
    with sqlite3.connect(root / "dockyard.db") as db:
        for diff_id, blob in db.execute("SELECT diff_id, blob FROM layer_blobs"):
            assert (blob_dir / blob.removeprefix("sha256:")).exists(), (diff_id, blob)


def faults_seen(proxy: RegistryProxy) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in proxy.seen:
        if s.fault:
            out[s.fault] = out.get(s.fault, 0) + 1
    return out


def test_export_and_lazy_import_survive_faults(tmp_path: Path, proxy: RegistryProxy) -> None:
    ref = f"{proxy.host}/faults/cache:main"
    proxy.faults.update({
        "ping": ["drop"],
        "blob-head": ["500", "503"],
        "upload-start": ["429"],
        "upload": ["drop", "500"],
        "manifest-get": ["503"],
        "manifest-put": ["500", "drop"],
    })
    a_root = fresh_store(tmp_path / "a")
    first = build(write_tree(tmp_path / "ctx-a", files("x")), a_root,
                  cache_to=[f"type=registry,ref={ref},mode=max"])
    seen = faults_seen(proxy)
    assert {"drop", "500", "503", "429"} <= set(seen), seen
    assert_store_clean(a_root)

    # B changes the last step: the first RUN's layer (and the chain below it) is downloaded
    # through drops, truncated bodies and wrong digests
    proxy.reset()
    proxy.faults.update({"blob-get": ["drop", "truncate", "corrupt"],
                         "manifest-get": ["truncate"]})
    changed = dict(files("x"), Dockerfile=DOCKERFILE.replace("echo done", "echo changed"))
    b_root = fresh_store(tmp_path / "b")
    second = build(write_tree(tmp_path / "ctx-b", changed), b_root, cache_from=[ref])
    assert [s.cached for s in second.steps] == [True, True, False]
    seen = faults_seen(proxy)
    assert {"drop", "truncate", "corrupt"} <= set(seen), seen
    out = flatten(b_root, second.result.image_id, tmp_path / "fb")
    assert (out / "size").read_text() == flatten(a_root, first.result.image_id,
                                                 tmp_path / "fa").joinpath("size").read_text()
    assert (out / "done").read_text() == "changed\n"
    assert_store_clean(b_root)


def test_a_fault_that_never_heals_fails_clearly(tmp_path: Path, proxy: RegistryProxy,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKYARD_REGISTRY_RETRIES", "2")
    ref = f"{proxy.host}/faults/broken:main"
    a_root = fresh_store(tmp_path / "a")
    build(write_tree(tmp_path / "ctx-a", files("y")), a_root,
          cache_to=[f"type=registry,ref={ref},mode=max"])
    b_root = fresh_store(tmp_path / "b")
    cached = build(write_tree(tmp_path / "ctx-b", files("y")), b_root, cache_from=[ref])
    assert all(s.cached for s in cached.steps)
    # every download of a layer comes back with a wrong digest: reading the image's files
    # fails, naming the layer and the tries, and stores nothing
    proxy.faults["blob-get"] = ["corrupt"] * 100
    with pytest.raises(DockyardError, match=r"layer sha256:\w+ cannot be downloaded: .*"
                       r"(failed verification|cannot be decompressed).*\(tried 3 times\)"):
        flatten(b_root, cached.result.image_id, tmp_path / "fb")
    assert_store_clean(b_root)
    # the registry answering 500 for good: the cache source is a warning, the build goes on
    proxy.reset()
    proxy.faults["manifest-get"] = ["500"] * 100
    c_root = fresh_store(tmp_path / "c")
    third = build(write_tree(tmp_path / "ctx-c", files("y")), c_root, cache_from=[ref])
    warnings = [e.message for e in third.events if isinstance(e, BuildWarning)]
    assert any("HTTP 500" in w and "tried 3 times" in w for w in warnings), warnings
    assert not any(s.cached for s in third.steps)
    assert_store_clean(c_root)
    # an export whose uploads always fail is an error naming the blob and the tries
    proxy.reset()
    proxy.faults["upload"] = ["500"] * 100
    with pytest.raises(DockyardError, match=r"upload of blob sha256:.*HTTP 500.*tried 3 times"):
        build(write_tree(tmp_path / "ctx-c2", files("z")), c_root,
              cache_to=[f"type=registry,ref={proxy.host}/faults/other:main"])
    assert_store_clean(c_root)


def test_pull_and_push_retry(tmp_path: Path, proxy: RegistryProxy) -> None:
    a_root = fresh_store(tmp_path / "a")
    image = f"{proxy.host}/faults/app:1"
    proxy.faults.update({"upload": ["drop"], "blob-head": ["503"], "manifest-put": ["429"]})
    build(write_tree(tmp_path / "ctx", files("p")), a_root, tags=[image],
          outputs=["type=image,push=true"])
    proxy.reset()
    proxy.faults.update({"blob-get": ["500", "truncate", "corrupt"], "manifest-get": ["drop"]})
    b_root = tmp_path / "b"
    dockyard.pull(image, root=b_root)
    assert {"500", "truncate", "corrupt", "drop"} <= set(faults_seen(proxy))
    assert_store_clean(b_root)


@pytest.mark.parametrize("fault", ["drop", "500", "corrupt-body"])
def test_a_broken_streamed_upload_falls_back(tmp_path: Path, proxy: RegistryProxy,
                                             fault: str) -> None:
    """A layer compressed for a push is uploaded while it is compressed (one chunked PATCH,
    then ``PUT ?digest=``). When that stream breaks (the connection drops, the registry
    answers 500, or the bytes arrive changed and the registry refuses the digest), the blob
    the store kept meanwhile is uploaded the usual way: the push succeeds, and the image
    pulls back whole into another store."""
    image = f"{proxy.host}/faults/stream-{fault}:1"
    proxy.faults["upload"] = [fault]
    a_root = fresh_store(tmp_path / "a")
    built = build(write_tree(tmp_path / "ctx", files(f"s-{fault}")), a_root, tags=[image],
                  outputs=["type=image,push=true"])
    streamed = [s for s in proxy.seen if s.method == "PATCH"]
    assert streamed, [(s.method, s.path) for s in proxy.seen]
    assert faults_seen(proxy) == {fault: 1}
    if fault == "corrupt-body":  # the registry refused the digest of what it received
        assert any(s.method == "PUT" and s.status == 400 for s in proxy.seen)
    assert_store_clean(a_root)
    proxy.reset()
    b_root = tmp_path / "b"
    assert dockyard.pull(image, root=b_root).image_id == built.result.image_id
    assert_store_clean(b_root)
    out = flatten(b_root, built.result.image_id, tmp_path / "fb")
    assert (out / "size").read_text() == flatten(
        a_root, built.result.image_id, tmp_path / "fa").joinpath("size").read_text()
