"""Fuzzing (hypothesis) of what ``load`` reads from an archive (its JSON documents) and of tar
headers (through ``load``, ``import`` and the layer applier): only DockyardError may come
out, nothing is written outside the target, and no temp file is left in the store."""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import contextlib

from badarchives import LAYER, Entry, docker_archive, oci_archive, sha, tar_bytes
from dockyard.errors import DockyardError
from dockyard.exporter.load import import_rootfs, load_archive
from dockyard.layers.apply import apply_layer, check_tar
from dockyard.store.db import Store

_KEYS = ["Config", "Layers", "RepoTags", "manifests", "digest", "config", "layers", "mediaType",
         "rootfs", "diff_ids", "platform", "os", "architecture", "annotations", "size",
         "schemaVersion", "io.containerd.image.name", "type"]
_DIGESTS = [sha(LAYER), "sha256:" + "0" * 64, "sha256:../../etc/passwd", "md5:abc", ""]
_NAMES = ["manifest.json", "layer0/layer.tar", "../../x", "/etc/passwd", "blobs/sha256/" + "0" * 64,
          "a/b/../../c", "", "."]

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True), st.text(max_size=20), st.sampled_from(_DIGESTS),
    st.sampled_from(_NAMES))
_json = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(_KEYS), st.text(max_size=8)), children,
                        max_size=5)),
    max_leaves=25)


def _good_docker_entry(layer: bytes = LAYER) -> tuple[dict[str, Any], bytes]:
    cfg = {"architecture": "amd64", "os": "linux", "config": {},
           "rootfs": {"type": "layers", "diff_ids": [sha(layer)]}}
    cbytes = json.dumps(cfg).encode()
    return cfg, cbytes


@pytest.fixture(scope="module")
def store() -> Store:
    tmp = Path(tempfile.mkdtemp(prefix="dockyard-fuzz-"))
    yield Store.open(tmp / "store")  # type: ignore[misc]
    shutil.rmtree(tmp, ignore_errors=True)


def _load(store: Store, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.tar"
        path.write_bytes(data)
        try:
            load_archive(store, path)
        except DockyardError as err:
            text = str(err)
            assert "\n" not in text and text, text
        assert sorted(os.listdir(tmp)) == ["a.tar"]
    assert list((store.root / "tmp").iterdir()) == []


_SETTINGS = settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow])


@_SETTINGS
@given(manifest=_json)
def test_fuzz_docker_manifest(store: Store, manifest: Any) -> None:
    _load(store, docker_archive(manifest=manifest))


@_SETTINGS
@given(entry=st.dictionaries(st.sampled_from(["Config", "Layers", "RepoTags", "x"]), _json,
                             max_size=4))
def test_fuzz_docker_manifest_entry(store: Store, entry: dict[str, Any]) -> None:
    cfg, cbytes = _good_docker_entry()
    base = {"Config": sha(cbytes)[7:] + ".json", "Layers": ["layer0/layer.tar"]}
    _load(store, docker_archive(manifest=[{**base, **entry}], config=cfg))


@_SETTINGS
@given(config=_json)
def test_fuzz_docker_config(store: Store, config: Any) -> None:
    _load(store, docker_archive(config=config))


@_SETTINGS
@given(index=_json)
@example(index={"manifests": 1})
def test_fuzz_oci_index(store: Store, index: Any) -> None:
    _load(store, oci_archive(index=index))


@_SETTINGS
@given(manifest=_json)
def test_fuzz_oci_manifest(store: Store, manifest: Any) -> None:
    _load(store, oci_archive(manifest=manifest))


@_SETTINGS
@given(config=_json, layers=st.lists(_json, max_size=3))
def test_fuzz_oci_config_and_layers(store: Store, config: Any, layers: list[Any]) -> None:
    cbytes = json.dumps(config).encode()
    manifest = {"config": {"digest": sha(cbytes), "size": len(cbytes)}, "layers": layers}
    _load(store, oci_archive(manifest=manifest, config=config))


# --- tar headers ---------------------------------------------------------------------------

_SAMPLE = tar_bytes([
    Entry("dir", type=tarfile.DIRTYPE, mode=0o755),
    Entry("dir/file", b"hello world\n" * 20, pax={"SCHILY.xattr.user.x": "1"}),
    Entry("dir/link", type=tarfile.SYMTYPE, linkname="file"),
    Entry("dir/hard", type=tarfile.LNKTYPE, linkname="dir/file"),
    Entry("dir/.wh.gone", b""),
    Entry("long/" + "n" * 150, b"x"),
])
_HEADERS = [i * 512 for i in range(len(_SAMPLE) // 512)]


def _fix_checksums(data: bytearray) -> None:
    for start in range(0, len(data) - 511, 512):
        block = data[start:start + 512]
        if not any(block):
            continue
        block[148:156] = b" " * 8
        data[start + 148:start + 156] = b"%06o\0 " % sum(block)


@st.composite
def _mutated_tar(draw: st.DrawFn) -> bytes:
    data = bytearray(_SAMPLE)
    for _ in range(draw(st.integers(1, 6))):
        block = draw(st.sampled_from(_HEADERS))
        offset = draw(st.integers(0, 511))
        value = draw(st.binary(min_size=1, max_size=16))
        data[block + offset:block + offset + len(value)] = value
    if draw(st.booleans()):
        _fix_checksums(data)
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    return bytes(data[:cut] if cut is not None else data)


@settings(max_examples=300, deadline=None)
@given(data=_mutated_tar())
def test_fuzz_tar_headers_apply(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        with contextlib.suppress(DockyardError):
            apply_layer(io.BytesIO(data), root)
        with contextlib.suppress(DockyardError):
            check_tar(io.BytesIO(data))  # type: ignore[arg-type]
        assert os.listdir(tmp) == ["root"]


@_SETTINGS
@given(data=_mutated_tar())
def test_fuzz_tar_headers_import_and_load(store: Store, data: bytes) -> None:
    with contextlib.suppress(DockyardError):
        import_rootfs(store, io.BytesIO(data), ["fuzz/import:1"])
    assert list((store.root / "tmp").iterdir()) == []
    _load(store, docker_archive(layer=data))
