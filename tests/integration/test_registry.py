"""Push and pull against a real registry (Debian's docker-registry on a loopback port),
with skopeo as an independent reader; auth (Basic, Bearer) and FROM pulling during a build.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from test_build_support import dockyard_cli, fresh_store, write_tree
from test_registry_support import (
    PASSWORD,
    USER,
    Registry,
    TokenServer,
    basic_registry,
    docker_config,
    needs_registry,
    registry,
    store_tmp,
    token_registry,
)

import dockyard
from dockyard.errors import DockerfileError, RegistryError
from dockyard.image.oci import (
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    Platform,
    canonical_json,
    digest_bytes,
)
from dockyard.registry import RegistryClient, RegistryOptions, pull, push
from dockyard.store.db import Store

pytestmark = needs_registry

__all__ = ["basic_registry", "docker_config", "registry", "token_registry"]  # fixtures

PAYLOAD = b"registry round trip \x00\x01\x02 " * 500


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A store with busybox and an image built on it (two layers: busybox + COPY)."""
    tmp = tmp_path_factory.mktemp("registry-built")
    root = fresh_store(tmp / "store")
    ctx = write_tree(tmp / "ctx", {
        "Dockerfile": "FROM busybox\nCOPY payload.bin /data/payload.bin\n"
                      "LABEL org.example.test=registry\nCMD [\"cat\", \"/data/payload.bin\"]\n",
        "payload.bin": PAYLOAD,
    })
    result = dockyard.build(str(ctx), tags=["app:1"], root=str(root))
    return root, result.image_id


def _file_in_image(store: Store, image_id: str, path: str) -> bytes | None:
    """The content of ``path`` in the image, read from its stored uncompressed layers."""
    config = store.read_config(store.get_image(image_id))
    found: bytes | None = None
    for diff_id in config.diff_ids:
        with store.blobs.open(store.ensure_layer_blob(diff_id)) as f, \
                tarfile.open(fileobj=f, mode="r|") as tar:
            for member in tar:
                if member.name.lstrip("./") == path.lstrip("/") and member.isfile():
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    found = extracted.read()
    return found


def _skopeo(*args: str) -> dict[str, object]:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    out = subprocess.run(["skopeo", *args], capture_output=True, text=True, check=True)
    data: dict[str, object] = json.loads(out.stdout)
    return data


def test_push_then_pull_into_a_fresh_store(built: tuple[Path, str], registry: Registry,
                                           tmp_path: Path) -> None:
    root, image_id = built
    store = Store.open(root)
    dest = f"{registry.host}/test/app:1"
    messages: list[str] = []
    result = push(store, "app:1", dest, on_progress=messages.append)
    assert result.media_type == MEDIA_TYPE_OCI_MANIFEST
    assert result.uploaded == 3  # two layers and the config
    # the pushed digest became a RepoDigest of the local image
    assert f"{registry.host}/test/app@{result.digest}" in store.get_image(image_id).names

    again = push(store, "app:1", dest)
    assert again.digest == result.digest
    assert (again.uploaded, again.present) == (0, 3)

    fresh = Store.open(tmp_path / "fresh")
    pulled = pull(fresh, dest)
    assert pulled.image_id == image_id  # same config digest
    assert pulled.digest == pulled.manifest_digest == result.digest
    assert pulled.layers_downloaded == 2
    record = fresh.get_image(dest)
    assert record.manifest_digest == result.digest
    assert f"{registry.host}/test/app@{result.digest}" in record.names
    assert _file_in_image(fresh, image_id, "data/payload.bin") == PAYLOAD
    assert _file_in_image(fresh, image_id, "bin/busybox") == _file_in_image(
        store, image_id, "bin/busybox")
    # layers stored uncompressed by diff_id, with the registry's gzip blob as a form
    config = fresh.read_config(record)
    manifest = fresh.read_manifest(record)
    for diff_id, desc in zip(config.diff_ids, manifest.layers, strict=True):
        layer = fresh.get_layer(diff_id)
        assert layer is not None and layer.size == fresh.blobs.size(diff_id)
        assert layer.blobs["gzip"].digest == desc.digest
    assert store_tmp(fresh.root) == []

    # a second pull downloads nothing
    again_pulled = pull(fresh, dest)
    assert (again_pulled.layers_downloaded, again_pulled.layers_present) == (0, 2)

    # pushing the pulled image elsewhere gives the same manifest (same blobs, same bytes)
    # and mounts the blobs from the repository they were pulled from
    copy = push(fresh, dest, f"{registry.host}/other/app:copy")
    assert copy.digest == result.digest
    assert copy.mounted == 3 and copy.uploaded == 0


