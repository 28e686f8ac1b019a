"""A pull keeps the registry's compressed blobs only, and checks each layer's diff_id on its
first use (issue 15), against a real registry (Debian's ``docker-registry`` on loopback):

* everything works on such a store: ``run``, ``cp``, ``save``, ``export``, a build ``FROM``
  it (the built image's digest is the one a store with the tars gives), ``push`` (the blobs
  as they are: nothing compressed or written), ``store check``, prune;
* a malicious image (each blob is what its manifest says, but a layer decompresses to
  something else than the config's diff_id) pulls, then fails at its first use with an
  error naming the image and the layer, leaving no snapshot and no blob of it, the store
  consistent;
* a truncated blob is never stored.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
from faultproxy import proxy_for
from test_build_support import build, dockyard_cli, fresh_store, needs_runtime, write_tree
from test_registry_support import Registry, needs_registry, registry, store_blobs, store_tmp

import dockyard
from dockyard.errors import DockyardError, RegistryError
from dockyard.image.oci import chain_ids
from dockyard.registry import RegistryClient, RegistryOptions, pull, push
from dockyard.store.db import Store

__all__ = ["registry"]  # fixture

pytestmark = [needs_registry]

PAYLOAD = b"pulled lazily \x00\x01 " * 4000


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _cli(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*dockyard_cli(), "--root", str(root), *args], capture_output=True,
                          text=True, check=False)
    if check:
        assert done.returncode == 0, (args, done.stderr)
    return done


def _no_tar_blobs(store: Store, diff_ids: list[str]) -> bool:
    return not any(store.blobs.has(d) for d in diff_ids)


def _committed_chains(root: Path) -> set[str]:
    from dockyard.snapshot._meta import MetaTable

    if not (root / "snapshots" / "snapshots").is_dir():
        return set()
    return {k for k, r in MetaTable(root / "snapshots").all().items() if r.kind == "committed"}


def _assert_clean(root: Path) -> None:
    report = dockyard.store_check(root=root)
    assert report.ok, report.problems
    assert store_tmp(root) == []


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory, registry: Registry) -> tuple[Path, str, str]:
    """A store with busybox and an image on it, pushed: (its root, image id, reference)."""
    tmp = tmp_path_factory.mktemp("pull-lazy")
    root = fresh_store(tmp / "store")
    ctx = write_tree(tmp / "ctx", {
        "Dockerfile": "FROM busybox\nCOPY payload.bin /data/payload.bin\n"
                      "CMD [\"cat\", \"/data/payload.bin\"]\n",
        "payload.bin": PAYLOAD,
    })
    result = dockyard.build(str(ctx), tags=["lazy-app:1"], root=str(root))
    dest = f"{registry.host}/lazy/app:1"
    store = Store.open(root)
    try:
        push(store, "lazy-app:1", dest)
    finally:
        store.close()
    return root, result.image_id, dest


def test_a_pull_stores_the_compressed_blobs_only(pushed: tuple[Path, str, str],
                                                tmp_path: Path, registry: Registry) -> None:
    _, image_id, dest = pushed
    root = tmp_path / "fresh"
    store = Store.open(root)
    result = pull(store, dest)
    assert result.image_id == image_id and result.layers_downloaded == 2
    record = store.get_image(dest)
    diff_ids = list(store.read_config(record).diff_ids)
    manifest = store.read_manifest(record)
    assert _no_tar_blobs(store, diff_ids)
    for diff_id, desc in zip(diff_ids, manifest.layers, strict=True):
        layer = store.get_layer(diff_id)
        assert layer is not None and layer.size is None and not layer.blobs
        assert [p.digest for p in layer.pulled] == [desc.digest]
        assert store.blobs.has(desc.digest)
    # the listing shows the uncompressed size (the gzip trailers'), as for the built image
    assert dockyard.inspect(dest, root=root).size == dockyard.inspect(
        image_id, root=pushed[0]).size
    _assert_clean(root)

    # pushing it elsewhere sends the pulled blobs as they are: nothing is decompressed,
    # compressed or written, and the manifest is the same
    copy = push(store, dest, f"{registry.host}/lazy/copy:1")
    assert copy.digest == result.digest and copy.mounted == 3 and copy.uploaded == 0
    assert _no_tar_blobs(store, diff_ids)
    assert all(store.get_layer(d).pulled for d in diff_ids)  # type: ignore[union-attr]

    # a second pull downloads nothing
    again = pull(store, dest)
    assert (again.layers_downloaded, again.layers_present) == (0, 2)
    store.close()

    # export and save: the layers are inflated once, checked against their diff ids
    out = tmp_path / "rootfs.tar"
    dockyard.export(dest, out, root=root)
    with tarfile.open(out) as tf:
        member = tf.extractfile("data/payload.bin")
        assert member is not None and member.read() == PAYLOAD
    dockyard.save([dest], tmp_path / "saved.tar", root=root)
    other = tmp_path / "loaded"
    dockyard.load(tmp_path / "saved.tar", root=other)
    assert dockyard.inspect(dest, root=other).id == image_id
    store = Store.open(root)
    for diff_id in diff_ids:
        layer = store.get_layer(diff_id)
        assert layer is not None and layer.size == store.blobs.size(diff_id)
        assert layer.pulled == () and "gzip" in layer.blobs
    store.close()
    _assert_clean(root)

    # prune keeps what the image uses; rmi and prune free it all
    dockyard.prune(root=root)
    assert dockyard.inspect(dest, root=root).id == image_id
    _assert_clean(root)
    dockyard.rmi(image_id, force=True, root=root)
    dockyard.prune(root=root)
    assert sorted(p.name for p in (root / "blobs" / "sha256").iterdir()) == []
    _assert_clean(root)


@needs_runtime
def test_run_cp_and_build_on_a_pulled_image(pushed: tuple[Path, str, str],
                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    src_root, _image_id, dest = pushed
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    root = tmp_path / "fresh"
    dockyard.pull(dest, root=root)
    store = Store.open(root)
    diff_ids = list(store.read_config(store.get_image(dest)).diff_ids)
    store.close()

    # run unpacks the layers, each checked on the way; no tar blob is written
    assert _cli(root, "run", "--rm", dest).stdout.encode() == PAYLOAD
    store = Store.open(root)
    assert _no_tar_blobs(store, diff_ids)
    for diff_id in diff_ids:
        layer = store.get_layer(diff_id)
        assert layer is not None and layer.pulled == () and layer.size is not None
    store.close()
    dockyard.cp(dest, "/data/payload.bin", tmp_path / "copied", root=root)
    assert (tmp_path / "copied").read_bytes() == PAYLOAD

    # a build on it gives the image a store with the tars gives (same digests)
    files = {"Dockerfile": "FROM lazy-app:1\nCOPY extra.txt /extra.txt\nRUN cat /extra.txt\n",
             "extra.txt": "on top\n"}
    dockyard.tag(dest, "lazy-app:1", root=root)
    here = build(write_tree(tmp_path / "ctx", files), root, tags=["on-top:1"])
    there = build(write_tree(tmp_path / "ctx2", files), src_root, tags=["on-top:1"])
    assert here.result.image_id == there.result.image_id
    assert here.result.manifest_digest == there.result.manifest_digest
    _assert_clean(root)


def test_a_build_that_never_unpacks_the_base_gets_the_same_digest(
        pushed: tuple[Path, str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src_root, _image_id, dest = pushed
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    root = tmp_path / "fresh"
    dockyard.pull(dest, root=root)
    dockyard.tag(dest, "lazy-app:1", root=root)
    files = {"Dockerfile": "FROM lazy-app:1\nLABEL on=top\nENV X=1\n"}
    here = build(write_tree(tmp_path / "ctx", files), root, tags=["labelled:1"])
    there = build(write_tree(tmp_path / "ctx2", files), src_root, tags=["labelled:1"])
    assert here.result.manifest_digest == there.result.manifest_digest
    _assert_clean(root)


# ----------------------------------------------------------------------- a malicious image

GOOD = {"etc/motd": b"a layer you can trust\n" * 50}
EVIL = {"etc/motd": b"a layer you should not\n" * 50}


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _push_malicious(registry: Registry, repo: str, base_layers: list[tuple[bytes, str]]
                    ) -> tuple[str, str, str]:
    """Upload an image whose last layer's blob (the bytes the manifest names) decompresses to
    EVIL while its config names GOOD's diff id. ``base_layers``: honest (gzip blob, diff id)
    below it. Returns (reference, the bad layer's diff id, its blob digest)."""
    good_tar, evil_tar = _tar(GOOD), _tar(EVIL)
    evil_gz = gzip.compress(evil_tar, mtime=0)
    layers = [*base_layers, (evil_gz, _digest(good_tar))]
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/cat", "/etc/motd"]},
        "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": _digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": _digest(blob), "size": len(blob)} for blob, _ in layers],
    }).encode()
    with RegistryClient(registry.host, RegistryOptions()) as client:
        for blob in [config, *(b for b, _ in layers)]:
            client.upload_blob(repo, _digest(blob), len(blob), lambda b=blob: io.BytesIO(b))
        client.put_manifest(repo, "1", manifest, "application/vnd.oci.image.manifest.v1+json")
    return f"{registry.host}/{repo}:1", _digest(good_tar), _digest(evil_gz)


