"""The conformance comparator (tests/conformance/compare.py), on hand-made layers and archives."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest


def _load_compare() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "conformance" / "compare.py"
    spec = importlib.util.spec_from_file_location("conformance_compare", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being made
    spec.loader.exec_module(module)
    return module


compare = _load_compare()

Entry = tuple[str, str, dict[str, object]]  # (kind, name, attrs)


def layer(*entries: Entry, mtime: int = 1_700_000_000) -> bytes:
    """A layer tar; kind is file/dir/symlink/hardlink/fifo/char."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, attrs in entries:
            info = tarfile.TarInfo(name)
            info.mtime = mtime
            info.mode = int(attrs.get("mode", 0o755 if kind == "dir" else 0o644))  # type: ignore[call-overload]
            info.uid = int(attrs.get("uid", 0))  # type: ignore[call-overload]
            info.gid = int(attrs.get("gid", 0))  # type: ignore[call-overload]
            data = b""
            if kind == "file":
                data = str(attrs.get("data", "")).encode()
                info.size = len(data)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, str(attrs["target"])
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, str(attrs["target"])
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            elif kind == "char":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            tar.addfile(info, io.BytesIO(data) if kind == "file" else None)
    return buf.getvalue()


def flatten(*layers: bytes) -> compare.FlatTree:  # type: ignore[name-defined]
    tree = compare.FlatTree()
    for data in layers:
        tree.apply_layer(io.BytesIO(data))
    return tree


BASE = layer(
    ("dir", "./", {}),
    ("dir", "etc/", {}),
    ("file", "etc/passwd", {"data": "root\n"}),
    ("dir", "var/", {}),
    ("dir", "var/lib/", {}),
    ("file", "var/lib/a", {"data": "a"}),
    ("dir", "var/lib/sub/", {}),
    ("file", "var/lib/sub/b", {"data": "b"}),
)


def test_member_paths_normalize() -> None:
    assert compare.normalize_member_path("./a/b/") == "/a/b"
    assert compare.normalize_member_path("a//b") == "/a/b"
    assert compare.normalize_member_path(".") == "/"
    assert compare.normalize_member_path("./") == "/"
    assert compare.normalize_member_path("/x/../y") == "/y"


def test_file_entry_fields() -> None:
    files = flatten(layer(("file", "s", {"data": "hi", "mode": 0o4755, "uid": 7, "gid": 8}))).files()
    entry = files["/s"]
    assert (entry.kind, entry.mode, entry.uid, entry.gid, entry.size) == ("file", 0o4755, 7, 8, 2)
    assert entry.sha256 == "sha256:" + hashlib.sha256(b"hi").hexdigest()


def test_whiteout_removes_lower_path_and_subtree() -> None:
    files = flatten(BASE, layer(("file", "var/lib/.wh.sub", {}), ("file", "etc/.wh.passwd", {}))).files()
    assert "/var/lib/sub" not in files and "/var/lib/sub/b" not in files
    assert "/etc/passwd" not in files
    assert "/var/lib/a" in files
    assert not any(".wh." in p for p in files)


def test_opaque_dir_hides_lower_children_but_keeps_its_own_layer() -> None:
    top = layer(("dir", "var/lib/", {"mode": 0o700}), ("file", "var/lib/.wh..wh..opq", {}),
                ("file", "var/lib/new", {"data": "n"}))
    files = flatten(BASE, top).files()
    assert [p for p in files if p.startswith("/var/lib/")] == ["/var/lib/new"]
    assert files["/var/lib"].mode == 0o700


def test_whiteout_then_recreate_in_the_same_layer() -> None:
    files = flatten(BASE, layer(("file", "var/lib/.wh.a", {}), ("dir", "var/lib/a/", {}))).files()
    assert files["/var/lib/a"].kind == "dir"


