"""A registry that misbehaves (a small HTTP server on loopback): wrong digests, truncated
bodies, server errors. Each pull must fail with a RegistryError naming the registry, the
repository and what failed, and leave the store as it was: no image record, no blob, no
temp file. A layer that does not match its diff_id is pulled (the pull checks blobs against
the manifest only) and refused at its first use, keeping nothing of it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_registry_support import store_blobs, store_tmp

from dockyard.errors import RegistryError
from dockyard.registry import pull
from dockyard.store.db import Store


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class FakeImage:
    manifest: bytes
    config: bytes
    blobs: dict[str, bytes]
    layers: list[str]  # compressed layer digests, in order


def _image(diff_id_override: str | None = None) -> FakeImage:
    tars = [_layer({"a.txt": b"first layer\n" * 100}),
            _layer({"b.txt": b"second layer\n" * 3000})]
    gzs = [gzip.compress(t, mtime=0) for t in tars]
    diff_ids = [_digest(t) for t in tars]
    if diff_id_override:
        diff_ids[1] = diff_id_override
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": _digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": _digest(g), "size": len(g)} for g in gzs],
    }).encode()
    blobs = {_digest(config): config, **{_digest(g): g for g in gzs}}
    return FakeImage(manifest, config, blobs, [_digest(g) for g in gzs])


GOOD = _image()
BAD_DIFF = _image(diff_id_override="sha256:" + "ab" * 32)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json",
              length: int | None = None, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)
        if length is not None and length != len(body):
            self.wfile.flush()
            self.close_connection = True

    def do_GET(self) -> None:
        parts = self.path.split("/")
        if self.path == "/v2/":
            self._send(200, b"{}")
            return
        # /v2/<fault>/app/{manifests,blobs}/<ref>
        fault, kind, ref = parts[2], parts[4], parts[5]
        image = BAD_DIFF if fault == "bad-diffid" else GOOD
        if kind == "manifests":
            if fault == "no-manifest":
                self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN",'
                                b'"message":"manifest unknown"}]}')
                return
            headers = {}
            if fault == "wrong-header":
                headers["Docker-Content-Digest"] = "sha256:" + "00" * 32
            self._send(200, image.manifest, "application/vnd.oci.image.manifest.v1+json",
                       headers=headers)
            return
        data = image.blobs.get(ref)
        if data is None:
            self._send(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}')
            return
        is_last_layer = ref == image.layers[-1]
        if is_last_layer and fault == "bad-digest":
            data = data[:-9] + bytes(b ^ 0xFF for b in data[-9:-8]) + data[-8:]
        elif is_last_layer and fault == "truncated":
            self._send(200, data[: len(data) // 2], "application/octet-stream",
                       length=len(data))
            return
        elif is_last_layer and fault == "error500":
            self._send(500, b'{"errors":[{"code":"UNKNOWN","message":"disk on fire"}]}')
            return
        elif is_last_layer and fault == "missing":
            self._send(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}')
            return
        self._send(200, data, "application/octet-stream")

    do_HEAD = do_GET


@pytest.fixture(scope="module")
def fake_registry() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_good_image_pulls(fake_registry: str, tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s")
    result = pull(store, f"{fake_registry}/good/app:1")
    assert result.manifest_digest == _digest(GOOD.manifest)
    assert result.layers_downloaded == 2
    assert store_tmp(store.root) == []


@pytest.mark.parametrize(("fault", "message"), [
    ("bad-digest", r"/bad-digest/app: layer sha256:[0-9a-f]{64} failed verification: got"),
    ("truncated", r"/truncated/app: download of layer sha256:[0-9a-f]{64} failed after \d+ "
                  r"of \d+ bytes"),
    ("error500", r"/error500/app: download of blob sha256:[0-9a-f]{64}: HTTP 500 "
                 r"UNKNOWN: disk on fire"),
    ("missing", r"/missing/app: download of blob sha256:[0-9a-f]{64}: HTTP 404 BLOB_UNKNOWN"),
    ("no-manifest", r"/no-manifest/app: manifest 1: HTTP 404 MANIFEST_UNKNOWN"),
    ("wrong-header", r"/wrong-header/app: manifest 1 does not match the Docker-Content-Digest"),
])
def test_bad_replies_leave_the_store_unchanged(fake_registry: str, tmp_path: Path,
                                               fault: str, message: str) -> None:
    store = Store.open(tmp_path / "s")
    before = store_blobs(store.root)
    with pytest.raises(RegistryError, match=fake_registry + message):
        pull(store, f"{fake_registry}/{fault}/app:1")
    assert store.list_images() == []
    assert store_blobs(store.root) == before
    assert store_tmp(store.root) == []
    assert store.list_layer_ids() == []


def test_a_layer_not_matching_its_diff_id_fails_at_first_use(fake_registry: str,
                                                            tmp_path: Path) -> None:
    from dockyard.errors import StoreError
    from dockyard.store.check import check_store

    store = Store.open(tmp_path / "s")
    name = f"{fake_registry}/bad-diffid/app:1"
    pull(store, name)
    before = store_blobs(store.root)
    bad = "sha256:" + "ab" * 32
    with pytest.raises(StoreError, match=rf"layer {bad} of {name} does not match its diff_id"):
        store.ensure_layer_blob(bad)
    assert store_blobs(store.root) == before and store_tmp(store.root) == []
    assert check_store(store).ok


def test_pull_by_digest_checks_the_manifest(fake_registry: str, tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s")
    wrong = "sha256:" + "cd" * 32
    with pytest.raises(RegistryError, match=rf"manifest {wrong} does not match its digest"):
        pull(store, f"{fake_registry}/good/app@{wrong}")
    right = _digest(GOOD.manifest)
    result = pull(store, f"{fake_registry}/good/app@{right}")
    assert result.digest == right
    assert store.get_image(f"{fake_registry}/good/app@{right}").id == result.image_id