def test_skopeo_reads_the_pushed_image(built: tuple[Path, str], registry: Registry) -> None:
    root, image_id = built
    store = Store.open(root)
    dest = f"{registry.host}/test/skopeo:oci"
    result = push(store, "app:1", dest)
    info = _skopeo("inspect", "--tls-verify=false", f"docker://{dest}")
    assert info["Digest"] == result.digest
    assert len(info["Layers"]) == 2  # type: ignore[arg-type]
    assert info["Labels"] == {"org.example.test": "registry"}
    config = _skopeo("inspect", "--config", "--tls-verify=false", f"docker://{dest}")
    assert config["rootfs"] == {"type": "layers",
                                "diff_ids": list(store.read_config(
                                    store.get_image(image_id)).diff_ids)}

    docker_dest = f"{registry.host}/test/skopeo:docker"
    docker = push(store, "app:1", docker_dest, manifest_format="docker")
    raw = _skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{docker_dest}")
    assert raw["mediaType"] == MEDIA_TYPE_DOCKER_MANIFEST
    assert {layer["mediaType"] for layer in raw["layers"]} == {  # type: ignore[attr-defined]
        "application/vnd.docker.image.rootfs.diff.tar.gzip"}
    assert docker.digest != result.digest


def test_chunked_upload(built: tuple[Path, str], registry: Registry, tmp_path: Path) -> None:
    root, image_id = built
    store = Store.open(root)
    (root / "registry.db").unlink(missing_ok=True)  # no mount hints: really upload
    dest = f"{registry.host}/chunked/app:1"
    result = push(store, "app:1", dest, options=RegistryOptions(chunk_size=4096))
    assert result.uploaded == 3
    fresh = Store.open(tmp_path / "fresh")
    assert pull(fresh, dest).image_id == image_id
    assert _file_in_image(fresh, image_id, "data/payload.bin") == PAYLOAD


def _put_index(registry: Registry, repo: str, entries: list[tuple[str, int, Platform]]) -> str:
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_INDEX,
        "manifests": [{"mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": d, "size": s,
                       "platform": p.to_dict()} for d, s, p in entries],
    }
    body = canonical_json(index)
    with RegistryClient(registry.host) as client:
        client.put_manifest(repo, "multi", body, MEDIA_TYPE_OCI_INDEX)
    return digest_bytes(body)


def test_pull_index_picks_the_host_platform(built: tuple[Path, str], registry: Registry,
                                             tmp_path: Path) -> None:
    root, image_id = built
    store = Store.open(root)
    record = store.get_image(image_id)
    # a second image that claims to be for another architecture (same layers)
    other_arch = "arm64" if Platform.host().architecture != "arm64" else "amd64"
    config = json.loads(store.config_bytes(record))
    config["architecture"] = other_arch
    config_bytes = json.dumps(config, sort_keys=True).encode()
    manifest = json.loads(store.manifest_bytes(record))
    manifest["config"] = {"mediaType": "application/vnd.oci.image.config.v1+json",
                          "digest": digest_bytes(config_bytes), "size": len(config_bytes)}
    other = store.put_image(canonical_json(manifest), config_bytes, ["other-arch:1"])

    repo = "multi/app"
    host_push = push(store, image_id, f"{registry.host}/{repo}:host")
    other_push = push(store, other.id, f"{registry.host}/{repo}:other")
    index_digest = _put_index(registry, repo, [
        (other_push.digest, other_push.size, Platform("linux", other_arch)),
        (host_push.digest, host_push.size, Platform.host()),
    ])

    fresh = Store.open(tmp_path / "fresh")
    pulled = pull(fresh, f"{registry.host}/{repo}:multi")
    assert pulled.image_id == image_id
    assert pulled.digest == index_digest
    assert pulled.manifest_digest == host_push.digest
    assert f"{registry.host}/{repo}@{index_digest}" in fresh.get_image(image_id).names
    # and by digest, asking for the other platform
    other_pulled = pull(fresh, f"{registry.host}/{repo}@{index_digest}",
                        platform=f"linux/{other_arch}")
    assert other_pulled.image_id == other.id
    with pytest.raises(RegistryError, match=r"no image for linux/s390x.*it has"):
        pull(fresh, f"{registry.host}/{repo}:multi", platform="linux/s390x")


