"""The OCI image model: media types, descriptors, manifests, indexes and the image config.

Every type is a frozen dataclass with ``to_dict()`` / ``from_dict()`` using the JSON field
names of the OCI image spec (which Docker schema2 shares). Fields this model does not know
are kept in ``extra`` and written back, so a document read and written again loses nothing.

Serialization follows Go's ``omitempty`` as BuildKit's image types do: an absent optional
field, an empty list and an empty map are all left out. Code that needs the exact bytes of a
document it did not write (a pulled config, whose digest is its identity) keeps the bytes.

:func:`canonical_json` is the one JSON encoder for documents dockyard writes: sorted keys,
no insignificant whitespace, UTF-8 (not ``\\u`` escapes). Go's ``encoding/json`` (used by
containerd and BuildKit) writes struct fields in declaration order instead, so our bytes
differ from theirs for the same content; what matters is that ours are deterministic: the
same image config always gives the same image id.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from dockyard.errors import DockyardError

__all__ = [
    "ANNOTATION_REF_NAME",
    "MEDIA_TYPE_DOCKER_CONFIG",
    "MEDIA_TYPE_DOCKER_FOREIGN_LAYER",
    "MEDIA_TYPE_DOCKER_LAYER",
    "MEDIA_TYPE_DOCKER_LAYER_GZIP",
    "MEDIA_TYPE_DOCKER_MANIFEST",
    "MEDIA_TYPE_DOCKER_MANIFEST_LIST",
    "MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED",
    "MEDIA_TYPE_OCI_CONFIG",
    "MEDIA_TYPE_OCI_EMPTY",
    "MEDIA_TYPE_OCI_INDEX",
    "MEDIA_TYPE_OCI_LAYER",
    "MEDIA_TYPE_OCI_LAYER_GZIP",
    "MEDIA_TYPE_OCI_LAYER_ZSTD",
    "MEDIA_TYPE_OCI_MANIFEST",
    "Compression",
    "Descriptor",
    "Healthcheck",
    "HistoryEntry",
    "ImageConfig",
    "Index",
    "InvalidDocument",
    "Manifest",
    "Platform",
    "RootFS",
    "RunConfig",
    "canonical_json",
    "chain_ids",
    "digest_bytes",
    "is_config",
    "is_index",
    "is_layer",
    "is_manifest",
    "layer_compression",
    "layer_media_type",
]

MEDIA_TYPE_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_OCI_EMPTY = "application/vnd.oci.empty.v1+json"
MEDIA_TYPE_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MEDIA_TYPE_OCI_LAYER_ND = "application/vnd.oci.image.layer.nondistributable.v1.tar"
MEDIA_TYPE_OCI_LAYER_ND_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
MEDIA_TYPE_OCI_LAYER_ND_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

MEDIA_TYPE_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_TYPE_DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_TYPE_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_TYPE_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
MEDIA_TYPE_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MEDIA_TYPE_DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

#: The annotation carrying an image's name in an OCI layout's index.json.
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"

Compression = Literal["none", "gzip", "zstd"]

_MANIFEST_TYPES = frozenset({MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST})
_INDEX_TYPES = frozenset({MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_MANIFEST_LIST})
_CONFIG_TYPES = frozenset({MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_DOCKER_CONFIG})
_LAYER_COMPRESSION: dict[str, Compression] = {
    MEDIA_TYPE_OCI_LAYER: "none",
    MEDIA_TYPE_OCI_LAYER_GZIP: "gzip",
    MEDIA_TYPE_OCI_LAYER_ZSTD: "zstd",
    MEDIA_TYPE_OCI_LAYER_ND: "none",
    MEDIA_TYPE_OCI_LAYER_ND_GZIP: "gzip",
    MEDIA_TYPE_OCI_LAYER_ND_ZSTD: "zstd",
    MEDIA_TYPE_DOCKER_LAYER: "none",
    MEDIA_TYPE_DOCKER_LAYER_GZIP: "gzip",
    MEDIA_TYPE_DOCKER_FOREIGN_LAYER: "gzip",
}
_FOREIGN_LAYERS = frozenset(
    {
        MEDIA_TYPE_DOCKER_FOREIGN_LAYER,
        MEDIA_TYPE_OCI_LAYER_ND,
        MEDIA_TYPE_OCI_LAYER_ND_GZIP,
        MEDIA_TYPE_OCI_LAYER_ND_ZSTD,
    }
)


class InvalidDocument(DockyardError):
    """A manifest, index or config that is not valid JSON of the expected shape."""


def is_manifest(media_type: str) -> bool:
    """An image manifest (OCI or Docker schema2)."""
    return media_type in _MANIFEST_TYPES


def is_index(media_type: str) -> bool:
    """An index or a Docker manifest list."""
    return media_type in _INDEX_TYPES


def is_config(media_type: str) -> bool:
    """An image config (OCI or Docker)."""
    return media_type in _CONFIG_TYPES


def is_layer(media_type: str) -> bool:
    """A layer tar of a known media type (any compression, foreign included)."""
    return media_type in _LAYER_COMPRESSION


def is_foreign_layer(media_type: str) -> bool:
    """A layer that registries need not serve (Docker foreign, OCI non-distributable)."""
    return media_type in _FOREIGN_LAYERS


def layer_compression(media_type: str) -> Compression:
    """The compression a layer media type declares. Raises InvalidDocument if not a layer."""
    try:
        return _LAYER_COMPRESSION[media_type]
    except KeyError:
        raise InvalidDocument(f"not a layer media type: {media_type}") from None


def layer_media_type(compression: Compression, *, docker: bool = False) -> str:
    """The layer media type for ``compression`` in OCI (default) or Docker schema2 manifests.

    Docker schema2 has no zstd type; BuildKit uses the OCI zstd type there, and so do we.
    """
    if docker:
        if compression == "none":
            return MEDIA_TYPE_DOCKER_LAYER
        if compression == "gzip":
            return MEDIA_TYPE_DOCKER_LAYER_GZIP
        return MEDIA_TYPE_OCI_LAYER_ZSTD
    return {
        "none": MEDIA_TYPE_OCI_LAYER,
        "gzip": MEDIA_TYPE_OCI_LAYER_GZIP,
        "zstd": MEDIA_TYPE_OCI_LAYER_ZSTD,
    }[compression]


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, compact separators, UTF-8, no NaN.

    Accepts plain JSON values and any object with a ``to_dict()`` method.
    """
    if hasattr(obj, "to_dict"):
        obj = obj.to_dict()
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def digest_bytes(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The OCI ChainID of each prefix of ``diff_ids``.

    ``ChainID(L0) = DiffID(L0)``; ``ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " +
    DiffID(Ln))``, both digests written in full ``sha256:<hex>`` form.
    """
    out: list[str] = []
    for diff_id in diff_ids:
        if not out:
            out.append(diff_id)
        else:
            out.append(digest_bytes(f"{out[-1]} {diff_id}".encode()))
    return out


# --- small helpers for from_dict --------------------------------------------------------


def _obj(data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidDocument(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data


def _load(data: bytes | str, what: str) -> dict[str, Any]:
    try:
        parsed = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidDocument(f"{what}: not valid JSON: {err}") from None
    return _obj(parsed, what)


def _str(d: Mapping[str, Any], key: str, what: str, default: str | None = None) -> str | None:
    value = d.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise InvalidDocument(f"{what}: {key} must be a string")
    return value


def _req_str(d: Mapping[str, Any], key: str, what: str) -> str:
    value = _str(d, key, what)
    if value is None:
        raise InvalidDocument(f"{what}: {key} is required")
    return value


def _int(d: Mapping[str, Any], key: str, what: str, default: int | None = None) -> int | None:
    value = d.get(key)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidDocument(f"{what}: {key} must be an integer")
    return value


def _strs(d: Mapping[str, Any], key: str, what: str) -> tuple[str, ...] | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidDocument(f"{what}: {key} must be a list of strings")
    return tuple(value)


def _str_map(d: Mapping[str, Any], key: str, what: str) -> dict[str, str]:
    value = d.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidDocument(f"{what}: {key} must be an object of strings")
    return dict(value)


def _key_set(d: Mapping[str, Any], key: str, what: str) -> tuple[str, ...]:
    """A Go ``map[string]struct{}`` (ExposedPorts, Volumes) as sorted keys."""
    value = d.get(key)
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise InvalidDocument(f"{what}: {key} must be an object")
    return tuple(sorted(value))


def _extra(d: Mapping[str, Any], known: Iterable[str]) -> dict[str, Any]:
    names = set(known)
    return {k: v for k, v in d.items() if k not in names}


def _put(out: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` unless ``value`` is empty (Go's omitempty)."""
    if value is None or value == "" or value == () or value == [] or value == {}:
        return
    if isinstance(value, tuple):
        value = list(value)
    out[key] = value


