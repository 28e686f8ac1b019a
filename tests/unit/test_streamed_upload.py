"""Layers uploaded while they are compressed (issue 15's push and export speed): the tee of
``compressed_layers`` sees exactly the stored blob's bytes, a compression that fails aborts
its tee and stores nothing, and a :class:`StreamedUpload` closes an upload only with the
committed blob's digest and size, never blocks the compressor when the upload dies, and
reports a failed stream so the caller uploads the stored blob instead."""

from __future__ import annotations

import io
import tarfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from dockyard.errors import RegistryError, StoreError
from dockyard.exporter import layout
from dockyard.exporter.layout import compressed_layers
from dockyard.layers.compress import open_decompressed
from dockyard.registry.push import StreamedUpload
from dockyard.store.db import Store


def layer_tar(seed: int, size: int = 3 << 20) -> bytes:
    import random

    data = random.Random(seed).randbytes(size)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(f"f{seed}.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def store_with_layers(root: Path, *seeds: int) -> tuple[Store, list[str]]:
    store = Store.open(root)
    diff_ids = []
    for seed in seeds:
        tar = layer_tar(seed)
        diff_id = store.blobs.put_bytes(tar)
        store.put_layer(diff_id, len(tar))
        diff_ids.append(diff_id)
    return store, diff_ids


class Recorder:
    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.finished: tuple[str, int] | None = None
        self.aborted = False

    def write(self, data: bytes) -> int:
        assert isinstance(data, bytes)
        self.parts.append(data)
        return len(data)

    def finish(self, digest: str, size: int) -> None:
        self.finished = (digest, size)

    def abort(self) -> None:
        self.aborted = True


def temps(store: Store) -> list[Path]:
    return list(store.blobs.tmp.iterdir()) if store.blobs.tmp.exists() else []


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_the_tee_sees_the_stored_blob(tmp_path: Path, kind: Any) -> None:
    store, diff_ids = store_with_layers(tmp_path / "s", 1, 2, 3)
    tees = {d: Recorder() for d in diff_ids}
    made = compressed_layers(store, diff_ids, kind, tees.get)
    for diff_id, desc in zip(diff_ids, made, strict=True):
        tee = tees[diff_id]
        assert b"".join(tee.parts) == store.blobs.read_bytes(desc.digest)
        assert tee.finished == (desc.digest, desc.size)
        assert not tee.aborted
        with store.blobs.open(desc.digest) as f, open_decompressed(f) as plain:
            assert plain.read() == store.blobs.read_bytes(diff_id)
    # the same bytes as without a tee (deterministic compression): the digests stay
    again, _ = store_with_layers(tmp_path / "t", 1, 2, 3)
    assert [d.digest for d in compressed_layers(again, diff_ids, kind)] == \
        [d.digest for d in made]
    # the forms are kept: a second call compresses nothing and asks for no tee
    asked: list[str] = []
    compressed_layers(store, diff_ids, kind, lambda d: asked.append(d))
    assert asked == []


def test_a_failed_compression_aborts_its_tee(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    store, diff_ids = store_with_layers(tmp_path / "s", 4, 5)
    real = layout._tar_source

    def source(store: Store, diff_id: str, layer: object = None) -> Callable[[BinaryIO], None]:
        if diff_id != diff_ids[1]:
            return real(store, diff_id)

        def broken(out: BinaryIO) -> None:
            out.write(b"\0" * (2 << 20))
            raise StoreError("snapshot changed")

        return broken

    monkeypatch.setattr(layout, "_tar_source", source)
    tees = {d: Recorder() for d in diff_ids}
    with pytest.raises(StoreError, match="snapshot changed"):
        compressed_layers(store, diff_ids, "gzip", tees.get)
    assert tees[diff_ids[1]].aborted and tees[diff_ids[1]].finished is None
    assert store.get_layer(diff_ids[1]).blobs.get("gzip") is None  # type: ignore[union-attr]
    assert temps(store) == []


class FakeClient:
    """Stands in for a RegistryClient: ``behaviour`` reads the pieces (or not)."""

    def __init__(self, behaviour: Callable[[Iterable[bytes], Callable[[], tuple[str, int]]],
                                           str]) -> None:
        self.behaviour = behaviour

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def upload_stream(self, repo: str, pieces: Iterable[bytes],
                      close: Callable[[], tuple[str, int]]) -> str:
        return self.behaviour(pieces, close)


def run_stream(upload: StreamedUpload, parts: Iterator[bytes], end: tuple[str, int] | None,
               ) -> str | None:
    for part in parts:
        upload.write(part)
    if end is None:
        upload.abort()
    else:
        upload.finish(*end)
    return upload.uploaded()


def test_a_stream_closes_with_the_committed_blob() -> None:
    received: list[bytes] = []

    def registry(pieces: Iterable[bytes], close: Callable[[], tuple[str, int]]) -> str:
        received.extend(pieces)
        digest, size = close()
        assert size == sum(map(len, received))
        return digest

    upload = StreamedUpload(lambda: FakeClient(registry), "repo")  # type: ignore[arg-type,return-value]
    parts = [bytes([i]) * 1000 for i in range(40)]  # more than the queue holds
    assert run_stream(upload, iter(parts), ("sha256:" + "a" * 64, 40000)) == \
        "sha256:" + "a" * 64
    assert received == parts and upload.error is None


def test_a_stream_of_the_wrong_size_is_not_closed() -> None:
    def registry(pieces: Iterable[bytes], close: Callable[[], tuple[str, int]]) -> str:
        list(pieces)
        close()
        raise AssertionError("closed")

    upload = StreamedUpload(lambda: FakeClient(registry), "repo")  # type: ignore[arg-type,return-value]
    assert run_stream(upload, iter([b"x" * 10]), ("sha256:" + "b" * 64, 11)) is None
    assert isinstance(upload.error, RegistryError)


def test_an_aborted_blob_is_never_closed() -> None:
    closed = threading.Event()

    def registry(pieces: Iterable[bytes], close: Callable[[], tuple[str, int]]) -> str:
        list(pieces)  # raises: the blob could not be made
        closed.set()
        return close()[0]

    upload = StreamedUpload(lambda: FakeClient(registry), "repo")  # type: ignore[arg-type,return-value]
    assert run_stream(upload, iter([b"y" * 100] * 3), None) is None
    assert not closed.is_set()
    assert isinstance(upload.error, RegistryError)


def test_a_dead_upload_does_not_block_the_compressor() -> None:
    def registry(pieces: Iterable[bytes], close: Callable[[], tuple[str, int]]) -> str:
        raise RegistryError("connection dropped")  # reads nothing

    upload = StreamedUpload(lambda: FakeClient(registry), "repo")  # type: ignore[arg-type,return-value]
    done = threading.Event()

    def compressor() -> None:
        run_stream(upload, iter([b"z" * 10] * 200), ("sha256:" + "c" * 64, 2000))
        done.set()

    threading.Thread(target=compressor, daemon=True).start()
    assert done.wait(10), "the compressor is stuck on a full queue"
    assert upload.uploaded() is None
    assert "connection dropped" in str(upload.error)


def test_a_layer_never_compressed_never_starts_an_upload() -> None:
    upload = StreamedUpload(lambda: pytest.fail("connected"), "repo")
    upload.abort()
    assert upload.uploaded() is None
