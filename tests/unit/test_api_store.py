"""The library API behind the store commands (``dockyard.images`` ... ``dockyard.cache_prune``),
called as a Python program would, on a temporary store filled through the store's own API.
Nothing here needs root; ``run``, ``info`` and the registry calls are integration tests."""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
from pathlib import Path

import pytest

import dockyard
from dockyard.image.oci import chain_ids
from dockyard.store import CacheRecord, Store

# --- a tiny store ---------------------------------------------------------------------------


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_image(root: Path, layers: list[dict[str, bytes]], names: tuple[str, ...] = (),
               created: str = "2024-01-01T00:00:01Z",
               labels: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """An image written through the store API; returns its id and diff ids."""
    with Store.open(root) as store, store.build_lock():
        diff_ids, descs = [], []
        for files in layers:
            data = _tar(files)
            digest = store.blobs.put_bytes(data)
            store.put_layer(digest, len(data))
            diff_ids.append(digest)
            descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                          "digest": digest, "size": len(data)})
        config = json.dumps({
            "architecture": "amd64", "os": "linux", "created": created,
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"],
                       **({"Labels": labels} if labels else {})},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": created, "created_by": f"COPY layer{i} /"}
                        for i in range(len(layers))],
        }, sort_keys=True).encode()
        config_digest = store.blobs.put_bytes(config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": len(config)},
            "layers": descs,
        }, sort_keys=True).encode()
        return store.put_image(manifest, config, names).id, diff_ids


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def app(root: Path) -> str:
    image_id, _ = make_image(root, [{"etc/os-release": b"ID=t\n"}, {"app/run": b"#!/bin/sh\n"}],
                             names=("app:1", "example.com/team/app:2"))
    return image_id


# --- images, inspect, history, tag, rmi ------------------------------------------------------


def test_images_lists_one_entry_per_name_and_filters(root: Path, app: str) -> None:
    bare, _ = make_image(root, [{"x": b"x"}], created="2023-01-01T00:00:00Z")
    listed = dockyard.images(root=root)
    assert [(i.repository, i.tag) for i in listed] == [
        ("app", "1"), ("example.com/team/app", "2"), ("<none>", "<none>")]
    assert listed[0].id == app and listed[0].short_id == app[7:19]
    assert listed[2].id == bare and listed[2].digest == "<none>"
    assert listed[0].size > 0 and listed[0].created == "2024-01-01T00:00:01Z"
    assert [i.tag for i in dockyard.images("app", root=root)] == ["1"]
    assert [i.repository for i in dockyard.images("example.com/team/app:2", root=root)] == [
        "example.com/team/app"]
    assert dockyard.images("app:9", root=root) == ()
    with pytest.raises(dockyard.UsageError, match="images: "):
        dockyard.images("Bad Name", root=root)


def test_inspect_and_history(root: Path, app: str) -> None:
    details = dockyard.inspect("app:1", root=root)
    assert details.id == app
    assert details.tags == ("app:1", "example.com/team/app:2")
    assert details.os == "linux" and details.architecture == "amd64"
    assert details.config["Cmd"] == ["/bin/sh"]
    assert len(details.layers) == 2
    doc = details.to_dict()
    assert doc["Id"] == app and doc["RootFS"]["Layers"] == list(details.layers)
    assert "Manifest" in doc and "Descriptor" in doc
    with pytest.raises(dockyard.NotFoundError, match="no such image: nope"):
        dockyard.inspect("nope", root=root)
    items = dockyard.history(app[7:19], root=root)
    assert [i.created_by for i in items] == ["COPY layer1 /", "COPY layer0 /"]
    assert items[0].id == app and items[1].id == "<missing>"
    assert all(i.size > 0 for i in items)