def test_file_replaces_directory_and_its_children() -> None:
    files = flatten(BASE, layer(("file", "var/lib/sub", {"data": "now a file"}))).files()
    assert files["/var/lib/sub"].kind == "file"
    assert "/var/lib/sub/b" not in files


def test_directory_over_directory_keeps_children_and_takes_metadata() -> None:
    files = flatten(BASE, layer(("dir", "var/lib/", {"mode": 0o750, "uid": 5}))).files()
    assert files["/var/lib"].mode == 0o750 and files["/var/lib"].uid == 5
    assert "/var/lib/sub/b" in files


def test_missing_parents_are_made_as_root_dirs() -> None:
    files = flatten(layer(("file", "a/b/c", {"data": "x"}))).files()
    assert files["/a"].kind == files["/a/b"].kind == "dir"


def test_hardlink_groups_follow_inodes_across_layers() -> None:
    tree = flatten(
        layer(("file", "x", {"data": "d", "mode": 0o600}), ("hardlink", "y", {"target": "x"}),
              ("hardlink", "z", {"target": "./x"})),
    )
    assert tree.hardlink_groups() == (("/x", "/y", "/z"),)
    assert tree.files()["/y"].mode == 0o600
    # A later layer rewriting one name breaks it out of the group (overlay copy-up).
    tree.apply_layer(io.BytesIO(layer(("file", "y", {"data": "changed"}))))
    assert tree.hardlink_groups() == (("/x", "/z"),)


def test_special_files_symlinks_and_devices() -> None:
    files = flatten(layer(("symlink", "l", {"target": "/etc/x", "mode": 0o777}), ("fifo", "f", {"mode": 0o640}),
                          ("char", "null", {"mode": 0o666}))).files()
    assert (files["/l"].kind, files["/l"].link) == ("symlink", "/etc/x")
    assert (files["/f"].kind, files["/f"].mode) == ("fifo", 0o640)
    assert (files["/null"].kind, files["/null"].link) == ("char", "1:3")


def test_layer_entry_counts_and_nonempty_layers() -> None:
    tree = compare.FlatTree()
    restated = layer(("dir", "etc/", {}), ("dir", "var/", {}), mtime=5)  # same dirs, new mtime
    chmodded = layer(("dir", "etc/", {"mode": 0o700}))
    layers = (BASE, layer(), layer(("file", "a", {})), restated, chmodded)
    changes = [tree.apply_layer(io.BytesIO(data)) for data in layers]
    counts = [len(c) for c in changes]
    # BASE's "./" restates the root as it already is: 7 of its 8 entries change the tree.
    assert counts == [7, 0, 1, 0, 1]
    assert changes[4] == {"/etc"}
    snap = compare.ImageSnapshot(config={}, files={}, hardlinks=(), layer_changes=tuple(changes))
    assert snap.nonempty_layers == 3


# ----------------------------------------------------------------------------- archives

CONFIG: dict[str, object] = {
    "architecture": "amd64",
    "os": "linux",
    "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "Labels": {"a": "b"}},
    "rootfs": {"type": "layers", "diff_ids": []},
}


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_docker_archive(path: Path, layers: list[bytes], config: dict[str, object], tag: str) -> None:
    with tarfile.open(path, "w") as tar:
        names = []
        for i, data in enumerate(layers):
            names.append(f"l{i}/layer.tar")
            _add(tar, names[-1], data)
        _add(tar, "cfg.json", json.dumps(config).encode())
        _add(tar, "manifest.json", json.dumps([{"Config": "cfg.json", "RepoTags": [tag], "Layers": names}]).encode())


def write_oci_archive(path: Path, layers: list[bytes], config: dict[str, object], name: str) -> None:
    def blob(tar: tarfile.TarFile, data: bytes) -> dict[str, object]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        _add(tar, "blobs/sha256/" + digest.split(":")[1], data)
        return {"digest": digest, "size": len(data)}

    with tarfile.open(path, "w") as tar:
        layer_descs = [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **blob(tar, gzip.compress(d))}
            for d in layers
        ]
        cfg = {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(tar, json.dumps(config).encode())}
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": cfg, "layers": layer_descs}
        mdesc = blob(tar, json.dumps(manifest).encode())
        index = {"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", **mdesc,
            "annotations": {"org.opencontainers.image.ref.name": name}}]}
        _add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add(tar, "index.json", json.dumps(index).encode())


