"""The OCI model: documents round-trip (unknown fields included), chain ids, media types."""

from __future__ import annotations

import hashlib
import json

import pytest

from dockyard.image.oci import (
    MEDIA_TYPE_DOCKER_CONFIG,
    MEDIA_TYPE_DOCKER_FOREIGN_LAYER,
    MEDIA_TYPE_DOCKER_LAYER_GZIP,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_LAYER,
    MEDIA_TYPE_OCI_LAYER_ZSTD,
    MEDIA_TYPE_OCI_MANIFEST,
    Descriptor,
    Healthcheck,
    HistoryEntry,
    ImageConfig,
    Index,
    InvalidDocument,
    Manifest,
    Platform,
    canonical_json,
    chain_ids,
    layer_compression,
    layer_media_type,
)


def _d(n: int) -> str:
    return "sha256:" + hashlib.sha256(str(n).encode()).hexdigest()


def test_chain_ids_follow_the_spec_formula() -> None:
    diff_ids = [_d(1), _d(2), _d(3)]
    got = chain_ids(diff_ids)
    # OCI image-spec config.md: ChainID(L0) = DiffID(L0);
    # ChainID(L0..Ln) = SHA256hex(ChainID(L0..Ln-1) + " " + DiffID(Ln)).
    c0 = diff_ids[0]
    c1 = "sha256:" + hashlib.sha256(f"{c0} {diff_ids[1]}".encode()).hexdigest()
    c2 = "sha256:" + hashlib.sha256(f"{c1} {diff_ids[2]}".encode()).hexdigest()
    assert got == [c0, c1, c2]
    assert chain_ids([]) == []
    # a chain id depends on order
    assert chain_ids([_d(2), _d(1)])[1] != c1


def test_canonical_json_is_deterministic() -> None:
    a = {"b": 1, "a": [1, {"z": "é", "y": None}]}
    b = {"a": [1, {"y": None, "z": "é"}], "b": 1}
    assert canonical_json(a) == canonical_json(b) == '{"a":[1,{"y":null,"z":"é"}],"b":1}'.encode()
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


DOCKER_CONFIG = {
    "architecture": "amd64",
    "os": "linux",
    "created": "2024-03-01T10:00:00.123456789Z",
    "author": "someone",
    "docker_version": "24.0.7",
    "container_config": {"Hostname": "abc", "Cmd": ["/bin/sh", "-c", "#(nop) CMD"]},
    "config": {
        "Hostname": "",
        "AttachStdin": False,
        "User": "app:app",
        "ExposedPorts": {"80/tcp": {}, "443/tcp": {}},
        "Env": ["PATH=/usr/bin:/bin", "A=1"],
        "Entrypoint": ["/entry"],
        "Cmd": ["serve", "--port", "80"],
        "Volumes": {"/data": {}},
        "WorkingDir": "/srv",
        "Labels": {"maintainer": "me"},
        "StopSignal": "SIGTERM",
        "Healthcheck": {"Test": ["CMD", "true"], "Interval": 30000000000, "Retries": 3},
        "OnBuild": ["RUN echo hi"],
        "Shell": ["/bin/bash", "-c"],
    },
    "rootfs": {"type": "layers", "diff_ids": [_d(1), _d(2)]},
    "history": [
        {"created": "2024-03-01T09:00:00Z", "created_by": "ADD rootfs.tar /", "comment": "x"},
        {"created": "2024-03-01T09:00:01Z", "created_by": "ENV A=1", "empty_layer": True},
        {"created": "2024-03-01T09:00:02Z", "created_by": "RUN make", "future_field": 7},
    ],
}


def test_image_config_round_trip_keeps_unknown_fields() -> None:
    config = ImageConfig.from_dict(DOCKER_CONFIG)
    assert config.config.user == "app:app"
    assert config.config.exposed_ports == ("443/tcp", "80/tcp")
    assert config.config.cmd == ("serve", "--port", "80")
    assert config.config.healthcheck == Healthcheck(
        test=("CMD", "true"), interval=30_000_000_000, retries=3
    )
    assert config.config.extra == {"Hostname": "", "AttachStdin": False}
    assert config.extra["docker_version"] == "24.0.7"
    assert config.history[1].empty_layer
    assert config.history[2].extra == {"future_field": 7}
    assert config.to_dict() == DOCKER_CONFIG
    again = ImageConfig.from_json(config.to_json())
    assert again == config
    assert config.digest == "sha256:" + hashlib.sha256(config.to_json()).hexdigest()


def test_layer_history_pairs_entries_with_layers() -> None:
    config = ImageConfig.from_dict(DOCKER_CONFIG)
    pairs = config.layer_history()
    assert [(h.created_by, d) for h, d in pairs] == [
        ("ADD rootfs.tar /", _d(1)),
        ("ENV A=1", None),
        ("RUN make", _d(2)),
    ]


def test_config_helpers() -> None:
    base = ImageConfig.empty(Platform("linux", "arm64"))
    assert base.to_dict() == {
        "architecture": "arm64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
    }
    step = base.with_config(working_dir="/app", env=("A=1",)).add_history(
        HistoryEntry(created_by="WORKDIR /app", empty_layer=True)
    )
    step = step.add_layer(_d(9), HistoryEntry(created_by="COPY . /app", empty_layer=True))
    assert step.config.working_dir == "/app"
    assert step.diff_ids == (_d(9),)
    assert [h.empty_layer for h in step.history] == [True, False]
    assert step.chain_ids() == [_d(9)]
    assert base.config.working_dir == ""  # frozen: the base is untouched
    assert step.config.with_env("A", "2").env == ("A=2",)
    assert step.config.with_env("B", "x=y").env_dict() == {"A": "1", "B": "x=y"}