def test_tag_and_rmi(root: Path, app: str) -> None:
    result = dockyard.tag("app:1", "other", root=root)
    assert result == dockyard.TagResult(app, "docker.io/library/other:latest")
    with pytest.raises(dockyard.UsageError, match="digest reference"):
        dockyard.tag("app:1", "x@sha256:" + "0" * 64, root=root)
    with pytest.raises(dockyard.NotFoundError):
        dockyard.tag("missing", "x", root=root)
    # by name: only that name goes while others remain
    assert dockyard.rmi("other", root=root) == dockyard.RemoveResult(("other:latest",), None)
    # by id with several names: refused unless forced
    with pytest.raises(dockyard.StoreError, match="must be forced"):
        dockyard.rmi(app[7:19], root=root)
    removed = dockyard.rmi(app[7:19], force=True, root=root)
    assert removed == dockyard.RemoveResult(("app:1", "example.com/team/app:2"), app)
    assert dockyard.images(root=root) == ()


def test_rmi_last_name_deletes_the_image(root: Path) -> None:
    image_id, _ = make_image(root, [{"a": b"a"}], names=("solo:1",))
    assert dockyard.rmi("solo:1", root=root) == dockyard.RemoveResult(("solo:1",), image_id)
    with pytest.raises(dockyard.NotFoundError):
        dockyard.inspect(image_id, root=root)


# --- prune and the build cache ---------------------------------------------------------------


def _cache_record(root: Path, key: str, diff_ids: list[str], instruction: str = "RUN") -> None:
    with Store.open(root) as store:
        store.put_cache_record(CacheRecord(
            key=key, diff_id=diff_ids[-1], chain_id=chain_ids(diff_ids)[-1],
            result={"instruction": instruction}, description=f"{instruction} step {key}"))


def test_prune_keeps_tagged_images_and_frees_the_rest(root: Path, app: str) -> None:
    make_image(root, [{"lone": b"l" * 5000}], names=("lone:1",))
    dockyard.rmi("lone:1", root=root)
    result = dockyard.prune(root=root)
    assert result.blobs_removed == 3  # the lone image's layer, config and manifest
    assert result.bytes_freed > 5000
    assert result.cache_records_removed == 0 and result.images_removed == 0
    assert dockyard.inspect("app:1", root=root).id == app
    again = dockyard.prune(root=root)
    assert (again.blobs_removed, again.bytes_freed) == (0, 0)


def test_prune_all_drops_cache_and_untagged_images(root: Path, app: str) -> None:
    _, diff_ids = make_image(root, [{"u": b"u" * 3000}])
    _cache_record(root, "sha256:" + "a" * 64, diff_ids)
    result = dockyard.prune(all=True, root=root)
    assert result.cache_records_removed == 1 and result.images_removed == 1
    assert [i.id for i in dockyard.images(root=root)] == [app, app]
    assert dockyard.cache_ls(root=root) == ()


def test_cache_ls_du_prune(root: Path, app: str) -> None:
    _, app_layers = make_image(root, [{"etc/os-release": b"ID=t\n"}, {"app/run": b"#!/bin/sh\n"}])
    _, lone_layers = make_image(root, [{"lone": b"l" * 4000}], names=("lone:1",))
    dockyard.rmi("lone:1", root=root)
    _cache_record(root, "sha256:" + "1" * 64, app_layers)
    _cache_record(root, "sha256:" + "2" * 64, lone_layers, instruction="COPY")
    entries = {e.key[7:8]: e for e in dockyard.cache_ls(root=root)}
    assert entries["1"].kind == "RUN" and entries["1"].in_use and entries["1"].shared
    assert entries["1"].reclaimable == 0 and entries["1"].has_layer
    assert entries["2"].kind == "COPY" and not entries["2"].in_use
    assert entries["2"].reclaimable == entries["2"].size > 4000
    assert entries["2"].description == "COPY step sha256:" + "2" * 64
    usage = dockyard.cache_du(root=root)
    assert usage.records == 2 and usage.reclaimable == entries["2"].size
    assert {k.kind for k in usage.kinds} == {"RUN", "COPY"}
    with pytest.raises(dockyard.UsageError):
        dockyard.cache_prune(keep_storage="lots", root=root)
    result = dockyard.cache_prune(root=root)  # default: what no tagged image uses
    assert result.records_removed == 1 and result.bytes_freed > 4000
    assert [e.key[7:8] for e in dockyard.cache_ls(root=root)] == ["1"]
    assert dockyard.cache_prune(older_than="0s", root=root).records_removed == 1
    assert dockyard.cache_ls(root=root) == ()


