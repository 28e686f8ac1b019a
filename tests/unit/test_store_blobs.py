"""Blob store: verified, atomic, nothing half-written ever visible."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

import pytest

from dockyard.errors import NotFoundError, StoreError
from dockyard.store.blobs import BlobStore


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    store = BlobStore(tmp_path)
    store.ensure()
    return store


def _visible(blobs: BlobStore) -> list[str]:
    return sorted(os.listdir(blobs.dir))


def test_put_and_read(blobs: BlobStore) -> None:
    data = b"hello world\n"
    digest = blobs.put_bytes(data)
    assert digest == _digest(data)
    assert blobs.has(digest)
    assert blobs.size(digest) == len(data)
    assert blobs.read_bytes(digest) == data
    assert blobs.path(digest) == blobs.dir / digest[7:]
    assert list(blobs.iter_digests()) == [digest]
    assert blobs.put_bytes(data) == digest  # idempotent
    assert blobs.delete(digest)
    assert not blobs.delete(digest)
    with pytest.raises(NotFoundError):
        blobs.open(digest)


def test_writer_streams_and_verifies(blobs: BlobStore) -> None:
    chunks = [os.urandom(3000) for _ in range(50)]
    data = b"".join(chunks)
    with blobs.writer() as w:
        for chunk in chunks:
            w.write(chunk)
        w.write(memoryview(b"tail"))
        assert w.size == len(data) + 4
        digest, size = w.commit(_digest(data + b"tail"), len(data) + 4)
    assert blobs.read_bytes(digest) == data + b"tail"
    assert size == len(data) + 4
    assert os.listdir(blobs.tmp) == []


def test_abandoned_writer_leaves_nothing(blobs: BlobStore) -> None:
    with blobs.writer() as w:
        w.write(b"partial")
    assert _visible(blobs) == []
    assert os.listdir(blobs.tmp) == []


def test_failing_writer_leaves_nothing(blobs: BlobStore) -> None:
    with pytest.raises(RuntimeError), blobs.writer() as w:
        w.write(b"x" * 100_000)
        raise RuntimeError("network dropped")
    assert _visible(blobs) == []
    assert os.listdir(blobs.tmp) == []


def test_digest_mismatch_raises_and_leaves_nothing(blobs: BlobStore) -> None:
    with pytest.raises(StoreError, match="digest mismatch"), blobs.writer() as w:
        w.write(b"actual content")
        w.commit(_digest(b"expected content"))
    assert _visible(blobs) == []
    assert os.listdir(blobs.tmp) == []
    with pytest.raises(StoreError, match="size mismatch"), blobs.writer() as w:
        w.write(b"abc")
        w.commit(expected_size=4)
    assert _visible(blobs) == []
    with pytest.raises(StoreError, match="digest mismatch"):
        blobs.put_bytes(b"a", expected_digest=_digest(b"b"))
    with pytest.raises(StoreError, match="digest mismatch"):
        blobs.put_stream(io.BytesIO(b"a"), expected_digest=_digest(b"b"))
    assert _visible(blobs) == []


def test_writer_data_is_invisible_until_commit(blobs: BlobStore) -> None:
    data = b"z" * 10_000
    with blobs.writer() as w:
        w.write(data)
        w.flush()
        assert not blobs.has(_digest(data))
        w.commit()
        assert blobs.has(_digest(data))


def test_concurrent_writers_of_the_same_blob(blobs: BlobStore) -> None:
    data = os.urandom(2 << 20)
    expected = _digest(data)
    barrier = threading.Barrier(6)
    results: list[tuple[str, int]] = []
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with blobs.writer() as w:
                barrier.wait()
                for i in range(0, len(data), 65536):
                    w.write(data[i : i + 65536])
                results.append(w.commit(expected, len(data)))
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=write) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results == [(expected, len(data))] * 6
    assert _visible(blobs) == [expected[7:]]
    assert blobs.read_bytes(expected) == data
    assert os.listdir(blobs.tmp) == []


def test_put_stream(blobs: BlobStore) -> None:
    data = os.urandom(3 << 20)
    digest, size = blobs.put_stream(io.BytesIO(data), _digest(data), len(data))
    assert (digest, size) == (_digest(data), len(data))
    with blobs.open(digest) as f:
        assert f.read() == data


@pytest.mark.parametrize(
    "bad", ["sha256:../../etc/passwd", "sha256:" + "A" * 64, "md5:" + "a" * 32, "a" * 64]
)
def test_invalid_digests_never_name_a_path(blobs: BlobStore, bad: str) -> None:
    with pytest.raises(StoreError, match="invalid digest"):
        blobs.path(bad)
    with pytest.raises(StoreError):
        blobs.has(bad)


def test_a_batch_makes_its_blobs_visible_together_with_one_directory_fsync(
    blobs: BlobStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append("dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    datas = [b"one" * 1000, b"two" * 1000, b"three" * 1000]
    with blobs.batch() as batch:
        for data in datas:
            with batch.writer() as w:
                w.write(data)
                assert w.commit(_digest(data)) == (_digest(data), len(data))
            assert _visible(blobs) == []  # nothing is in place before the batch ends
    assert _visible(blobs) == sorted(_digest(d)[7:] for d in datas)
    assert synced.count("file") == 3 and synced.count("dir") == 1
    for data in datas:
        assert blobs.read_bytes(_digest(data)) == data
    assert list(blobs.tmp.iterdir()) == []


def test_a_failed_batch_leaves_nothing_behind(blobs: BlobStore) -> None:
    with pytest.raises(RuntimeError), blobs.batch() as batch:
        with batch.writer() as w:
            w.write(b"committed")
            w.commit()
        with batch.writer() as w:
            w.write(b"half")
            raise RuntimeError("compressor failed")
    assert _visible(blobs) == []
    assert list(blobs.tmp.iterdir()) == []


def test_a_batch_fsync_error_fails_the_batch(
    blobs: BlobStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def failing_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(StoreError, match="No space left"), blobs.batch() as batch, \
            batch.writer() as w:
        w.write(b"x" * 100)
        w.commit()
    assert _visible(blobs) == []
    assert list(blobs.tmp.iterdir()) == []


def test_a_batch_takes_writers_from_several_threads(blobs: BlobStore) -> None:
    datas = [os.urandom(3000 + i) for i in range(8)]
    with blobs.batch() as batch:
        def put(data: bytes) -> None:
            with batch.writer() as w:
                w.write(data)
                w.commit(_digest(data))

        threads = [threading.Thread(target=put, args=(d,)) for d in datas]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert _visible(blobs) == sorted(_digest(d)[7:] for d in datas)