def test_empty_values_are_omitted_like_go_omitempty() -> None:
    config = ImageConfig.from_dict(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": [], "Cmd": None, "Labels": {}, "User": ""},
            "rootfs": {"type": "layers", "diff_ids": []},
            "history": [],
        }
    )
    assert config.to_dict()["config"] == {}
    assert "history" not in config.to_dict()


def test_config_refuses_bad_shapes() -> None:
    with pytest.raises(InvalidDocument):
        ImageConfig.from_json(b"not json")
    with pytest.raises(InvalidDocument):
        ImageConfig.from_dict({"os": "linux", "architecture": "amd64", "config": {"Env": "A=1"}})
    with pytest.raises(InvalidDocument):
        ImageConfig.from_dict({"rootfs": {"type": "other", "diff_ids": []}})


def test_manifest_round_trip_docker_and_oci() -> None:
    docker = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_DOCKER_MANIFEST,
        "config": {"mediaType": MEDIA_TYPE_DOCKER_CONFIG, "size": 1469, "digest": _d(1)},
        "layers": [
            {"mediaType": MEDIA_TYPE_DOCKER_LAYER_GZIP, "size": 2, "digest": _d(2)},
            {
                "mediaType": MEDIA_TYPE_DOCKER_FOREIGN_LAYER,
                "size": 3,
                "digest": _d(3),
                "urls": ["https://example.com/layer"],
            },
        ],
    }
    manifest = Manifest.from_dict(docker)
    assert manifest.layers[1].urls == ("https://example.com/layer",)
    assert manifest.to_dict() == docker
    oci = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "artifactType": "application/x.example",
        "config": {"mediaType": MEDIA_TYPE_OCI_CONFIG, "size": 7, "digest": _d(4), "data": "e30="},
        "layers": [],
        "subject": {"mediaType": MEDIA_TYPE_OCI_MANIFEST, "size": 9, "digest": _d(5)},
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
        "x-unknown": {"kept": True},
    }
    parsed = Manifest.from_json(json.dumps(oci))
    assert parsed.config.extra == {"data": "e30="}
    assert parsed.subject is not None and parsed.subject.digest == _d(5)
    assert parsed.to_dict() == oci
    assert Manifest.from_json(parsed.to_json()) == parsed


def test_manifest_refuses_indexes_and_schema1() -> None:
    with pytest.raises(InvalidDocument, match="media type"):
        Manifest.from_dict({"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_INDEX, "manifests": []})
    with pytest.raises(InvalidDocument, match="schemaVersion"):
        Manifest.from_dict({"schemaVersion": 1, "name": "x", "fsLayers": []})
    with pytest.raises(InvalidDocument, match="size"):
        Descriptor.from_dict({"mediaType": MEDIA_TYPE_OCI_LAYER, "digest": _d(1)})


def test_index_round_trip_and_platform_lookup() -> None:
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_DOCKER_MANIFEST_LIST,
        "manifests": [
            {
                "mediaType": MEDIA_TYPE_DOCKER_MANIFEST,
                "size": 1,
                "digest": _d(1),
                "platform": {"architecture": "amd64", "os": "linux"},
            },
            {
                "mediaType": MEDIA_TYPE_DOCKER_MANIFEST,
                "size": 2,
                "digest": _d(2),
                "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
            },
            {
                "mediaType": MEDIA_TYPE_DOCKER_MANIFEST,
                "size": 3,
                "digest": _d(3),
                "platform": {
                    "architecture": "arm",
                    "os": "linux",
                    "variant": "v7",
                    "os.features": ["x"],
                },
            },
        ],
    }
    parsed = Index.from_dict(index)
    assert parsed.to_dict() == index
    assert Index.from_json(parsed.to_json()) == parsed
    found = parsed.find(Platform.parse("linux/arm64"))
    assert found is not None and found.digest == _d(2)
    found = parsed.find(Platform.parse("linux/arm"))
    assert found is not None and found.digest == _d(3)
    assert parsed.find(Platform.parse("linux/s390x")) is None


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("linux/amd64", "linux/amd64"),
        ("linux/x86_64", "linux/amd64"),
        ("linux/aarch64", "linux/arm64"),
        ("linux/arm64/v8", "linux/arm64"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/arm/6", "linux/arm/v6"),
        ("Linux/AMD64", "linux/amd64"),
    ],
)
def test_platform_parse_normalizes(spec: str, expected: str) -> None:
    assert str(Platform.parse(spec)) == expected


@pytest.mark.parametrize("spec", ["linux", "linux/", "a/b/c/d", ""])
def test_platform_parse_errors(spec: str) -> None:
    with pytest.raises(InvalidDocument, match="invalid platform"):
        Platform.parse(spec)


def test_media_types() -> None:
    assert layer_compression(MEDIA_TYPE_DOCKER_LAYER_GZIP) == "gzip"
    assert layer_compression(MEDIA_TYPE_OCI_LAYER_ZSTD) == "zstd"
    assert layer_compression(MEDIA_TYPE_OCI_LAYER) == "none"
    assert layer_media_type("gzip", docker=True) == MEDIA_TYPE_DOCKER_LAYER_GZIP
    assert layer_media_type("zstd", docker=True) == MEDIA_TYPE_OCI_LAYER_ZSTD
    assert layer_media_type("none") == MEDIA_TYPE_OCI_LAYER
    with pytest.raises(InvalidDocument):
        layer_compression(MEDIA_TYPE_OCI_CONFIG)