def test_docker_and_oci_archives_of_the_same_image_compare_equal(tmp_path: Path) -> None:
    top = layer(("file", "var/lib/.wh.a", {}), ("file", "new", {"data": "x"}))
    write_docker_archive(tmp_path / "d.tar", [BASE, top], CONFIG, "conformance/x:latest")
    write_oci_archive(tmp_path / "o.tar", [BASE, top], CONFIG, "conformance/x:latest")
    docker = compare.load_image_archive(tmp_path / "d.tar", ref="conformance/x:latest")
    oci = compare.load_image_archive(tmp_path / "o.tar", ref="conformance/x:latest")
    assert compare.compare_snapshots(docker, oci) == []
    assert "/new" in oci.files and "/var/lib/a" not in oci.files
    assert oci.config["Cmd"] == ["/bin/sh"]
    assert oci.nonempty_layers == 2


def test_archive_ref_not_found(tmp_path: Path) -> None:
    write_docker_archive(tmp_path / "d.tar", [BASE], CONFIG, "a:1")
    with pytest.raises(compare.ArchiveError):
        compare.load_image_archive(tmp_path / "d.tar", ref="b:2")


def test_timestamps_are_not_compared(tmp_path: Path) -> None:
    write_docker_archive(tmp_path / "a.tar", [layer(("file", "f", {"data": "1"}), mtime=1)], CONFIG, "t:1")
    write_docker_archive(tmp_path / "b.tar", [layer(("file", "f", {"data": "1"}), mtime=2)], CONFIG, "t:1")
    a = compare.load_image_archive(tmp_path / "a.tar")
    b = compare.load_image_archive(tmp_path / "b.tar")
    assert compare.compare_snapshots(a, b) == []


# ----------------------------------------------------------------------------- differences


def snap(layers: list[bytes], config: dict[str, object] | None = None) -> compare.ImageSnapshot:  # type: ignore[name-defined]
    tree = flatten(*layers)
    return compare.ImageSnapshot(
        config=config if config is not None else {},
        files=tree.files(),
        hardlinks=tree.hardlink_groups(),
        layer_changes=tuple(compare.FlatTree().apply_layer(io.BytesIO(d)) for d in layers),
    )


def test_every_file_attribute_is_compared() -> None:
    ref = snap([layer(("file", "f", {"data": "abc", "mode": 0o644, "uid": 1, "gid": 1}))])
    for attrs in ({"data": "abd", "mode": 0o644, "uid": 1, "gid": 1},
                  {"data": "abc", "mode": 0o4644, "uid": 1, "gid": 1},
                  {"data": "abc", "mode": 0o644, "uid": 2, "gid": 1},
                  {"data": "abc", "mode": 0o644, "uid": 1, "gid": 2},
                  {"data": "abcd", "mode": 0o644, "uid": 1, "gid": 1}):
        diffs = compare.compare_snapshots(ref, snap([layer(("file", "f", attrs))]))
        assert [(d.area, d.subject) for d in diffs] == [("fs", "/f")], attrs


def test_symlink_target_and_type_are_compared() -> None:
    ref = snap([layer(("symlink", "l", {"target": "a"}))])
    other = snap([layer(("symlink", "l", {"target": "b"}))])
    as_file = snap([layer(("file", "l", {}))])
    assert "-> a" in compare.compare_snapshots(ref, other)[0].reference
    assert compare.compare_snapshots(ref, as_file)[0].candidate.startswith("file")