# --- platform and descriptors -----------------------------------------------------------

_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "armhf": "arm",
    "armel": "arm",
    "i386": "386",
    "i686": "386",
}


@dataclass(frozen=True)
class Platform:
    """An OCI platform: ``os/architecture[/variant]``."""

    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None
    os_features: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KNOWN = ("os", "architecture", "variant", "os.version", "os.features")

    @classmethod
    def parse(cls, spec: str) -> Platform:
        """Parse ``linux/amd64``, ``linux/arm/v7``, ``linux/arm64/v8`` and normalize it."""
        parts = spec.strip().lower().split("/")
        if len(parts) < 2 or len(parts) > 3 or not all(parts):
            raise InvalidDocument(
                f"invalid platform {spec!r}: expected os/arch[/variant], e.g. linux/amd64"
            )
        variant = parts[2] if len(parts) == 3 else None
        return cls(parts[0], parts[1], variant).normalized()

    @classmethod
    def host(cls) -> Platform:
        """The platform of the machine dockyard runs on."""
        # what platform.machine() returns on POSIX, without importing platform (start-up time)
        machine = os.uname().machine.lower()
        plat = cls("linux", machine).normalized()
        if plat.architecture == "arm" and plat.variant is None:
            plat = replace(plat, variant="v7")
        return plat

    def normalized(self) -> Platform:
        """containerd's normalization: x86_64 -> amd64, aarch64 -> arm64, arm64/v8 -> arm64."""
        arch = _ARCH_ALIASES.get(self.architecture, self.architecture)
        variant = self.variant or None
        if arch == "arm64" and variant in ("v8", "8"):
            variant = None
        elif arch == "arm" and variant is None:
            variant = "v7"
        elif arch == "arm" and variant is not None and variant.isdigit():
            variant = "v" + variant
        if arch == "amd64" and variant == "v1":
            variant = None
        return replace(self, architecture=arch, variant=variant)

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text

    def to_dict(self) -> dict[str, Any]:
        """OCI JSON form."""
        out: dict[str, Any] = dict(self.extra)
        out["architecture"] = self.architecture
        out["os"] = self.os
        _put(out, "variant", self.variant)
        _put(out, "os.version", self.os_version)
        _put(out, "os.features", self.os_features)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Platform:
        """Read OCI JSON (unknown fields kept)."""
        d = _obj(data, "platform")
        return cls(
            os=_req_str(d, "os", "platform"),
            architecture=_req_str(d, "architecture", "platform"),
            variant=_str(d, "variant", "platform") or None,
            os_version=_str(d, "os.version", "platform") or None,
            os_features=_strs(d, "os.features", "platform") or (),
            extra=_extra(d, cls._KNOWN),
        )


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor: what a blob is, its digest and size, and where it runs."""

    media_type: str
    digest: str
    size: int
    urls: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    artifact_type: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KNOWN = ("mediaType", "digest", "size", "urls", "annotations", "platform", "artifactType")

    def to_dict(self) -> dict[str, Any]:
        """OCI JSON form."""
        out: dict[str, Any] = dict(self.extra)
        out["mediaType"] = self.media_type
        out["digest"] = self.digest
        out["size"] = self.size
        _put(out, "urls", self.urls)
        _put(out, "annotations", dict(self.annotations))
        if self.platform is not None:
            out["platform"] = self.platform.to_dict()
        _put(out, "artifactType", self.artifact_type)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Descriptor:
        """Read OCI JSON (unknown fields, e.g. ``data``, kept)."""
        d = _obj(data, "descriptor")
        size = _int(d, "size", "descriptor")
        if size is None or size < 0:
            raise InvalidDocument("descriptor: size is required and must not be negative")
        platform = d.get("platform")
        return cls(
            media_type=_req_str(d, "mediaType", "descriptor"),
            digest=_req_str(d, "digest", "descriptor"),
            size=size,
            urls=_strs(d, "urls", "descriptor") or (),
            annotations=_str_map(d, "annotations", "descriptor"),
            platform=Platform.from_dict(platform) if platform is not None else None,
            artifact_type=_str(d, "artifactType", "descriptor"),
            extra=_extra(d, cls._KNOWN),
        )

    @classmethod
    def of(cls, media_type: str, data: bytes, **kwargs: Any) -> Descriptor:
        """A descriptor for ``data``."""
        return cls(media_type, digest_bytes(data), len(data), **kwargs)


# --- manifest and index -----------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """An image manifest (OCI, or Docker schema2 when ``media_type`` says so)."""

    config: Descriptor
    layers: tuple[Descriptor, ...]
    media_type: str | None = MEDIA_TYPE_OCI_MANIFEST
    schema_version: int = 2
    annotations: Mapping[str, str] = field(default_factory=dict)
    subject: Descriptor | None = None
    artifact_type: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KNOWN = (
        "schemaVersion",
        "mediaType",
        "config",
        "layers",
        "annotations",
        "subject",
        "artifactType",
    )

    def to_dict(self) -> dict[str, Any]:
        """OCI JSON form (``layers`` always present, as the spec requires)."""
        out: dict[str, Any] = dict(self.extra)
        out["schemaVersion"] = self.schema_version
        _put(out, "mediaType", self.media_type)
        _put(out, "artifactType", self.artifact_type)
        out["config"] = self.config.to_dict()
        out["layers"] = [layer.to_dict() for layer in self.layers]
        if self.subject is not None:
            out["subject"] = self.subject.to_dict()
        _put(out, "annotations", dict(self.annotations))
        return out

    def to_json(self) -> bytes:
        """Canonical JSON bytes."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """Read a manifest; refuses indexes and schema 1."""
        d = _obj(data, "manifest")
        media_type = _str(d, "mediaType", "manifest")
        if media_type is not None and not is_manifest(media_type):
            raise InvalidDocument(f"manifest: unsupported media type {media_type}")
        version = _int(d, "schemaVersion", "manifest")
        if version != 2:
            raise InvalidDocument(f"manifest: unsupported schemaVersion {version}")
        if "config" not in d:
            raise InvalidDocument("manifest: config is required")
        layers = d.get("layers") or []
        if not isinstance(layers, list):
            raise InvalidDocument("manifest: layers must be a list")
        subject = d.get("subject")
        return cls(
            config=Descriptor.from_dict(d["config"]),
            layers=tuple(Descriptor.from_dict(x) for x in layers),
            media_type=media_type,
            schema_version=version,
            annotations=_str_map(d, "annotations", "manifest"),
            subject=Descriptor.from_dict(subject) if subject is not None else None,
            artifact_type=_str(d, "artifactType", "manifest"),
            extra=_extra(d, cls._KNOWN),
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> Manifest:
        """Parse manifest JSON."""
        return cls.from_dict(_load(data, "manifest"))


@dataclass(frozen=True)
class Index:
    """An image index (OCI) or manifest list (Docker)."""

    manifests: tuple[Descriptor, ...]
    media_type: str | None = MEDIA_TYPE_OCI_INDEX
    schema_version: int = 2
    annotations: Mapping[str, str] = field(default_factory=dict)
    subject: Descriptor | None = None
    artifact_type: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KNOWN = ("schemaVersion", "mediaType", "manifests", "annotations", "subject", "artifactType")

    def to_dict(self) -> dict[str, Any]:
        """OCI JSON form."""
        out: dict[str, Any] = dict(self.extra)
        out["schemaVersion"] = self.schema_version
        _put(out, "mediaType", self.media_type)
        _put(out, "artifactType", self.artifact_type)
        out["manifests"] = [m.to_dict() for m in self.manifests]
        if self.subject is not None:
            out["subject"] = self.subject.to_dict()
        _put(out, "annotations", dict(self.annotations))
        return out

    def to_json(self) -> bytes:
        """Canonical JSON bytes."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any) -> Index:
        """Read an index or manifest list."""
        d = _obj(data, "index")
        media_type = _str(d, "mediaType", "index")
        if media_type is not None and not is_index(media_type):
            raise InvalidDocument(f"index: unsupported media type {media_type}")
        version = _int(d, "schemaVersion", "index")
        if version != 2:
            raise InvalidDocument(f"index: unsupported schemaVersion {version}")
        manifests = d.get("manifests") or []
        if not isinstance(manifests, list):
            raise InvalidDocument("index: manifests must be a list")
        subject = d.get("subject")
        return cls(
            manifests=tuple(Descriptor.from_dict(x) for x in manifests),
            media_type=media_type,
            schema_version=version,
            annotations=_str_map(d, "annotations", "index"),
            subject=Descriptor.from_dict(subject) if subject is not None else None,
            artifact_type=_str(d, "artifactType", "index"),
            extra=_extra(d, cls._KNOWN),
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> Index:
        """Parse index JSON."""
        return cls.from_dict(_load(data, "index"))

    def find(self, platform: Platform) -> Descriptor | None:
        """The first image manifest for ``platform`` (normalized comparison), if any."""
        want = platform.normalized()
        for desc in self.manifests:
            if desc.platform is None or not is_manifest(desc.media_type):
                continue
            have = desc.platform.normalized()
            if (have.os, have.architecture, have.variant) == (
                want.os,
                want.architecture,
                want.variant,
            ):
                return desc
        return None


# --- image config -----------------------------------------------------------------------


@dataclass(frozen=True)
class Healthcheck:
    """HEALTHCHECK as stored in the config: durations are nanoseconds (Go time.Duration)."""

    test: tuple[str, ...] = ()
    interval: int | None = None
    timeout: int | None = None
    start_period: int | None = None
    start_interval: int | None = None
    retries: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KNOWN = ("Test", "Interval", "Timeout", "StartPeriod", "StartInterval", "Retries")

    def to_dict(self) -> dict[str, Any]:
        """Docker JSON form."""
        out: dict[str, Any] = dict(self.extra)
        _put(out, "Test", self.test)
        for key, value in (
            ("Interval", self.interval),
            ("Timeout", self.timeout),
            ("StartPeriod", self.start_period),
            ("StartInterval", self.start_interval),
            ("Retries", self.retries),
        ):
            if value:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Healthcheck:
        """Read Docker JSON."""
        d = _obj(data, "Healthcheck")
        w = "Healthcheck"
        return cls(
            test=_strs(d, "Test", w) or (),
            interval=_int(d, "Interval", w),
            timeout=_int(d, "Timeout", w),
            start_period=_int(d, "StartPeriod", w),
            start_interval=_int(d, "StartInterval", w),
            retries=_int(d, "Retries", w),
            extra=_extra(d, cls._KNOWN),
        )


@dataclass(frozen=True)
class RunConfig:
    """The ``config`` object of an image config: how a container of the image runs.

    ``entrypoint``/``cmd``/``shell`` are None when unset, which is not the same as an empty
    list for the builder (``CMD []``), though both serialize to nothing (omitempty).
    """

    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    volumes: tuple[str, ...] = ()
    working_dir: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    stop_signal: str = ""
    healthcheck: Healthcheck | None = None
    on_build: tuple[str, ...] = ()
    shell: tuple[str, ...] | None = None
    args_escaped: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KNOWN = (
        "User",
        "ExposedPorts",
        "Env",
        "Entrypoint",
        "Cmd",
        "Volumes",
        "WorkingDir",
        "Labels",
        "StopSignal",
        "Healthcheck",
        "OnBuild",
        "Shell",
        "ArgsEscaped",
    )

    def to_dict(self) -> dict[str, Any]:
        """Docker/OCI JSON form."""
        out: dict[str, Any] = dict(self.extra)
        _put(out, "User", self.user)
        _put(out, "ExposedPorts", {p: {} for p in self.exposed_ports})
        _put(out, "Env", self.env)
        _put(out, "Entrypoint", self.entrypoint)
        _put(out, "Cmd", self.cmd)
        _put(out, "Volumes", {v: {} for v in self.volumes})
        _put(out, "WorkingDir", self.working_dir)
        _put(out, "Labels", dict(self.labels))
        _put(out, "StopSignal", self.stop_signal)
        if self.healthcheck is not None:
            out["Healthcheck"] = self.healthcheck.to_dict()
        _put(out, "OnBuild", self.on_build)
        _put(out, "Shell", self.shell)
        if self.args_escaped:
            out["ArgsEscaped"] = True
        return out

    @classmethod
    def from_dict(cls, data: Any) -> RunConfig:
        """Read Docker/OCI JSON (unknown fields such as Hostname kept)."""
        if data is None:
            return cls()
        d = _obj(data, "config")
        w = "config"
        hc = d.get("Healthcheck")
        escaped = d.get("ArgsEscaped")
        return cls(
            user=_str(d, "User", w) or "",
            exposed_ports=_key_set(d, "ExposedPorts", w),
            env=_strs(d, "Env", w) or (),
            entrypoint=_strs(d, "Entrypoint", w),
            cmd=_strs(d, "Cmd", w),
            volumes=_key_set(d, "Volumes", w),
            working_dir=_str(d, "WorkingDir", w) or "",
            labels=_str_map(d, "Labels", w),
            stop_signal=_str(d, "StopSignal", w) or "",
            healthcheck=Healthcheck.from_dict(hc) if hc is not None else None,
            on_build=_strs(d, "OnBuild", w) or (),
            shell=_strs(d, "Shell", w),
            args_escaped=bool(escaped),
            extra=_extra(d, cls._KNOWN),
        )

    def env_dict(self) -> dict[str, str]:
        """``Env`` as a mapping (a later entry wins, as in a container)."""
        out: dict[str, str] = {}
        for entry in self.env:
            key, _, value = entry.partition("=")
            out[key] = value
        return out

    def with_env(self, key: str, value: str) -> RunConfig:
        """Set one variable, keeping its position if it exists (as Docker's ENV does)."""
        entries = list(self.env)
        for i, entry in enumerate(entries):
            if entry.partition("=")[0] == key:
                entries[i] = f"{key}={value}"
                break
        else:
            entries.append(f"{key}={value}")
        return replace(self, env=tuple(entries))


@dataclass(frozen=True)
class RootFS:
    """``rootfs``: the layer diff ids, first to last."""

    diff_ids: tuple[str, ...] = ()
    type: str = "layers"
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """OCI JSON form (``diff_ids`` always present)."""
        out: dict[str, Any] = dict(self.extra)
        out["type"] = self.type
        out["diff_ids"] = list(self.diff_ids)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> RootFS:
        """Read OCI JSON; refuses a type other than ``layers``."""
        d = _obj(data, "rootfs")
        kind = _str(d, "type", "rootfs", "layers")
        if kind != "layers":
            raise InvalidDocument(f"rootfs: unsupported type {kind!r}")
        return cls(
            diff_ids=_strs(d, "diff_ids", "rootfs") or (),
            type=kind,
            extra=_extra(d, ("type", "diff_ids")),
        )


@dataclass(frozen=True)
class HistoryEntry:
    """One ``history`` entry; ``empty_layer`` ones have no layer in ``rootfs.diff_ids``."""

    created: str | None = None
    created_by: str = ""
    author: str = ""
    comment: str = ""
    empty_layer: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KNOWN = ("created", "created_by", "author", "comment", "empty_layer")

    def to_dict(self) -> dict[str, Any]:
        """OCI JSON form."""
        out: dict[str, Any] = dict(self.extra)
        _put(out, "created", self.created)
        _put(out, "created_by", self.created_by)
        _put(out, "author", self.author)
        _put(out, "comment", self.comment)
        if self.empty_layer:
            out["empty_layer"] = True
        return out

    @classmethod
    def from_dict(cls, data: Any) -> HistoryEntry:
        """Read OCI JSON."""
        d = _obj(data, "history")
        return cls(
            created=_str(d, "created", "history"),
            created_by=_str(d, "created_by", "history") or "",
            author=_str(d, "author", "history") or "",
            comment=_str(d, "comment", "history") or "",
            empty_layer=bool(d.get("empty_layer")),
            extra=_extra(d, cls._KNOWN),
        )


@dataclass(frozen=True)
class ImageConfig:
    """The full image config (``application/vnd.oci.image.config.v1+json``)."""

    architecture: str
    os: str
    variant: str | None = None
    created: str | None = None
    author: str = ""
    os_version: str | None = None
    os_features: tuple[str, ...] = ()
    config: RunConfig = field(default_factory=RunConfig)
    rootfs: RootFS = field(default_factory=RootFS)
    history: tuple[HistoryEntry, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KNOWN = (
        "architecture",
        "os",
        "variant",
        "created",
        "author",
        "os.version",
        "os.features",
        "config",
        "rootfs",
        "history",
    )

    @classmethod
    def empty(cls, platform: Platform | None = None) -> ImageConfig:
        """The config of ``FROM scratch`` for ``platform`` (default: the host's)."""
        plat = platform or Platform.host()
        return cls(architecture=plat.architecture, os=plat.os, variant=plat.variant)

    @property
    def platform(self) -> Platform:
        """The image's platform."""
        return Platform(self.os, self.architecture, self.variant, self.os_version, self.os_features)

    @property
    def diff_ids(self) -> tuple[str, ...]:
        """``rootfs.diff_ids``."""
        return self.rootfs.diff_ids

    def chain_ids(self) -> list[str]:
        """ChainIDs of the layer stack, bottom first."""
        return chain_ids(self.rootfs.diff_ids)

    def with_config(self, **changes: Any) -> ImageConfig:
        """A copy with fields of ``config`` changed, e.g. ``with_config(user="app")``."""
        return replace(self, config=replace(self.config, **changes))

    def add_layer(self, diff_id: str, history: HistoryEntry) -> ImageConfig:
        """A copy with one more layer and its (non-empty) history entry."""
        return replace(
            self,
            rootfs=replace(self.rootfs, diff_ids=(*self.rootfs.diff_ids, diff_id)),
            history=(*self.history, replace(history, empty_layer=False)),
        )

    def add_history(self, entry: HistoryEntry) -> ImageConfig:
        """A copy with one more history entry (mark it ``empty_layer`` for metadata steps)."""
        return replace(self, history=(*self.history, entry))

    def layer_history(self) -> list[tuple[HistoryEntry, str | None]]:
        """Each history entry with the diff id it created (None for empty-layer entries).

        If history and diff_ids disagree (images without history), the missing layers are
        paired with a blank entry, as Docker does.
        """
        diff_ids = list(self.rootfs.diff_ids)
        out: list[tuple[HistoryEntry, str | None]] = []
        for entry in self.history:
            if entry.empty_layer:
                out.append((entry, None))
            else:
                out.append((entry, diff_ids.pop(0) if diff_ids else None))
        out.extend((HistoryEntry(), d) for d in diff_ids)
        return out

    def to_dict(self) -> dict[str, Any]:
        """OCI JSON form."""
        out: dict[str, Any] = dict(self.extra)
        _put(out, "created", self.created)
        _put(out, "author", self.author)
        out["architecture"] = self.architecture
        out["os"] = self.os
        _put(out, "os.version", self.os_version)
        _put(out, "os.features", self.os_features)
        _put(out, "variant", self.variant)
        run = self.config.to_dict()
        # BuildKit always writes "config", even when nothing in it is set.
        out["config"] = run
        out["rootfs"] = self.rootfs.to_dict()
        _put(out, "history", [h.to_dict() for h in self.history])
        return out

    def to_json(self) -> bytes:
        """Canonical JSON bytes (their sha256 is the image id)."""
        return canonical_json(self.to_dict())

    @property
    def digest(self) -> str:
        """The image id this config gets when written with :meth:`to_json`."""
        return digest_bytes(self.to_json())

    @classmethod
    def from_dict(cls, data: Any) -> ImageConfig:
        """Read OCI/Docker JSON (unknown fields, e.g. ``container_config``, kept)."""
        d = _obj(data, "image config")
        w = "image config"
        history = d.get("history") or []
        if not isinstance(history, list):
            raise InvalidDocument("image config: history must be a list")
        rootfs = d.get("rootfs")
        return cls(
            architecture=_str(d, "architecture", w) or "",
            os=_str(d, "os", w) or "",
            variant=_str(d, "variant", w) or None,
            created=_str(d, "created", w),
            author=_str(d, "author", w) or "",
            os_version=_str(d, "os.version", w) or None,
            os_features=_strs(d, "os.features", w) or (),
            config=RunConfig.from_dict(d.get("config")),
            rootfs=RootFS.from_dict(rootfs) if rootfs is not None else RootFS(),
            history=tuple(HistoryEntry.from_dict(h) for h in history),
            extra=_extra(d, cls._KNOWN),
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> ImageConfig:
        """Parse image config JSON."""
        return cls.from_dict(_load(data, "image config"))
