"""The exporter room: --output parsing, OCI/docker archives, save/load round trips, import,
export and cp, built on small images written straight through the store API."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from dockyard.errors import DockyardError, NotFoundError, StoreError, UsageError
from dockyard.exporter import (
    ArchiveImage,
    OutputSpec,
    copy_from_image,
    export,
    import_rootfs,
    load_archive,
    parse_output,
    read_image,
    write_docker_archive,
    write_oci_layout,
)
from dockyard.exporter.load import apply_changes
from dockyard.layers.tarwriter import TarWriter
from dockyard.store.db import Store

# --- building images through the store API ----------------------------------------------


@dataclass(frozen=True)
class F:
    """A layer entry: a file (data), a directory (data None), a whiteout or an opaque mark."""

    path: str
    data: bytes | None = None
    kind: str = "file"  # file | dir | whiteout | opaque | symlink
    target: str = ""


def _layer(entries: list[F]) -> bytes:
    out = io.BytesIO()
    w = TarWriter(out)
    for e in entries:
        if e.kind == "file":
            w.add_bytes(e.path, e.data or b"", mode=0o644)
        elif e.kind == "dir":
            info = tarfile.TarInfo(e.path)  # TarWriter has no add_dir; write a raw header
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            w._out.write(info.tobuf(tarfile.PAX_FORMAT))
        elif e.kind == "symlink":
            info = tarfile.TarInfo(e.path)
            info.type = tarfile.SYMTYPE
            info.linkname = e.target
            w._out.write(info.tobuf(tarfile.PAX_FORMAT))
        elif e.kind == "whiteout":
            w.add_whiteout(e.path)
        elif e.kind == "opaque":
            w.add_opaque(e.path)
    w.close()
    return out.getvalue()


def make_image(store: Store, layers: list[list[F]], names: tuple[str, ...] = (),
               cmd: list[str] | None = None) -> str:
    """Store the layers, a config and a manifest; return the image id."""
    diff_ids = []
    descs = []
    for entries in layers:
        data = _layer(entries)
        digest = store.blobs.put_bytes(data)
        diff_ids.append(digest)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                      "digest": digest, "size": len(data)})
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": cmd or ["/bin/sh"], "Env": ["PATH=/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"layer {i}"} for i in range(len(layers))],
    }, sort_keys=True).encode()
    config_digest = store.blobs.put_bytes(config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": descs,
    }, sort_keys=True).encode()
    return store.put_image(manifest, config, names).id


BASE = [
    [F("etc", kind="dir"), F("etc/os-release", b"ID=test\n"), F("app", kind="dir"),
     F("app/old.txt", b"old\n"), F("app/keep.txt", b"keep\n"), F("opt", kind="dir"),
     F("opt/a", b"a\n"), F("bin", kind="dir"), F("bin/tool", b"#!/bin/sh\n")],
    [F("app", kind="dir"), F("app/old.txt", kind="whiteout"), F("app/new.txt", b"new\n"),
     F("opt", kind="dir"), F("opt", kind="opaque"), F("opt/b", b"b\n"),
     F("link", kind="symlink", target="/app")],
]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "root")


@pytest.fixture
def image_id(store: Store) -> str:
    return make_image(store, BASE, names=("example.com/team/app:1.0",))


def _tar_files(data: bytes) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar:
            f = tar.extractfile(m) if m.isreg() else None
            out[m.name.rstrip("/")] = f.read() if f else None
    return out


def _tree(root: Path) -> dict[str, bytes | str | None]:
    out: dict[str, bytes | str | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel] = p.read_bytes()
            else:
                out[rel] = None
    return out


EXPECTED_TREE = {
    "etc": None, "etc/os-release": b"ID=test\n", "app": None, "app/keep.txt": b"keep\n",
    "app/new.txt": b"new\n", "opt": None, "opt/b": b"b\n", "bin": None,
    "bin/tool": b"#!/bin/sh\n", "link": "-> /app",
}

# --- parse_output --------------------------------------------------------------------------


def test_parse_output_forms() -> None:
    assert parse_output("out") == OutputSpec(type="local", dest="out")
    assert parse_output("-") == OutputSpec(type="tar", dest="-")
    assert parse_output("type=oci,dest=x.tar") == OutputSpec(type="oci", dest="x.tar")
    spec = parse_output("type=oci,dest=dir,tar=false,compression=zstd,compression-level=3")
    assert (spec.tar, spec.compression, spec.compression_level) == (False, "zstd", 3)
    assert parse_output('type=docker,"dest=a,b.tar"').dest == "a,b.tar"
    assert parse_output("type=image,name=foo:1") == OutputSpec(type="image", dest=None,
                                                               name="foo:1")


@pytest.mark.parametrize("bad", [
    "type=oci", "type=nope,dest=x", "type=oci,dest=x,compression=lz4", "type=tar,dest=x,tar=false",
    "type=local,dest=-", "type=oci,dest=x,colour=red", "type=oci,dest=x,push=true", "type=oci,dest",
    "type=oci,dest=-,tar=false", "type=oci,dest=x,tar=maybe",
])
def test_parse_output_errors(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_output(bad)


# --- OCI layout and docker archive ----------------------------------------------------------


def _read_tar(path: Path) -> dict[str, bytes | None]:
    return _tar_files(path.read_bytes())


def test_oci_tar_layout_is_valid_and_verifiable(store: Store, image_id: str,
                                                tmp_path: Path) -> None:
    dest = tmp_path / "out.tar"
    export(store, image_id, parse_output(f"type=oci,dest={dest}"), ["example.com/team/app:1.0"])
    files = _read_tar(dest)
    assert json.loads(files["oci-layout"] or b"") == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"] or b"")
    (entry,) = index["manifests"]
    assert entry["annotations"] == {
        "io.containerd.image.name": "example.com/team/app:1.0",
        "org.opencontainers.image.ref.name": "1.0",
    }
    # every blob is named by its digest
    for name, data in files.items():
        if name.startswith("blobs/sha256/") and data is not None:
            import hashlib
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    manifest = json.loads(files["blobs/sha256/" + entry["digest"][7:]] or b"")
    assert manifest["config"]["digest"] == image_id
    assert [layer["mediaType"] for layer in manifest["layers"]] == \
        ["application/vnd.oci.image.layer.v1.tar+gzip"] * 2
    config = json.loads(files["blobs/sha256/" + image_id[7:]] or b"")
    for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
        blob = files["blobs/sha256/" + layer["digest"][7:]] or b""
        assert blob[:2] == b"\x1f\x8b"
        import hashlib
        assert "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest() == diff_id


def test_compressed_layers_cached_between_exports(store: Store, image_id: str,
                                                  tmp_path: Path) -> None:
    export(store, image_id, parse_output(f"type=oci,dest={tmp_path}/a.tar"), [])
    image = read_image(store, image_id)
    layer = store.get_layer(image.layers[0].diff_id)
    assert layer is not None and "gzip" in layer.blobs
    gz_digest = layer.blobs["gzip"].digest
    mtime = store.blobs.path(gz_digest).stat().st_mtime_ns
    export(store, image_id, parse_output(f"type=oci,dest={tmp_path}/b.tar"), [])
    assert store.blobs.path(gz_digest).stat().st_mtime_ns == mtime
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


@pytest.mark.parametrize("compression,magic", [("zstd", b"\x28\xb5\x2f\xfd"),
                                               ("uncompressed", None)])
def test_oci_directory_with_compression(store: Store, image_id: str, tmp_path: Path,
                                        compression: str, magic: bytes | None) -> None:
    dest = tmp_path / "layout"
    export(store, image_id,
           parse_output(f"type=oci,dest={dest},tar=false,compression={compression}"), [])
    index = json.loads((dest / "index.json").read_text())
    (entry,) = index["manifests"]
    assert "annotations" not in entry
    manifest = json.loads((dest / "blobs/sha256" / entry["digest"][7:]).read_bytes())
    for layer in manifest["layers"]:
        blob = (dest / "blobs/sha256" / layer["digest"][7:]).read_bytes()
        if magic:
            assert blob.startswith(magic)
        else:
            assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
            assert _tar_files(blob)


def test_docker_archive_manifest(store: Store, image_id: str, tmp_path: Path) -> None:
    dest = tmp_path / "d.tar"
    export(store, image_id, parse_output(f"type=docker,dest={dest}"),
           ["example.com/team/app:1.0", "busybox"])
    files = _read_tar(dest)
    (entry,) = json.loads(files["manifest.json"] or b"")
    assert entry["RepoTags"] == ["example.com/team/app:1.0", "busybox:latest"]
    assert entry["Config"] == "blobs/sha256/" + image_id[7:]
    config = json.loads(files[entry["Config"]] or b"")
    assert ["sha256:" + p.rsplit("/", 1)[1] for p in entry["Layers"]] == \
        config["rootfs"]["diff_ids"]
    assert "index.json" in files and "oci-layout" in files


@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_save_load_round_trip(store: Store, image_id: str, tmp_path: Path, fmt: str) -> None:
    archive = tmp_path / "save.tar"
    image = read_image(store, image_id)
    item = ArchiveImage(image, ("example.com/team/app:1.0",))
    if fmt == "docker":
        write_docker_archive(store, [item], archive)
    else:
        write_oci_layout(store, [item], archive)
    other = Store.open(tmp_path / "other")
    (loaded,) = load_archive(other, archive)
    assert loaded.id == image_id
    assert loaded.names == ("example.com/team/app:1.0",)
    again = read_image(other, "example.com/team/app:1.0")
    assert again.config_bytes == image.config_bytes
    assert [layer.diff_id for layer in again.layers] == [layer.diff_id for layer in image.layers]
    out = tmp_path / "fs"
    export(other, loaded.id, parse_output(str(out)), [])
    assert _tree(out) == EXPECTED_TREE


def test_load_oci_directory_and_ref_name_rules(store: Store, image_id: str,
                                               tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    write_oci_layout(store, [ArchiveImage(read_image(store, image_id), ("app:2",))], layout,
                     as_tar=False)
    index = json.loads((layout / "index.json").read_text())
    # Only a bare tag as ref.name: not a name, so the image loads untagged.
    del index["manifests"][0]["annotations"]["io.containerd.image.name"]
    (layout / "index.json").write_text(json.dumps(index))
    other = Store.open(tmp_path / "o1")
    (loaded,) = load_archive(other, layout)
    assert loaded.names == ()
    # A full reference as ref.name names the image.
    index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] = \
        "registry.example:5000/x/y:3"
    (layout / "index.json").write_text(json.dumps(index))
    (loaded,) = load_archive(Store.open(tmp_path / "o2"), layout)
    assert loaded.names == ("registry.example:5000/x/y:3",)


def test_load_multi_platform_index_picks_host(store: Store, image_id: str,
                                              tmp_path: Path) -> None:
    from dockyard.exporter.load import host_platform

    layout = tmp_path / "layout"
    write_oci_layout(store, [ArchiveImage(read_image(store, image_id), ("app:1",))], layout,
                     as_tar=False)
    index = json.loads((layout / "index.json").read_text())
    real = dict(index["manifests"][0])
    real.pop("annotations")
    real["platform"] = {"os": host_platform()[0], "architecture": host_platform()[1]}
    bogus = {**real, "digest": "sha256:" + "0" * 64,
             "platform": {"os": "linux", "architecture": "s390x-not-here"}}
    inner = json.dumps({"schemaVersion": 2,
                        "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": [bogus, real]}).encode()
    import hashlib
    inner_digest = "sha256:" + hashlib.sha256(inner).hexdigest()
    (layout / "blobs/sha256" / inner_digest[7:]).write_bytes(inner)
    index["manifests"] = [{"mediaType": "application/vnd.oci.image.index.v1+json",
                           "digest": inner_digest, "size": len(inner),
                           "annotations": {"io.containerd.image.name": "docker.io/library/mp:1"}}]
    (layout / "index.json").write_text(json.dumps(index))
    (loaded,) = load_archive(Store.open(tmp_path / "o"), layout)
    assert (loaded.id, loaded.names) == (image_id, ("docker.io/library/mp:1",))


def test_load_tampered_layer_fails_and_leaves_store_clean(store: Store, image_id: str,
                                                          tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    write_oci_layout(store, [ArchiveImage(read_image(store, image_id), ("app:1",))], layout,
                     as_tar=False, compression="uncompressed")
    manifest_digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    manifest = json.loads((layout / "blobs/sha256" / manifest_digest[7:]).read_bytes())
    victim = layout / "blobs/sha256" / manifest["layers"][1]["digest"][7:]
    data = bytearray(victim.read_bytes())
    data[600] ^= 0xFF  # inside the first file's content
    victim.unlink()
    victim.write_bytes(bytes(data))
    other = Store.open(tmp_path / "other")
    with pytest.raises(StoreError, match="digest mismatch"):
        load_archive(other, layout)
    assert other.list_images() == []
    assert list((tmp_path / "other" / "tmp").iterdir()) == []
    for digest in other.blobs.iter_digests():  # whatever is there is whole and correct
        import hashlib
        assert "sha256:" + hashlib.sha256(other.blobs.path(digest).read_bytes()).hexdigest() \
            == digest


def test_load_tampered_config_and_unsafe_names(store: Store, image_id: str,
                                               tmp_path: Path) -> None:
    archive = tmp_path / "d.tar"
    write_docker_archive(store, [ArchiveImage(read_image(store, image_id), ("a:1",))], archive)
    files = _read_tar(archive)
    entry = json.loads(files["manifest.json"] or b"")[0]

    def rebuild(mutate: dict[str, bytes | None]) -> Path:
        out = tmp_path / "bad.tar"
        with tarfile.open(out, "w") as tar:
            for name, data in {**files, **mutate}.items():
                if data is None:
                    continue
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return out

    bad_config = (files[entry["Config"]] or b"").replace(b"amd64", b"arm64")
    other = Store.open(tmp_path / "other")
    with pytest.raises(StoreError, match="digest mismatch"):
        load_archive(other, rebuild({entry["Config"]: bad_config}))
    escape = [{**entry, "Layers": ["../../etc/passwd", *entry["Layers"][1:]]}]
    with pytest.raises(StoreError, match="unsafe path"):
        load_archive(other, rebuild({"manifest.json": json.dumps(escape).encode()}))
    assert other.list_images() == []


def test_load_from_stream_and_gzipped_archive(store: Store, image_id: str,
                                              tmp_path: Path) -> None:
    buf = io.BytesIO()
    write_docker_archive(store, [ArchiveImage(read_image(store, image_id), ("s:1",))], buf)
    (loaded,) = load_archive(Store.open(tmp_path / "a"), io.BytesIO(buf.getvalue()))
    assert loaded.id == image_id
    gz = tmp_path / "x.tar.gz"
    gz.write_bytes(gzip.compress(buf.getvalue()))
    (loaded,) = load_archive(Store.open(tmp_path / "b"), gz)
    assert loaded.names == ("docker.io/library/s:1",)


def test_load_rejects_non_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(DockyardError):
        load_archive(Store.open(tmp_path / "s"), junk)


# --- local / tar outputs, import, cp --------------------------------------------------------


def test_local_and_tar_outputs_flatten(store: Store, image_id: str, tmp_path: Path) -> None:
    export(store, image_id, parse_output(f"type=local,dest={tmp_path}/fs"), [])
    assert _tree(tmp_path / "fs") == EXPECTED_TREE
    export(store, image_id, parse_output(f"type=tar,dest={tmp_path}/fs.tar"), [])
    files = _read_tar(tmp_path / "fs.tar")
    assert {k: v for k, v in files.items() if v is not None} == \
        {k: v for k, v in EXPECTED_TREE.items() if isinstance(v, bytes)}
    assert set(files) == set(EXPECTED_TREE)
    out = io.BytesIO()
    export(store, image_id, parse_output("-"), [], stdout=out)
    assert _tar_files(out.getvalue()) == files


def test_import_rootfs(store: Store, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs.tar.gz"
    raw = _layer([F("hello.txt", b"hi\n"), F("d", kind="dir"), F("d/x", b"x")])
    rootfs.write_bytes(gzip.compress(raw))
    image = import_rootfs(store, rootfs, ["imported:1"],
                          changes=['CMD ["/hello"]', "ENV A=1 B=two", "EXPOSE 80",
                                   "WORKDIR /d", "LABEL k=v"],
                          message="from test")
    assert image.names == ("docker.io/library/imported:1",)
    stored = read_image(store, "imported:1")
    import hashlib
    assert [layer.diff_id for layer in stored.layers] == \
        ["sha256:" + hashlib.sha256(raw).hexdigest()]
    cfg = stored.config
    assert cfg["os"] == "linux" and cfg["architecture"]
    assert cfg["config"]["Cmd"] == ["/hello"]
    assert cfg["config"]["Env"] == ["A=1", "B=two"]
    assert cfg["config"]["ExposedPorts"] == {"80/tcp": {}}
    assert cfg["config"]["WorkingDir"] == "/d"
    assert cfg["config"]["Labels"] == {"k": "v"}
    assert cfg["history"][0]["comment"] == "from test"
    from_stdin = import_rootfs(store, io.BytesIO(raw), [])
    assert from_stdin.names == () and from_stdin.id != image.id


def test_import_rejects_bad_input(store: Store, tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x01" * 2000)
    with pytest.raises(DockyardError):
        import_rootfs(store, junk, ["x"])
    assert store.list_images() == []
    with pytest.raises(UsageError):
        apply_changes({}, ["RUN rm -rf /"])
    cfg: dict[str, object] = {}
    apply_changes(cfg, ["CMD echo hi", "ENTRYPOINT [\"/bin/x\"]", "VOLUME /data /logs"])
    assert cfg["config"] == {"Cmd": ["/bin/sh", "-c", "echo hi"], "Entrypoint": ["/bin/x"],
                             "Volumes": {"/data": {}, "/logs": {}}}


def test_cp_file_and_directory_rules(store: Store, image_id: str, tmp_path: Path) -> None:
    image = read_image(store, image_id)
    dest = tmp_path / "out"
    dest.mkdir()
    copy_from_image(store, image, "/etc/os-release", str(dest / "f"))
    assert (dest / "f").read_bytes() == b"ID=test\n"
    copy_from_image(store, image, "/etc/os-release", str(dest))  # into an existing dir
    assert (dest / "os-release").read_bytes() == b"ID=test\n"
    copy_from_image(store, image, "/app", str(dest / "newdir"))  # missing dest: becomes it
    assert _tree(dest / "newdir") == {"keep.txt": b"keep\n", "new.txt": b"new\n"}
    copy_from_image(store, image, "/app", str(dest / "newdir"))  # existing: goes inside
    assert (dest / "newdir" / "app" / "new.txt").read_bytes() == b"new\n"
    copy_from_image(store, image, "/opt/.", str(dest / "newdir"))  # contents only
    assert (dest / "newdir" / "b").read_bytes() == b"b\n"
    assert not (dest / "newdir" / "a").exists()  # hidden by the opaque dir
    with pytest.raises(NotFoundError):
        copy_from_image(store, image, "/app/old.txt", str(dest / "g"))  # whited out
    with pytest.raises(UsageError):
        copy_from_image(store, image, "/app", str(dest / "f"))  # dir onto a file
    with pytest.raises(UsageError):
        copy_from_image(store, image, "/etc/os-release", str(tmp_path / "no" / "such"))


def test_cp_through_symlinked_parent_and_to_stdout(store: Store, image_id: str,
                                                    tmp_path: Path) -> None:
    image = read_image(store, image_id)
    copy_from_image(store, image, "/link/new.txt", str(tmp_path / "via-link"))
    assert (tmp_path / "via-link").read_bytes() == b"new\n"
    copy_from_image(store, image, "/link", str(tmp_path / "the-link"))
    assert os.readlink(tmp_path / "the-link") == "/app"
    out = io.BytesIO()
    copy_from_image(store, image, "/app", "-", stdout=out)
    assert _tar_files(out.getvalue()) == {"app": None, "app/keep.txt": b"keep\n",
                                          "app/new.txt": b"new\n"}


def test_cli_split_source() -> None:
    from dockyard.cli.cmd_cp import split_source

    assert split_source("localhost:5000/app:1:/etc/x") == ("localhost:5000/app:1", "/etc/x")
    assert split_source("busybox:/") == ("busybox", "/")
    with pytest.raises(UsageError):
        split_source("busybox:etc")


def test_cli_save_load_cp_export(store: Store, image_id: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    from dockyard.cli.main import main

    root = str(tmp_path / "root")
    archive = tmp_path / "s.tar"
    assert main(["--root", root, "save", "example.com/team/app:1.0", "-o", str(archive)]) == 0
    other = str(tmp_path / "other")
    assert main(["--root", other, "load", "-i", str(archive)]) == 0
    assert capsys.readouterr().out == "Loaded image: example.com/team/app:1.0\n"
    assert main(["--root", root, "save", "--format", "oci", image_id[7:19], "-o",
                 str(tmp_path / "o.tar")]) == 0
    assert main(["--root", str(tmp_path / "third"), "load", "-i", str(tmp_path / "o.tar")]) == 0
    assert capsys.readouterr().out == f"Loaded image ID: {image_id}\n"
    assert main(["--root", other, "cp", "example.com/team/app:1.0:/app/keep.txt",
                 str(tmp_path / "k")]) == 0
    assert (tmp_path / "k").read_bytes() == b"keep\n"
    assert main(["--root", other, "export", "example.com/team/app:1.0", "-o",
                 str(tmp_path / "fs.tar")]) == 0
    assert set(_read_tar(tmp_path / "fs.tar")) == set(EXPECTED_TREE)
    assert main(["--root", other, "import", str(tmp_path / "fs.tar"), "flat:1"]) == 0
    new_id = capsys.readouterr().out.strip()
    assert read_image(Store.open(Path(other)), "flat:1").id == new_id
    assert main(["--root", other, "cp", "nope:1:/x", str(tmp_path / "n")]) == 1
    assert "nope" in capsys.readouterr().err


def test_cp_follow_link_in_the_last_component(store: Store, image_id: str,
                                              tmp_path: Path) -> None:
    """``cp -L IMAGE:/link DEST``: the link's target is unpacked and copied under the name
    asked for (docker's cp -L), not the link itself; without -L the link is copied."""
    image = read_image(store, image_id)
    copy_from_image(store, image, "/link", str(tmp_path / "followed"), follow_link=True)
    assert _tree(tmp_path / "followed") == {"keep.txt": b"keep\n", "new.txt": b"new\n"}
    out = io.BytesIO()
    copy_from_image(store, image, "/link", "-", stdout=out, follow_link=True)
    assert _tar_files(out.getvalue()) == {"link": None, "link/keep.txt": b"keep\n",
                                          "link/new.txt": b"new\n"}
    copy_from_image(store, image, "/link", str(tmp_path / "plain"))
    assert os.readlink(tmp_path / "plain") == "/app"