# --- archives and files ----------------------------------------------------------------------


def test_save_load_round_trip_through_streams_and_paths(root: Path, app: str,
                                                         tmp_path: Path) -> None:
    buf = io.BytesIO()
    saved = dockyard.save(["app:1", app[7:19]], buf, root=root)
    assert saved.format == "docker"
    assert saved.images == (dockyard.LoadedImage(app, ("docker.io/library/app:1",),
                                                 ("app:1",)),)
    other = tmp_path / "other"
    loaded = dockyard.load(io.BytesIO(buf.getvalue()), root=other)
    assert loaded.images == saved.images
    layout = tmp_path / "oci.tar"
    dockyard.save([app[7:19]], layout, format="oci", root=root)
    third = dockyard.load(layout, root=tmp_path / "third")
    assert [(i.id, i.names) for i in third.images] == [(app, ())]
    with pytest.raises(dockyard.NotFoundError):
        dockyard.save(["nope"], io.BytesIO(), root=root)


def test_export_cp_import(root: Path, app: str, tmp_path: Path) -> None:
    fs = io.BytesIO()
    assert dockyard.export("app:1", fs, root=root) == dockyard.ExportResult(app)
    with tarfile.open(fileobj=io.BytesIO(fs.getvalue())) as tar:
        assert {"etc/os-release", "app/run"} <= set(tar.getnames())
    dockyard.export("app:1", tmp_path / "fs.tar", root=root)
    assert (tmp_path / "fs.tar").read_bytes() == fs.getvalue()

    copied = dockyard.cp("app:1", "/etc/os-release", tmp_path / "release", root=root)
    assert copied == dockyard.CopyResult(app, "/etc/os-release", str(tmp_path / "release"))
    assert (tmp_path / "release").read_bytes() == b"ID=t\n"
    stream = io.BytesIO()
    dockyard.cp("app:1", "/app", stream, root=root)
    with tarfile.open(fileobj=io.BytesIO(stream.getvalue())) as tar:
        assert sorted(tar.getnames()) == ["app", "app/run"]
    with pytest.raises(dockyard.NotFoundError):
        dockyard.cp("app:1", "/nope", tmp_path / "x", root=root)

    imported = dockyard.import_(io.BytesIO(fs.getvalue()), "flat:1", changes=["CMD /app/run"],
                                message="flattened", root=root)
    assert imported.names == ("docker.io/library/flat:1",)
    details = dockyard.inspect("flat:1", root=root)
    assert details.id == imported.image_id and len(details.layers) == 1
    assert details.config["Cmd"] == ["/bin/sh", "-c", "/app/run"]
    assert dockyard.history("flat:1", root=root)[0].comment == "flattened"
    with pytest.raises(dockyard.UsageError, match="os/arch"):
        dockyard.import_(io.BytesIO(fs.getvalue()), platform="linux", root=root)


# --- registries without a registry -----------------------------------------------------------


def test_login_state_in_the_auth_file(tmp_path: Path) -> None:
    authfile = tmp_path / "config.json"
    assert dockyard.get_login("https://index.docker.io/v1/", authfile=authfile) == (
        dockyard.LoginStatus("docker.io", None))
    assert dockyard.logout("localhost:5000", authfile=authfile) == dockyard.LogoutResult(
        "localhost:5000", False)
    with pytest.raises(dockyard.UsageError, match="user name"):
        dockyard.login("localhost:5000", "", "pw", authfile=authfile)
    with pytest.raises(dockyard.UsageError, match="password is empty"):
        dockyard.login("localhost:5000", "me", "", authfile=authfile)


def test_results_are_frozen_dataclasses() -> None:
    for name in dockyard.__all__:
        value = getattr(dockyard, name)
        if isinstance(value, type) and name.endswith(("Result", "Summary", "Details", "Entry",
                                                       "Status", "Info", "Image", "Item")):
            assert dataclasses.is_dataclass(value), name
            params = value.__dataclass_params__  # type: ignore[attr-defined]
            assert params.frozen, name
