"""The bad-archive corpus: crafted archives fed to ``ADD``, ``load``, ``import`` and tar build
contexts through the real CLI.

Each case gives a clear one-line error naming the file (or a documented result), never a
traceback; nothing is written outside the target (entries aim at a watched sentinel
directory), and the store is left without temp files or mounts.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from test_build_support import dockyard_cli

from badarchives import (
    LAYER,
    Entry,
    compressors,
    corrupt_gzip,
    docker_archive,
    gzip_bomb,
    oci_archive,
    sha,
    sparse_tar,
    tar_bytes,
    with_header_field,
)
from dockyard.snapshot.base import our_mounts

UP = "../" * 40  # from anywhere below / back to /


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # "add", "load", "import", "context"
    make: Callable[[Path], bytes]  # sentinel dir -> archive bytes
    error: str | None  # regex the one-line error must match; None: the command succeeds
    env: dict[str, str] = field(default_factory=dict)
    check: Callable[[Path], None] | None = None  # on success: checks the store root


def _escape(sentinel: Path, name: str = "pwned") -> str:
    return UP + str(sentinel / name).lstrip("/")


def _gz(data: bytes) -> bytes:
    return compressors()["gzip"](data)


def _ctx(entries: list[Entry]) -> bytes:
    return tar_bytes([Entry("Dockerfile", b"FROM scratch\nCOPY . /ctx/\n"), *entries])


def _deep(depth: int) -> str:
    return "/".join(["d"] * depth) + "/f"


def _nested_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _layer_gzip_corrupt() -> bytes:
    return corrupt_gzip(tar_bytes([Entry("a", b"x" * 50_000)]))


# --- cases ------------------------------------------------------------------------------

TAR_CASES: list[tuple[str, Callable[[Path], bytes], str | None]] = [
    # (id, maker, error) -- each runs through ADD and (most) import too
    ("dotdot-escape", lambda s: tar_bytes([Entry(_escape(s), b"x")]), r"escapes the root"),
    ("absolute-name", lambda s: tar_bytes([Entry(str(s / "pwned"), b"x")]), r"absolute path"),
    ("symlink-then-write",
     lambda s: tar_bytes([Entry("lnk", type=tarfile.SYMTYPE, linkname=UP + str(s).lstrip("/")),
                          Entry("lnk/pwned", b"x")]),
     r"leads out of the root"),
    ("abs-symlink-then-write",
     lambda s: tar_bytes([Entry("lnk", type=tarfile.SYMTYPE, linkname=str(s)),
                          Entry("lnk/pwned", b"x")]), None),
    ("hardlink-outside",
     lambda s: tar_bytes([Entry("h", type=tarfile.LNKTYPE, linkname=UP + "etc/passwd")]),
     r"escapes the root"),
    ("hardlink-missing",
     lambda s: tar_bytes([Entry("h", type=tarfile.LNKTYPE, linkname="nothere")]),
     r"target not found"),
    ("hardlink-to-dir",
     lambda s: tar_bytes([Entry("d", type=tarfile.DIRTYPE, mode=0o755),
                          Entry("h", type=tarfile.LNKTYPE, linkname="d")]),
     r"target is a directory"),
    ("whiteout-dotdot", lambda s: tar_bytes([Entry("a/.wh...", b"")]), r"invalid whiteout"),
    ("opaque-root", lambda s: tar_bytes([Entry(".wh..wh..opq", b"")]), r"opaque"),
    ("deep-2100", lambda s: tar_bytes([Entry(_deep(2100), b"x")]), r"levels deep"),
    ("long-name-5000", lambda s: tar_bytes([Entry("n" * 5000, b"x")]),
     r"(too long|File name)"),
    ("bad-checksum",
     lambda s: with_header_field(tar_bytes([Entry("a", b"x")]), 148, b"0000000\0", fix=False),
     r"(corrupt|not a (valid )?(layer )?tar|checksum|header)"),
    ("truncated-data", lambda s: tar_bytes([Entry("a", b"x" * 5000)])[:1536],
     r"(truncated|ends too early|unexpected end|corrupt)"),
    ("negative-size",
     lambda s: with_header_field(tar_bytes([Entry("a", b"x")], fmt=tarfile.USTAR_FORMAT), 124,
                                 b"\xff" * 12),
     r"negative size"),
    # tarfile (like Go's archive/tar) reads an unparsable PAX time as 0: documented, not an error
    ("pax-bad-mtime", lambda s: tar_bytes([Entry("a", b"x", pax={"mtime": "yesterday"})]),
     None),
    ("pax-bad-size", lambda s: tar_bytes([Entry("a", b"x", pax={"size": "-5"})]),
     r"negative size"),
    ("pax-huge-size", lambda s: tar_bytes([Entry("a", b"x", pax={"size": "9" * 30})]), r"."),
    ("unknown-type", lambda s: tar_bytes([Entry("a", b"", type=b"Z")]),
     r"unsupported tar entry type"),
    # a device node in an image, as Docker's ADD makes it (the store is root's alone)
    ("device-node", lambda s: tar_bytes([Entry("null", type=tarfile.CHRTYPE, devmajor=1,
                                               devminor=3)]), None),
    ("sparse-bad-map", lambda s: sparse_tar(100, [(50, b"x" * 10), (10, b"y" * 10)]),
     r"invalid sparse map"),
    ("sparse-block-past-end", lambda s: sparse_tar(100, [(95, b"x" * 10)]),
     r"invalid sparse map"),
    ("gzip-corrupt", lambda s: _layer_gzip_corrupt(), r"corrupt gzip data"),
    ("gzip-truncated", lambda s: _gz(tar_bytes([Entry("a", os.urandom(40_000))]))[:5000],
     r"corrupt gzip data"),
    ("xz-corrupt", lambda s: lzma_corrupt(), r"corrupt xz data"),
    ("bzip2-corrupt", lambda s: compressors()["bzip2"](LAYER)[:30] + b"garbage" * 10,
     r"corrupt bzip2 data"),
    ("zstd-corrupt", lambda s: b"\x28\xb5\x2f\xfd" + os.urandom(200), r"corrupt zstd data"),
    ("non-utf8-name", lambda s: tar_bytes([Entry("caf\udce9.txt", b"x")],
                                          fmt=tarfile.GNU_FORMAT), None),
    ("fifo", lambda s: tar_bytes([Entry("fifo", type=tarfile.FIFOTYPE)]), None),
    ("dir-replaced-by-file",
     lambda s: tar_bytes([Entry("d", type=tarfile.DIRTYPE, mode=0o755), Entry("d/x", b"1"),
                          Entry("d", b"now a file")]), None),
    ("sparse-256MiB", lambda s: sparse_tar(256 << 20, [(1 << 20, b"data")]), None),
    ("empty-file", lambda s: b"", None),
]


def lzma_corrupt() -> bytes:
    raw = compressors()["xz"](tar_bytes([Entry("a", os.urandom(20_000))]))
    return raw[:60] + bytes(b ^ 0x33 for b in raw[60:200]) + raw[200:]


def _add_cases() -> list[Case]:
    out = []
    for id_, make, error in TAR_CASES:
        if id_ in ("gzip-corrupt", "xz-corrupt", "bzip2-corrupt", "zstd-corrupt",
                   "empty-file", "bad-checksum", "gzip-truncated"):
            # Docker copies an ADD source that does not read as an archive as a plain file.
            error = None
        out.append(Case(f"add-{id_}", "add", make, error))
    return out


def _import_cases() -> list[Case]:
    picked = {"bad-checksum", "truncated-data", "negative-size", "pax-bad-mtime",
              "device-node", "sparse-256MiB", "non-utf8-name",
              "pax-bad-size", "unknown-type", "sparse-bad-map", "gzip-corrupt",
              "gzip-truncated", "xz-corrupt", "bzip2-corrupt", "zstd-corrupt", "deep-2100"}
    out = []
    for id_, make, error in TAR_CASES:
        if id_ in picked:
            out.append(Case(f"import-{id_}", "import", make, error))
    out.append(Case("import-not-a-tar", "import", lambda s: b"hello, I am text\n" * 100,
                    r"not a (valid )?(layer )?tar|no valid tar header|corrupt"))
    out.append(Case("import-too-many-entries", "import",
                    lambda s: tar_bytes([Entry(f"f{i}", b"") for i in range(101)]),
                    r"more than 100 entries .*--max-entries", env={"DOCKYARD_MAX_ENTRIES": "100"}))
    out.append(Case("import-gzip-bomb", "import", lambda s: gzip_bomb(300 << 20),
                    r"more than 100 times its size.*--max-ratio"))
    out.append(Case("import-size-limit", "import", lambda s: gzip_bomb(3 << 20),
                    r"more than 1 MiB.*--max-layer-size",
                    env={"DOCKYARD_MAX_LAYER_SIZE": "1MiB"}))
    return out


def _manifest(**changes: object) -> list[dict[str, object]]:
    entry: dict[str, object] = {"Config": "", "RepoTags": ["bad/archive:1"],
                                "Layers": ["layer0/layer.tar"]}
    entry.update(changes)
    return [entry]


def _cfg(diff_ids: object) -> dict[str, object]:
    return {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers",
                                                                "diff_ids": diff_ids}}


def _config_name(cfg: object) -> str:
    from hashlib import sha256

    return sha256(json.dumps(cfg).encode()).hexdigest() + ".json"


_GOOD_CFG = _cfg([sha(LAYER)])

LOAD_CASES: list[Case] = [
    Case("load-not-a-tar", "load", lambda s: b"just some text\n" * 50, r"not a tar archive"),
    Case("load-empty", "load", lambda s: b"", r"not a"),
    Case("load-gzip-corrupt", "load", lambda s: corrupt_gzip(docker_archive()),
         r"corrupt gzip data"),
    Case("load-no-index-or-manifest", "load",
         lambda s: tar_bytes([Entry("hello", b"x")]), r"not an image archive"),
    Case("load-manifest-dict", "load", lambda s: docker_archive(manifest={"a": 1}),
         r"manifest.json is not a JSON list"),
    Case("load-manifest-empty-list", "load", lambda s: docker_archive(manifest=[]),
         r"lists no images"),
    Case("load-entry-not-dict", "load", lambda s: docker_archive(manifest=["x"]),
         r"entry 0 is not a JSON object"),
    Case("load-entry-no-config", "load",
         lambda s: docker_archive(manifest=[{"Layers": []}]), r"Config is missing"),
    Case("load-config-number", "load",
         lambda s: docker_archive(manifest=[{"Config": 5, "Layers": []}]), r"Config is missing"),
    Case("load-config-missing-file", "load",
         lambda s: docker_archive(manifest=_manifest(Config="nothere.json")), r"has no 'nothere"),
    Case("load-config-digest-mismatch", "load",
         lambda s: docker_archive(manifest=_manifest(Config="a" * 64 + ".json"),
                                  extra={"a" * 64 + ".json": b"{}"}), r"digest mismatch"),
    Case("load-config-not-json", "load",
         lambda s: docker_archive(manifest=_manifest(Config="c.json"),
                                  extra={"c.json": b"{nope"}), r"not valid JSON"),
    Case("load-config-no-rootfs", "load",
         lambda s: docker_archive(manifest=_manifest(Config="c.json"),
                                  extra={"c.json": b"{}"}), r"no rootfs.diff_ids"),
    Case("load-diff-ids-not-list", "load",
         lambda s: docker_archive(manifest=_manifest(Config=_config_name(_cfg("x"))),
                                  config=_cfg("x")), r"not a list of digests"),
    Case("load-diff-id-bad-digest", "load",
         lambda s: docker_archive(manifest=_manifest(Config=_config_name(_cfg(["sha256:.."]))),
                                  config=_cfg(["sha256:.."])), r"unsupported digest"),
    Case("load-layer-count-mismatch", "load",
         lambda s: docker_archive(manifest=_manifest(Config=_config_name(_GOOD_CFG), Layers=[]),
                                  config=_GOOD_CFG), r"0 layers but 1 diff_ids"),
    Case("load-layers-not-list", "load",
         lambda s: docker_archive(manifest=_manifest(Config=_config_name(_GOOD_CFG), Layers=7),
                                  config=_GOOD_CFG), r"Layers is not a JSON list"),
    Case("load-layer-missing", "load",
         lambda s: docker_archive(manifest=_manifest(Config=_config_name(_GOOD_CFG)),
                                  config=_GOOD_CFG, drop=["layer0/layer.tar"]),
         r"has no 'layer0/layer.tar'"),
    Case("load-layer-wrong-content", "load",
         lambda s: docker_archive(manifest=_manifest(Config=_config_name(_GOOD_CFG)),
                                  config=_GOOD_CFG, layer=tar_bytes([Entry("other", b"1")])),
         r"does not match its diff_id"),
    Case("load-layer-traversal", "load",
         lambda s: docker_archive(manifest=_manifest(Config=_config_name(_GOOD_CFG),
                                                     Layers=["../../etc/passwd"]),
                                  config=_GOOD_CFG), r"unsafe path"),
    Case("load-layer-is-dir", "load",
         lambda s: tar_bytes([
             Entry("manifest.json", json.dumps(_manifest(Config=_config_name(_GOOD_CFG),
                                                         Layers=["d"])).encode()),
             Entry(_config_name(_GOOD_CFG), json.dumps(_GOOD_CFG).encode()),
             Entry("d", type=tarfile.DIRTYPE, mode=0o755)]), r"'d' is not a regular file"),
    Case("load-layer-corrupt-gzip", "load",
         lambda s: docker_archive(manifest=_manifest(Config=_config_name(_GOOD_CFG)),
                                  config=_GOOD_CFG, layer=corrupt_gzip(LAYER)),
         r"layer .*corrupt gzip data"),
    Case("load-layer-too-deep", "load",
         lambda s: docker_archive(layer=tar_bytes([Entry(_deep(300), b"x")])),
         r"layer .*levels deep"),
    Case("load-layer-not-a-tar", "load", lambda s: docker_archive(layer=b"plain text" * 100),
         r"layer .*(not a (valid )?(layer )?tar|header|corrupt)"),
    Case("load-nested-json", "load", lambda s: docker_archive(manifest=_nested_json(100_000)),
         r"nested too deeply|not valid JSON"),
    Case("load-repotag-invalid", "load",
         lambda s: docker_archive(manifest=_manifest(Config=_config_name(_GOOD_CFG),
                                                     RepoTags=["UPPER/Case::x"]),
                                  config=_GOOD_CFG), r"RepoTags"),
    Case("load-symlink-outside", "load",
         lambda s: tar_bytes([Entry("manifest.json", type=tarfile.SYMTYPE,
                                    linkname=UP + "etc/hostname")]),
         r"links outside the archive"),
    Case("load-symlink-loop", "load",
         lambda s: tar_bytes([Entry("manifest.json", type=tarfile.SYMTYPE, linkname="a"),
                              Entry("a", type=tarfile.SYMTYPE, linkname="manifest.json")]),
         r"too many links"),
    Case("load-config-too-big", "load",
         lambda s: docker_archive(manifest=_manifest(Config="big.json"),
                                  extra={"big.json": b" " * (17 << 20)}), r"too large"),
    Case("load-index-list", "load", lambda s: oci_archive(index=[1, 2]),
         r"index.json is not a JSON object"),
    Case("load-index-no-manifests", "load", lambda s: oci_archive(index={"schemaVersion": 2}),
         r"lists no images"),
    Case("load-index-bad-digest", "load",
         lambda s: oci_archive(index={"manifests": [{"digest": "sha256:../../../etc"}]}),
         r"unsupported digest"),
    Case("load-oci-manifest-no-config", "load", lambda s: oci_archive(manifest={"layers": []}),
         r"config is not a JSON object"),
    Case("load-oci-layers-not-dicts", "load",
         lambda s: oci_archive(manifest={"config": {"digest": sha(json.dumps(_GOOD_CFG).encode())},
                                         "layers": ["x"]}, config=_GOOD_CFG),
         r"a layer is not a JSON object"),
    Case("load-oci-layer-digest-mismatch", "load",
         lambda s: oci_archive(layer_digest="sha256:" + "b" * 64), r"has no 'blobs/sha256/bbb"),
    Case("load-oci-index-bad-manifest", "load",
         lambda s: _oci_nested_index({"os": "linux", "architecture": "amd64"}),
         r"config is not a JSON object"),
    Case("load-oci-index-wrong-platform", "load",
         lambda s: _oci_nested_index({"os": "plan9", "architecture": "mips"}),
         r"no image for the host platform .* \(it has plan9/mips\)"),
]


def _oci_nested_index(platform: dict[str, str]) -> bytes:
    """An index whose one entry is an index of one bad manifest (`{}`) for `platform`."""
    inner = {"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(b"{}"),
         "size": 2, "platform": platform}]}
    ib = json.dumps(inner).encode()
    index = {"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": sha(ib),
         "size": len(ib)}]}
    return oci_archive(index=index, extra={f"blobs/sha256/{sha(ib)[7:]}": ib,
                                           f"blobs/sha256/{sha(b'{}')[7:]}": b"{}"})


CONTEXT_CASES: list[Case] = [
    Case("context-device-node", "context",
         lambda s: _ctx([Entry("null", type=tarfile.CHRTYPE, devmajor=1, devminor=3)]),
         r"device"),
    Case("context-escape", "context", lambda s: _ctx([Entry(_escape(s), b"x")]),
         r"escapes the root"),
    Case("context-corrupt-gzip", "context", lambda s: corrupt_gzip(_ctx([])),
         r"not a directory or a tar"),
    Case("context-deep", "context", lambda s: _ctx([Entry(_deep(400), b"x")]),
         r"levels deep"),
    Case("context-non-utf8", "context",
         lambda s: tar_bytes([Entry("Dockerfile", b"FROM scratch\nCOPY . /ctx/\n"),
                              Entry("caf\udce9", b"x")], fmt=tarfile.GNU_FORMAT), None),
    Case("context-no-dockerfile", "context", lambda s: tar_bytes([Entry("a", b"x")]),
         r"Dockerfile"),
]

CASES = _add_cases() + _import_cases() + LOAD_CASES + CONTEXT_CASES


def _listing(top: Path, skip: set[Path]) -> set[str]:
    found = set()
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) not in skip]
        for name in dirnames + filenames:
            found.add(os.path.relpath(os.path.join(dirpath, name), top))
    return found


@pytest.fixture(scope="module")
def corpus_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("builds need root")
    return tmp_path_factory.mktemp("corpus") / "store"


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 40
    assert {c.kind for c in CASES} == {"add", "load", "import", "context"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_archive(case: Case, tmp_path: Path, corpus_store: Path) -> None:
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    data = case.make(sentinel)
    archive = work / "a.tar"
    archive.write_bytes(data)
    root = corpus_store
    if case.kind == "add":
        ctx = work / "ctx"
        ctx.mkdir()
        (ctx / "a.tar").write_bytes(data)
        (ctx / "Dockerfile").write_text("FROM scratch\nADD a.tar /target/\n")
        argv = ["build", "--progress", "plain", str(ctx)]
    elif case.kind == "load":
        argv = ["load", "-i", str(archive)]
    elif case.kind == "import":
        argv = ["import", str(archive), f"corpus/{case.id.lower()}:1"]
    else:
        argv = ["build", "--progress", "plain", str(archive)]
    before = _listing(tmp_path, {root})
    env = {**os.environ, **case.env}
    proc = subprocess.run([*dockyard_cli(), "--root", str(root), *argv], capture_output=True,
                          text=True, errors="replace", timeout=300, cwd=work, env=env)
    stderr = proc.stderr
    assert "Traceback" not in stderr and "Traceback" not in proc.stdout, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("ERROR:")]
    if case.error is None:
        assert proc.returncode == 0, stderr
        assert not errors, stderr
    else:
        assert proc.returncode == 1, (proc.returncode, stderr)
        assert len(errors) == 1, stderr
        import re

        assert re.search(case.error, errors[0]), errors[0]
        if case.kind in ("load", "import"):
            assert "a.tar" in errors[0], errors[0]
        elif case.kind == "add":
            assert "a.tar" in errors[0] or "Dockerfile:2" in errors[0], errors[0]
    # nothing outside the target
    assert list(sentinel.iterdir()) == []
    assert _listing(tmp_path, {root}) == before
    # nothing left behind in the store
    tmp_dir = root / "tmp"
    assert not tmp_dir.is_dir() or list(tmp_dir.iterdir()) == []
    assert our_mounts(root) == []


def test_sparse_add_stays_sparse(tmp_path: Path, corpus_store: Path) -> None:
    """A 2 KB tar declaring a 2 GiB sparse file costs kilobytes on disk, not 2 GiB."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.tar").write_bytes(sparse_tar(2 << 30, [(1 << 20, b"data")]))
    (ctx / "Dockerfile").write_text("FROM scratch\nADD a.tar /target/\n")
    root = tmp_path / "store"
    subprocess.run([*dockyard_cli(), "--root", str(root), "build", "-t", "sparse:1",
                    "--progress", "plain", str(ctx)], check=True, capture_output=True, timeout=300)
    used = subprocess.run(["du", "-s", "--block-size=1", str(root / "snapshots")],
                          capture_output=True, text=True, check=True).stdout.split()[0]
    assert int(used) < 64 << 20


def test_import_streams_with_bounded_memory(tmp_path: Path) -> None:
    """``import`` of 100,000 entries keeps no header per entry: its peak RSS stays far below
    the ~150 MB that holding every header took."""
    big = tmp_path / "many.tar"
    with tarfile.open(big, "w", format=tarfile.USTAR_FORMAT) as tf:
        info = tarfile.TarInfo()
        for i in range(100_000):
            info.name = f"d{i % 100}/f{i}"
            tf.addfile(info, io.BytesIO())
    root = tmp_path / "store"
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *dockyard_cli(), "--root", str(root),
                           "import", str(big), "many:1"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    max_rss_kib = int(proc.stderr.strip().splitlines()[-1])
    assert max_rss_kib < 60 * 1024, max_rss_kib
