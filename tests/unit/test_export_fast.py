"""Issue 18, the OCI export of many small layers: the archive's blobs are copied inside the
kernel with tarfile's framing, the tar hasher passes file contents through without a copy,
the tar writer keeps one read buffer per thread. Each gives the bytes the plain form gave."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockyard.exporter import layout
from dockyard.layers._tarfmt import HashingWriter


class _Blobs:
    """What _TarSink.add_blob asks of a store: ``blobs.open(digest)``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def open(self, digest: str) -> Any:
        return open(self.root / digest.partition(":")[2], "rb")


class _Store:
    def __init__(self, root: Path) -> None:
        self.blobs = _Blobs(root)


def _reference(entries: list[tuple[str, str, bytes]]) -> bytes:
    """The archive as tarfile's stream mode wrote it before."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        seen: set[str] = set()
        for kind, name, data in entries:
            full = layout._blob_name(name) if kind == "blob" else name
            if full in seen:
                continue
            parts = full.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i]) + "/"
                if d not in seen:
                    seen.add(d)
                    info = tarfile.TarInfo(d)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
            seen.add(full)
            info = tarfile.TarInfo(full)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


_ENTRIES = st.lists(
    st.tuples(st.sampled_from(["bytes", "blob"]),
              st.sampled_from(["oci-layout", "index.json", "a/b/c", "été/x", "n" * 120]),
              st.binary(max_size=3000)),
    max_size=8)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=_ENTRIES, to_file=st.booleans())
def test_the_archive_is_tarfiles_stream(
    tmp_path_factory: Any, entries: list[tuple[str, str, bytes]], to_file: bool,
) -> None:
    base = tmp_path_factory.mktemp("sink")
    blobs = base / "blobs"
    blobs.mkdir()
    fixed: list[tuple[str, str, bytes]] = []
    for kind, name, data in entries:
        if kind == "blob":
            hexdigest = hashlib.sha256(data).hexdigest()
            (blobs / hexdigest).write_bytes(data)
            name = "sha256:" + hexdigest
        fixed.append((kind, name, data))
    store: Any = _Store(blobs)

    def write(out: Any) -> None:
        sink = layout._TarSink(out)
        for kind, name, data in fixed:
            if kind == "blob":
                sink.add_blob(store, name, len(data))
            else:
                sink.add_bytes(name, data)
        sink.close()

    if to_file:  # the kernel's copy
        with open(base / "out.tar", "wb") as f:
            f.write(b"")
            write(f)
        got = (base / "out.tar").read_bytes()
    else:
        buf = io.BytesIO()
        write(buf)
        got = buf.getvalue()
    assert got == _reference(fixed)


@settings(max_examples=60, deadline=None)
@given(pieces=st.lists(st.integers(0, 200_000), max_size=12))
def test_the_tar_hasher_passes_everything_on_once(pieces: list[int]) -> None:
    out = io.BytesIO()
    writer = HashingWriter(out)
    data = b"".join(bytes([i % 251]) * n for i, n in enumerate(pieces))
    pos = 0
    for n in pieces:
        writer.write(memoryview(data)[pos:pos + n])
        pos += n
    assert writer.digest() == "sha256:" + hashlib.sha256(data).hexdigest()
    assert writer.size == len(data)
    assert out.getvalue() == data


def test_chain_ids_are_the_chains_ids(tmp_path: Path) -> None:
    import pytest

    from dockyard.errors import NotFoundError
    from dockyard.snapshot._meta import MetaTable

    table = MetaTable(tmp_path)
    parent = None
    for i in range(5):
        table.create(f"s{i}", "active", parent)
        table.commit(f"c{i}", f"s{i}")
        parent = f"c{i}"
    assert table.chain_ids("c4") == [r.id for r in table.chain("c4")]
    assert len(table.chain_ids("c4")) == 5
    with pytest.raises(NotFoundError):
        table.chain_ids("nope")


def _image_with_fresh_layers(root: Path) -> tuple[Any, Any]:
    """A store with four tar layers (one used twice), none compressed yet, and the image."""
    import json
    import os

    from dockyard.exporter._stored import LayerRef, StoredImage
    from dockyard.store.db import Store

    store = Store.open(root)
    refs = []
    for seed in range(4):
        tar = io.BytesIO()
        with tarfile.open(fileobj=tar, mode="w", format=tarfile.PAX_FORMAT) as t:
            data = os.urandom(200_000) + b"%d\n" % seed * 50_000
            info = tarfile.TarInfo(f"f{seed}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        diff_id = store.blobs.put_bytes(tar.getvalue())
        store.put_layer(diff_id, len(tar.getvalue()))
        refs.append(LayerRef(diff_id, len(tar.getvalue())))
    refs.append(refs[1])
    config = json.dumps({"rootfs": {"diff_ids": [r.diff_id for r in refs]}}).encode()
    image = StoredImage("sha256:" + hashlib.sha256(config).hexdigest(), config, {},
                        tuple(refs), ())
    return store, image


def test_an_archive_of_fresh_layers_is_the_archive_of_stored_ones(tmp_path: Path) -> None:
    """The layers compressed now go into the archive as each is done, from its temp file;
    the archive is the same bytes as the next one, made of the stored forms, and each blob
    in it is what its name says."""
    store, image = _image_with_fresh_layers(tmp_path / "s")
    item = layout.ArchiveImage(image, ("example.com/a:1",))
    layout.write_oci_layout(store, [item], tmp_path / "fresh.tar")
    assert not list(store.blobs.tmp.iterdir())
    stored = io.BytesIO()
    layout.write_oci_layout(store, [item], stored)
    fresh = (tmp_path / "fresh.tar").read_bytes()
    assert fresh == stored.getvalue()
    with tarfile.open(fileobj=io.BytesIO(fresh)) as tar:
        names = tar.getnames()
        for member in tar.getmembers():
            if member.isfile() and member.name.startswith("blobs/sha256/"):
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                assert hashlib.sha256(data).hexdigest() == member.name.rsplit("/", 1)[1]
    assert names[:3] == ["oci-layout", "blobs", "blobs/sha256"]
    assert len([n for n in names if n.startswith("blobs/sha256/")]) == 4 + 2  # + config, manifest


def test_the_workers_run_jobs_give_errors_back_and_drop_the_rest_after_one() -> None:
    import threading

    import pytest

    ran: list[int] = []
    with layout._Workers(2) as workers:
        jobs = [workers.submit(lambda i: ran.append(i) or i * 2, i) for i in range(20)]
        assert [job.result() for job in jobs] == [i * 2 for i in range(20)]
    assert sorted(ran) == list(range(20))

    gate = threading.Event()
    started: list[int] = []

    def job(i: int) -> None:
        started.append(i)
        if i:
            gate.wait(5)  # job 1 runs while job 0's error leaves the block
        raise ValueError(f"job {i}")

    threading.Timer(0.2, gate.set).start()
    with pytest.raises(ValueError, match="job 0"), layout._Workers(1) as workers:
        jobs = [workers.submit(job, i) for i in range(5)]
        jobs[0].result()
    assert started in ([0], [0, 1])  # a running one finishes; the queued ones never run