def _busybox_layer(root: Path) -> tuple[bytes, str]:
    """busybox's layer as an honest gzip blob, with its diff id."""
    store = Store.open(root)
    try:
        diff_id = store.read_config(store.get_image("busybox:latest")).diff_ids[0]
        data = store.blobs.read_bytes(store.ensure_layer_blob(diff_id))
    finally:
        store.close()
    return gzip.compress(data, mtime=0), diff_id


@needs_runtime
def test_a_malicious_layer_fails_at_first_use_and_leaves_nothing(
        pushed: tuple[Path, str, str], tmp_path: Path, registry: Registry) -> None:
    base = _busybox_layer(pushed[0])
    name, bad_diff, bad_blob = _push_malicious(registry, "evil/app", [base])
    root = tmp_path / "victim"
    # the pull checks what it can: each blob is the one the manifest names
    dockyard.pull(name, root=root)
    store = Store.open(root)
    diff_ids = list(store.read_config(store.get_image(name)).diff_ids)
    store.close()
    assert diff_ids[-1] == bad_diff
    blobs_before = store_blobs(root)
    _assert_clean(root)

    expected = (f"layer {bad_diff} of {name} does not match its diff_id: the blob "
                f"{bad_blob}, as pulled, decompresses to ")
    for args in (("run", "--rm", name), ("cp", f"{name}:/etc/motd", str(tmp_path / "m")),
                 ("export", name, "-o", str(tmp_path / "x.tar")),
                 ("save", name, "-o", str(tmp_path / "s.tar"))):
        done = _cli(root, *args, check=False)
        assert done.returncode != 0, args
        assert expected in done.stderr and "tampered with" in done.stderr, (args, done.stderr)
        assert not (tmp_path / "m").exists() and not (tmp_path / "x.tar").exists()
        # no snapshot of the bad layer, no blob of it (the honest one below may stay)
        assert chain_ids(diff_ids)[-1] not in _committed_chains(root)
        assert store_blobs(root) <= blobs_before | {diff_ids[0]}
        assert not (root / "blobs" / "sha256" / bad_diff.removeprefix("sha256:")).exists()
        _assert_clean(root)

    # a build FROM it fails the same way
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": f"FROM {name}\nRUN cat /etc/motd\n"})
    with pytest.raises(DockyardError, match="does not match its diff_id"):
        dockyard.build(str(ctx), root=str(root))
    assert chain_ids(diff_ids)[-1] not in _committed_chains(root)
    _assert_clean(root)

    # the layer is never taken as the true layer's form: a store that has the true layer
    # and pulls the malicious image pushes its own image unharmed
    honest = tmp_path / "honest"
    honest_store = Store.open(honest)
    try:
        good_tar = _tar(GOOD)
        honest_store.blobs.put_bytes(good_tar)
        honest_store.put_layer(bad_diff, len(good_tar))
        pull(honest_store, name)
        assert honest_store.layers.checked_form(bad_diff, "gzip") is None
        assert honest_store.ensure_layer_blob(bad_diff) == bad_diff
    finally:
        honest_store.close()
    _assert_clean(honest)


def test_a_truncated_blob_is_never_stored(pushed: tuple[Path, str, str], tmp_path: Path,
                                          registry: Registry,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _, _image_id, dest = pushed
    monkeypatch.setenv("DOCKYARD_REGISTRY_RETRIES", "1")
    root = tmp_path / "fresh"
    with RegistryClient(registry.host, RegistryOptions()) as client:
        body, _, _ = client.get_manifest("lazy/app", "1")
    top = json.loads(body)["layers"][-1]["digest"]  # the pushed (gzip) blob
    with proxy_for(registry.host) as proxy:
        proxy.faults["blob-get"] = ["truncate"] * 100  # the top layer, every time
        proxy.only.add(top)
        ref = dest.replace(registry.host, proxy.host)
        with pytest.raises(RegistryError, match=rf"download of layer {top} failed after "
                           r"\d+ of \d+ bytes.*\(tried 2 times\)"):
            dockyard.pull(ref, root=root)
        assert any(s.fault == "truncate" for s in proxy.seen)
    store = Store.open(root)
    try:
        assert store.list_images() == [] and store.list_layer_ids() == []
    finally:
        store.close()
    assert store_blobs(root) == set()
    _assert_clean(root)