def test_missing_and_extra_paths() -> None:
    ref = snap([layer(("file", "only-ref", {}), ("file", "both", {}))])
    cand = snap([layer(("file", "both", {}), ("file", "only-cand", {}))])
    diffs = {d.subject: d for d in compare.compare_snapshots(ref, cand)}
    assert diffs["/only-ref"].candidate == "absent"
    assert diffs["/only-cand"].reference == "absent"


def test_hardlink_difference_is_reported() -> None:
    linked = snap([layer(("file", "a", {"data": "x"}), ("hardlink", "b", {"target": "a"}))])
    copied = snap([layer(("file", "a", {"data": "x"}), ("file", "b", {"data": "x"}))])
    diffs = compare.compare_snapshots(linked, copied)
    assert [(d.area, d.subject, d.candidate) for d in diffs] == [("hardlinks", "/a /b", "not linked")]


def test_config_fields_and_normalisation() -> None:
    base = [layer(("file", "f", {}))]
    ref = snap(base, {"Env": ["A=1"], "Labels": {}, "Cmd": None, "Healthcheck": {"Test": ["NONE"], "Interval": 0}})
    same = snap(base, {"Env": ["A=1"], "Healthcheck": {"Test": ["NONE"]}, "Hostname": "ignored"})
    assert compare.compare_snapshots(ref, same) == []
    differs = snap(base, {"Env": ["A=2"], "Labels": {"x": "y"}, "Cmd": [], "Healthcheck": {"Test": ["NONE"]}})
    subjects = [d.subject for d in compare.compare_snapshots(ref, differs)]
    assert subjects == ["Env", "Cmd", "Labels"]


def test_empty_cmd_is_not_unset_cmd() -> None:
    base = [layer()]
    assert compare.compare_snapshots(snap(base, {"Cmd": []}), snap(base, {}))[0].subject == "Cmd"


def test_layer_count_difference() -> None:
    one = snap([layer(("file", "a", {}), ("file", "b", {}))])
    two = snap([layer(("file", "a", {})), layer(), layer(("file", "b", {}))])
    diffs = compare.compare_snapshots(one, two)
    assert [(d.area, d.reference, d.candidate) for d in diffs] == [("layers", "1", "2")]


def test_ignored_paths_skip_subtrees() -> None:
    ref = snap([layer(("file", "keep", {}), ("file", "skip/x", {"data": "1"}))])
    cand = snap([layer(("file", "keep", {}), ("file", "skip/x", {"data": "2"}), ("file", "skip/y", {}))])
    assert compare.compare_snapshots(ref, cand, ignored_paths={"/skip": "test"}) == []
    assert compare.compare_snapshots(ref, cand, ignored_paths={})


def test_report_is_truncated() -> None:
    diffs = [compare.Difference("fs", f"/p{i}", "a", "b") for i in range(5)]
    text = compare.format_report(diffs, limit=3)
    assert text.splitlines()[-1] == "... and 2 more"
    assert text.splitlines()[0] == "fs /p0: reference=a candidate=b"


def test_mount_stubs_are_dropped_only_when_empty() -> None:
    ref = snap([layer(("dir", "run/", {}), ("dir", "run/secrets/", {}), ("file", "kept", {}))])
    dropped = compare.drop_mount_stubs(ref, ["/run", "/run/secrets"])
    assert "/run" not in dropped.files and "/kept" in dropped.files
    stub_only = snap([layer(("file", "kept", {})), layer(("dir", "stub/", {}))])
    assert stub_only.nonempty_layers == 2
    assert compare.drop_mount_stubs(stub_only, ["/stub"]).nonempty_layers == 1
    # The candidate that left the stub behind now differs.
    diffs = compare.compare_snapshots(dropped, ref)
    assert {d.subject for d in diffs} == {"/run", "/run/secrets"}
    with pytest.raises(ValueError, match="not empty"):
        compare.drop_mount_stubs(ref, ["/run"])
    with pytest.raises(ValueError, match="not a directory"):
        compare.drop_mount_stubs(ref, ["/kept"])