def test_pull_errors_name_registry_and_repository(registry: Registry, tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s")
    with pytest.raises(RegistryError) as info:
        pull(store, f"{registry.host}/no/such:tag")
    assert f"{registry.host}/no/such: manifest tag" in str(info.value)
    assert "MANIFEST_UNKNOWN" in str(info.value) or "NAME_UNKNOWN" in str(info.value)
    assert store.list_images() == []


def test_basic_auth_needs_login(built: tuple[Path, str], basic_registry: Registry,
                                docker_config: Path, tmp_path: Path) -> None:
    root, image_id = built
    store = Store.open(root)
    dest = f"{basic_registry.host}/private/app:1"
    with pytest.raises(RegistryError, match=rf"{basic_registry.host}.*authentication required"
                                            r".*dockyard login"):
        push(store, "app:1", dest)

    cli = dockyard_cli()
    env = {**os.environ, "DOCKER_CONFIG": str(docker_config)}
    bad = subprocess.run([*cli, "login", basic_registry.host, "-u", USER, "--password-stdin"],
                         input="wrong\n", capture_output=True, text=True, env=env, check=False)
    assert bad.returncode == 1
    assert "not authorized" in bad.stderr and basic_registry.host in bad.stderr
    assert not (docker_config / "config.json").exists()

    ok = subprocess.run([*cli, "login", basic_registry.host, "-u", USER, "--password-stdin"],
                        input=PASSWORD + "\n", capture_output=True, text=True, env=env,
                        check=False)
    assert ok.returncode == 0, ok.stderr
    saved = json.loads((docker_config / "config.json").read_text())
    assert base64.b64decode(saved["auths"][basic_registry.host]["auth"]).decode() == \
        f"{USER}:{PASSWORD}"

    result = push(store, "app:1", dest, options=RegistryOptions(chunk_size=8192))
    fresh = Store.open(tmp_path / "fresh")
    assert pull(fresh, dest).image_id == image_id
    info = _skopeo("inspect", "--tls-verify=false", "--authfile",
                   str(docker_config / "config.json"), f"docker://{dest}")
    assert info["Digest"] == result.digest

    out = subprocess.run([*cli, "logout", basic_registry.host], capture_output=True, text=True,
                         env=env, check=False)
    assert out.returncode == 0
    assert json.loads((docker_config / "config.json").read_text())["auths"] == {}
    with pytest.raises(RegistryError, match="authentication required"):
        pull(Store.open(tmp_path / "other"), dest)


def test_token_auth(built: tuple[Path, str], token_registry: tuple[Registry, TokenServer],
                    docker_config: Path, tmp_path: Path) -> None:
    reg, token = token_registry
    root, image_id = built
    store = Store.open(root)
    dest = f"{reg.host}/tok/app:1"
    with pytest.raises(RegistryError, match=rf"{reg.host}: authentication required.*"
                                            r"refused anonymous access"):
        pull(Store.open(tmp_path / "anon"), dest)

    from dockyard.registry import Credentials, save_credentials

    with pytest.raises(RegistryError, match="authentication failed"), \
            RegistryClient(reg.host, credentials=Credentials(USER, "nope")) as client:
        client.login()
    save_credentials(reg.host, Credentials(USER, PASSWORD))
    token.scopes.clear()
    push(store, "app:1", dest)
    assert ["repository:tok/app:pull,push"] in token.scopes
    fresh = Store.open(tmp_path / "fresh")
    assert pull(fresh, dest).image_id == image_id
    assert ["repository:tok/app:pull"] in token.scopes

    # an anonymous token: a public repository pulls without credentials
    public = f"{reg.host}/public/app:1"
    push(store, "app:1", public)
    (docker_config / "config.json").unlink()
    token.scopes.clear()
    anonymous = Store.open(tmp_path / "anonymous")
    assert pull(anonymous, public).image_id == image_id
    assert token.scopes == [["repository:public/app:pull"]]


def test_cli_push_and_pull(built: tuple[Path, str], registry: Registry, tmp_path: Path) -> None:
    root, image_id = built
    cli = dockyard_cli()
    dest = f"{registry.host}/cli/app:2"
    out = subprocess.run([*cli, "--root", str(root), "push", "app:1", dest,
                          "--digestfile", str(tmp_path / "digest")],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    digest = out.stdout.strip()
    assert digest.startswith("sha256:") and (tmp_path / "digest").read_text() == digest
    fresh = tmp_path / "fresh"
    out = subprocess.run([*cli, "--root", str(fresh), "pull", dest], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert "Downloaded newer image" in out.stderr and f"Digest: {digest}" in out.stderr
    inspect = subprocess.run([*cli, "--root", str(fresh), "inspect", dest],
                             capture_output=True, text=True, check=True)
    data = json.loads(inspect.stdout)
    data = data[0] if isinstance(data, list) else data
    assert data["Id"] == image_id
    assert f"{registry.host}/cli/app@{digest}" in data["RepoDigests"]


def test_cli_build_push(built: tuple[Path, str], registry: Registry, tmp_path: Path) -> None:
    root, _image_id = built
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nLABEL pushed=yes\n"})
    dest = f"{registry.host}/cli/built:1"
    out = subprocess.run([*dockyard_cli(), "--root", str(root), "build", "-q", "-t", dest,
                          "--push", "--iidfile", str(tmp_path / "iid"), str(ctx)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (tmp_path / "iid").read_text()
    fresh = Store.open(tmp_path / "fresh")
    pulled = pull(fresh, dest)
    assert pulled.image_id == (tmp_path / "iid").read_text()
    # the pushed digest is printed, and it is the one the registry serves
    assert f"pushed {dest}@{pulled.digest}\n" in out.stderr
    # one size for one image: a pulled image shows the uncompressed size, as the built one
    built_size = dockyard.inspect(pulled.image_id, root=root).size
    assert dockyard.inspect(pulled.image_id, root=tmp_path / "fresh").size == built_size
    assert [i.size for i in dockyard.images(root=tmp_path / "fresh")] == [built_size]
    assert fresh.read_config(fresh.get_image(dest)).config.labels == {"pushed": "yes"}


def test_build_pulls_a_missing_base(built: tuple[Path, str], registry: Registry,
                                    tmp_path: Path) -> None:
    root, _image_id = built
    store = Store.open(root)
    base = f"{registry.host}/bases/busybox:1"
    base_digest = push(store, "busybox:latest", base).digest
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": f"FROM {base}\nCOPY hello.txt /hello.txt\n",
        "hello.txt": "hello from a pulled base\n",
    })
    empty = tmp_path / "empty"
    with pytest.raises(DockerfileError, match="not in the local store"):
        dockyard.build(str(ctx), root=str(empty), pull="never")
    result = dockyard.build(str(ctx), tags=["on-pulled:1"], root=str(empty),
                            outputs=[f"type=registry,name={registry.host}/built/app:1"])
    fresh = Store.open(empty)
    base_record = fresh.get_image(base)
    assert base_record.manifest_digest == base_digest
    assert base_record.id == store.get_image("busybox:latest").id
    built_config = fresh.read_config(fresh.get_image(result.image_id))
    assert built_config.diff_ids[:-1] == fresh.read_config(base_record).diff_ids
    assert _file_in_image(fresh, result.image_id, "hello.txt") == b"hello from a pulled base\n"
    # the registry output pushed it
    again = Store.open(tmp_path / "again")
    assert pull(again, f"{registry.host}/built/app:1").image_id == result.image_id
