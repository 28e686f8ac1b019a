"""A build cache shared between machines: ``--cache-from`` / ``--cache-to``.

Backends (parsed by :func:`parse_cache_spec`, as buildx spells them):

* ``type=registry,ref=REG/REPO:TAG[,mode=min|max][,compression=gzip|zstd]
  [,oci-mediatypes=true|false]``: a *cache manifest* in a registry repository;
* ``type=local,src=DIR`` / ``type=local,dest=DIR[,tag=TAG]``: the same manifest in an OCI
  layout directory (``index.json``, ``blobs/sha256/``);
* ``type=inline`` (``--cache-to`` only): the records ride in the pushed image's config, under
  :data:`INLINE_KEY`, as ``BUILDKIT_INLINE_CACHE`` does; ``--cache-from`` of that image
  (``type=registry,ref=IMAGE``) reads them back.

The cache manifest (docs/cache.md, "Sharing the cache"): an OCI image manifest whose config
is a :data:`CONFIG_MEDIA_TYPE` document (:class:`CacheDocument`: records by cache key, layers
by diff id with the blob that carries each) and whose ``layers`` are those blobs, so the
registry keeps them alive and tools can copy the cache like any image. Keys never hold
anything of the machine that made them (docs/cache.md), so a record is valid on any machine.

Import is lazy: only the manifest and its config are read; a layer is recorded in the store as
a remote form and downloaded only when a missed step or an output needs its bytes.

Export is incremental: blobs the repository has are skipped (``HEAD``), blobs it can mount
from another repository of the registry are mounted, compressed blobs are kept in the store
(a second export compresses nothing). The manifest is merged with what the ref holds (read,
merge, write, then read back until the ref holds all our records), so builds of different
branches exporting to one ref at once keep each other's records.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from dockyard.errors import DockyardError, RegistryError, UsageError
from dockyard.image.oci import (
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_OCI_MANIFEST,
    InvalidDocument,
    canonical_json,
    digest_bytes,
    is_index,
    layer_media_type,
)
from dockyard.store.db import CacheRecord, RemoteBlob, Store

__all__ = [
    "CONFIG_MEDIA_TYPE",
    "FORMAT",
    "INLINE_KEY",
    "CacheDocument",
    "CacheSpec",
    "ExportReport",
    "ImportedSource",
    "export_cache",
    "inline_document",
    "load_cache",
    "parse_cache_spec",
]

CONFIG_MEDIA_TYPE = "application/vnd.dockyard.cache.config.v1+json"
FORMAT = "dockyard.cache.export.v1"
INLINE_KEY = "dockyard.cache.v1"  # a top-level key of an image config: the inline cache
BUILDKIT_CACHE_CONFIG = "application/vnd.buildkit.cacheconfig.v0"
REF_NAME = "org.opencontainers.image.ref.name"
DIFF_ID_ANNOTATION = "dockyard.cache.diffid"
_MAX_DOCUMENT = 64 << 20  # a cache config with many COPY selections can be large
#: What an export keeps the cache config under: records of other builds are dropped, oldest
#: first, to stay below it (this build's are always kept). Every build merges into a shared
#: ref; without a bound the config would grow until no import could read it (_MAX_DOCUMENT).
CONFIG_BUDGET = 16 << 20
#: ... and the cache manifest under this many layers (~250 bytes each: registries refuse
#: manifests over a few MiB, distribution over 4 MiB).
LAYER_BUDGET = 8000

CacheType = Literal["registry", "local", "inline"]
Mode = Literal["min", "max"]
Progress = Callable[[str], None]

_KEYS = {"type", "ref", "src", "dest", "mode", "compression", "oci-mediatypes", "tag",
         "registry.insecure", "ignore-error", "image-manifest"}


@dataclass(frozen=True, slots=True)
class CacheSpec:
    """One ``--cache-from`` or ``--cache-to`` value."""

    type: CacheType
    ref: str | None = None  # type=registry
    path: str | None = None  # type=local: src= (import) or dest= (export)
    tag: str = "latest"  # type=local: the name in index.json
    mode: Mode = "min"
    compression: Literal["gzip", "zstd"] = "gzip"
    oci_mediatypes: bool = True
    insecure: bool = False
    ignore_error: bool = False

    def describe(self) -> str:
        """How the spec is named in messages."""
        if self.type == "registry":
            return str(self.ref)
        if self.type == "local":
            return f"{self.path} (local)"
        return "inline"


def _bool(key: str, value: str, flag: str) -> bool:
    low = value.strip().lower()
    if low in ("true", "1", "yes", "on"):
        return True
    if low in ("false", "0", "no", "off"):
        return False
    raise UsageError(f"{flag}: {key}={value!r} is not a boolean")


def parse_cache_spec(text: str, *, export: bool) -> CacheSpec:
    """Parse a ``--cache-to`` (``export``) or ``--cache-from`` value. A value without ``=`` is
    a registry ref (``--cache-from REG/REPO:TAG``), as buildx takes it."""
    flag = "--cache-to" if export else "--cache-from"
    text = text.strip()
    if not text:
        raise UsageError(f"{flag}: empty value")
    if "=" not in text:
        return CacheSpec(type="registry", ref=text)
    try:
        fields = next(csv.reader([text]))
    except (csv.Error, StopIteration) as err:
        raise UsageError(f"{flag}: cannot parse {text!r}: {err}") from None
    values: dict[str, str] = {}
    for item in fields:
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep:
            raise UsageError(f"{flag}: {item!r} is not key=value")
        if key not in _KEYS:
            raise UsageError(f"{flag}: unknown key {key!r} (known: {', '.join(sorted(_KEYS))})")
        values[key] = value.strip()
    kind = values.get("type", "registry" if "ref" in values else "")
    if kind not in ("registry", "local", "inline"):
        raise UsageError(f"{flag}: type must be registry, local or inline, not {kind!r}"
                         + (" (gha, s3 and azblob are BuildKit services dockyard does not "
                            "reach; use a registry)" if kind in ("gha", "s3", "azblob") else ""))
    mode = values.get("mode", "min")
    if mode not in ("min", "max"):
        raise UsageError(f"{flag}: mode must be min or max, not {mode!r}")
    compression = values.get("compression", "gzip")
    if compression not in ("gzip", "zstd"):
        raise UsageError(f"{flag}: compression must be gzip or zstd, not {compression!r}")
    oci = _bool("oci-mediatypes", values["oci-mediatypes"], flag) \
        if "oci-mediatypes" in values else True
    if compression == "zstd" and not oci:
        raise UsageError(f"{flag}: compression=zstd needs oci-mediatypes=true (Docker's media "
                         "types have no zstd layer)")
    path: str | None = None
    ref: str | None = None
    if kind == "registry":
        ref = values.get("ref")
        if not ref:
            raise UsageError(f"{flag}: type=registry needs ref=REGISTRY/REPOSITORY[:TAG]")
        from dockyard.image.reference import parse_reference

        parse_reference(ref)  # a bad name is a usage error now, not a warning later
    elif kind == "local":
        path = values.get("dest" if export else "src")
        if not path:
            raise UsageError(f"{flag}: type=local needs {'dest' if export else 'src'}=DIR")
    elif not export:
        raise UsageError("--cache-from: type=inline is for --cache-to; import an inline cache "
                         "with --cache-from type=registry,ref=IMAGE")
    if kind == "inline" and mode == "max":
        raise UsageError("--cache-to: type=inline supports mode=min only (the image carries "
                         "only its own layers)")
    return CacheSpec(
        type=cast(CacheType, kind), ref=ref, path=path, tag=values.get("tag") or "latest",
        mode=cast(Mode, mode), compression=cast(Literal["gzip", "zstd"], compression),
        oci_mediatypes=oci,
        insecure=_bool("registry.insecure", values["registry.insecure"], flag)
        if "registry.insecure" in values else False,
        ignore_error=_bool("ignore-error", values["ignore-error"], flag)
        if "ignore-error" in values else False,
    )


# ------------------------------------------------------------------------------ the document


@dataclass
class CacheDocument:
    """The cache config: ``records`` (cache key -> the record's JSON form) and ``layers``
    (diff id -> ``{"digest", "mediaType", "size", "diffSize"}``: the blob that carries it).

    JSON form (canonical: keys sorted, no spaces)::

        {"format": "dockyard.cache.export.v1", "keys": "dockyard.cache.v3",
         "layers": {"sha256:<diff id>": {"digest": "sha256:...", "mediaType": "...",
                                         "size": 1234, "diffSize": 10240}},
         "records": {"sha256:<key>": {"layer": "sha256:<diff id>" | null,
                                      "chain": "sha256:<chain id>" | null,
                                      "created": 1700000000.5, "description": "RUN make",
                                      "result": {...}}}}
    """

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> bytes:
        from dockyard.solver.keys import KEY_VERSION

        return canonical_json({"format": FORMAT, "keys": KEY_VERSION,
                               "layers": self.layers, "records": self.records})

    @classmethod
    def from_obj(cls, data: Any, what: str) -> CacheDocument:
        """Read a parsed document; records of another key format are dropped (they could
        never match), malformed entries raise InvalidDocument."""
        from dockyard.solver.keys import KEY_VERSION

        if not isinstance(data, dict):
            raise InvalidDocument(f"{what}: not a JSON object")
        if data.get("format") != FORMAT:
            raise InvalidDocument(f"{what}: unknown format {data.get('format')!r} "
                                  f"(this dockyard reads {FORMAT})")
        records = data.get("records") or {}
        layers = data.get("layers") or {}
        if not isinstance(records, dict) or not isinstance(layers, dict):
            raise InvalidDocument(f"{what}: records and layers must be objects")
        if data.get("keys") != KEY_VERSION:
            records = {}
        doc = cls()
        for diff_id, layer in layers.items():
            if not (isinstance(layer, dict) and _is_digest(diff_id)
                    and _is_digest(layer.get("digest"))
                    and isinstance(layer.get("size"), int)
                    and isinstance(layer.get("mediaType"), str)):
                raise InvalidDocument(f"{what}: bad layer entry {diff_id!r}")
            doc.layers[diff_id] = {
                "digest": layer["digest"], "mediaType": layer["mediaType"],
                "size": layer["size"],
                "diffSize": layer["diffSize"] if isinstance(layer.get("diffSize"), int)
                else None,
            }
        for key, rec in records.items():
            if not (isinstance(rec, dict) and _is_digest(key)):
                raise InvalidDocument(f"{what}: bad record {key!r}")
            if not _usable_result(rec.get("result")):
                raise InvalidDocument(f"{what}: record {key} has a malformed result")
            layer_id = rec.get("layer")
            if layer_id is not None and layer_id not in doc.layers:
                raise InvalidDocument(f"{what}: record {key} names layer {layer_id}, which "
                                      "the cache does not carry")
            doc.records[key] = rec
        return doc

    @classmethod
    def from_json(cls, data: bytes, what: str) -> CacheDocument:
        try:
            parsed = json.loads(data)
        except ValueError as err:
            raise InvalidDocument(f"{what}: not JSON: {err}") from None
        return cls.from_obj(parsed, what)

    def add(self, record: CacheRecord, layer: Mapping[str, Any] | None) -> None:
        """Add ``record`` (and the blob of its layer) unless a record of that key is here."""
        if record.key in self.records:
            return
        if record.diff_id is not None:
            if layer is None:
                return
            self.layers.setdefault(record.diff_id, dict(layer))
        self.records[record.key] = {
            "layer": record.diff_id, "chain": record.chain_id, "created": record.created,
            "description": record.description, "result": dict(record.result),
        }

    def merge(self, other: CacheDocument) -> CacheDocument:
        """This document plus every record of ``other`` it lacks (ours win on a shared key)."""
        out = CacheDocument(dict(self.records), dict(self.layers))
        for key, rec in other.records.items():
            if key in out.records:
                continue
            layer_id = rec.get("layer")
            if layer_id is not None:
                out.layers.setdefault(layer_id, other.layers[layer_id])
            out.records[key] = rec
        return out

    def trimmed(self, keep: Iterable[str], budget: int,
                max_layers: int | None = None) -> tuple[CacheDocument, int]:
        """This document, if its JSON is over ``budget`` bytes (or it has over
        ``max_layers`` layers), down to about three quarters of that: records whose keys are
        not in ``keep`` are dropped, the oldest (``created``) first, with the layers only
        they named (the slack means exports to one ref at once do not take turns dropping
        each other's records). Returns it and how many records were dropped."""
        size = len(self.to_json())
        over_layers = max_layers is not None and len(self.layers) > max_layers
        if size <= budget and not over_layers:
            return self, 0
        target = budget * 3 // 4
        layer_target = len(self.layers) if max_layers is None else max_layers * 3 // 4
        wanted = set(keep)
        users: dict[str, int] = {}
        for rec in self.records.values():
            if rec.get("layer") is not None:
                users[rec["layer"]] = users.get(rec["layer"], 0) + 1
        layers = len(self.layers)

        def created(key: str) -> float:
            value = self.records[key].get("created")
            return float(value) if isinstance(value, (int, float)) else 0.0

        dropped: set[str] = set()
        for key in sorted((k for k in self.records if k not in wanted),
                          key=lambda k: (created(k), k)):
            if size <= target and layers <= layer_target:
                break
            size -= len(canonical_json({key: self.records[key]})) - 2  # no saving overstated
            dropped.add(key)
            layer = self.records[key].get("layer")
            if layer is not None:
                users[layer] -= 1
                if users[layer] == 0:
                    layers -= 1
                    size -= len(canonical_json({layer: self.layers.get(layer)})) - 2
        records = {k: r for k, r in self.records.items() if k not in dropped}
        named = {r.get("layer") for r in records.values()}
        return CacheDocument(records, {d: layer for d, layer in self.layers.items()
                                       if d in named}), len(dropped)

    def covers(self, other: CacheDocument) -> bool:
        """Whether every record of ``other`` is here."""
        return all(key in self.records for key in other.records)

    def cache_records(self) -> dict[str, CacheRecord]:
        out: dict[str, CacheRecord] = {}
        for key, rec in self.records.items():
            result = rec.get("result")
            created = rec.get("created")
            out[key] = CacheRecord(
                key=key, diff_id=rec.get("layer"), chain_id=rec.get("chain"),
                result=result if isinstance(result, dict) else {},
                description=str(rec.get("description") or ""),
                created=float(created) if isinstance(created, (int, float)) else 0.0,
            )
        return out


_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def _usable_result(result: Any) -> bool:
    """Whether a record's ``result`` has the shape the solver reads: an object and, for a
    ``selection`` record (the files of a ``COPY --from``), its digest, its packed file list
    and its ``--parents`` directories (each a :class:`~dockyard.context.hashing.FileMeta`)."""
    if result is None:
        return True
    if not isinstance(result, dict):
        return False
    if result.get("instruction") != "selection":
        return True
    parents = result.get("parents", {})
    if not (isinstance(result.get("selection"), str) and isinstance(result.get("files"), str)
            and isinstance(parents, dict)):
        return False
    from dockyard.context.hashing import FileMeta

    try:
        for value in parents.values():
            if not isinstance(value, list):
                return False
            FileMeta.from_json(value)
    except (AssertionError, IndexError, TypeError, ValueError):
        return False
    return True


def _is_digest(value: Any) -> bool:
    """A sha256 digest, exactly (it names files in a layout directory: nothing else may
    pass, such as a path)."""
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


# ------------------------------------------------------------------------------ import


@dataclass
class ImportedSource:
    """An imported cache, as the solver's :class:`~dockyard.solver.cache.ImportedCache`
    reads it: records by key, and by diff id the remote blob and the tar's size."""

    name: str
    records: dict[str, CacheRecord]
    layers: dict[str, tuple[RemoteBlob, int | None]]
    root: Path | None = None  # the store's, for mount hints

    def noted(self, remote: RemoteBlob) -> None:
        from dockyard.registry.remote import parse_source
        from dockyard.registry.sources import BlobSources

        if self.root is None or not remote.source.startswith("registry://"):
            return
        _, domain, repo = parse_source(remote.source)
        BlobSources(self.root).record(domain, repo, [remote.digest])


def _document_layers(doc: CacheDocument, source: str) -> dict[str, tuple[RemoteBlob, int | None]]:
    return {diff_id: (RemoteBlob(layer["digest"], layer["mediaType"], layer["size"], source),
                      layer.get("diffSize"))
            for diff_id, layer in doc.layers.items()}


def load_cache(store: Store, spec: CacheSpec, *, platform: str) -> ImportedSource:
    """Read the cache ``spec`` names (its manifest and config only). Raises DockyardError
    (RegistryError, UsageError, InvalidDocument, OSError wrapped) when it cannot be used;
    the caller turns that into a warning."""
    if spec.type == "local":
        assert spec.path is not None
        return _load_local(store, Path(spec.path), spec.tag)
    assert spec.ref is not None
    return _load_registry(store, spec, platform)


def _options(domain: str, insecure: bool) -> Any:
    from dockyard.registry.client import RegistryOptions

    return RegistryOptions.from_env(insecure_registries=(domain,) if insecure else ())


def _load_registry(store: Store, spec: CacheSpec, platform: str) -> ImportedSource:
    from dockyard.image.oci import Index, Manifest, Platform
    from dockyard.image.reference import parse_reference
    from dockyard.registry.client import RegistryClient
    from dockyard.registry.pull import _Puller
    from dockyard.registry.remote import registry_source

    assert spec.ref is not None
    ref = parse_reference(spec.ref)
    name = f"{ref.domain}/{ref.path}"
    with RegistryClient(ref.domain, _options(ref.domain, spec.insecure)) as client:
        puller = _Puller(store, client, ref, lambda _m: None)
        target = ref.digest or ref.tag or "latest"
        body, media_type, _digest = puller.document(target, None)
        if is_index(media_type):
            index = Index.from_json(body)
            if any(d.media_type == BUILDKIT_CACHE_CONFIG for d in index.manifests):
                raise RegistryError(f"{name}:{target} is a BuildKit cache "
                                    "(application/vnd.buildkit.cacheconfig.v0); dockyard reads "
                                    "its own cache manifests (docs/cache.md)")
            desc = index.find(Platform.parse(platform))
            if desc is None:
                raise RegistryError(f"{name}:{target}: an index with no image for {platform}")
            body, media_type, _digest = puller.document(desc.digest, desc)
        try:
            manifest = Manifest.from_json(body)
        except InvalidDocument as err:
            raise RegistryError(f"{name}:{target}: {err}") from None
        config_type = manifest.config.media_type
        if config_type == BUILDKIT_CACHE_CONFIG:
            raise RegistryError(f"{name}:{target} is a BuildKit cache; dockyard reads its own "
                                "cache manifests (docs/cache.md)")
        if manifest.config.size > _MAX_DOCUMENT:
            raise RegistryError(f"{name}:{target}: the cache config is too large "
                                f"({manifest.config.size} bytes)")
        config = puller.small_blob(manifest.config, "cache config", _MAX_DOCUMENT)
        source = registry_source(ref.domain, ref.path)
        if config_type == CONFIG_MEDIA_TYPE:
            doc = CacheDocument.from_json(config, f"{name}:{target}")
            return ImportedSource(spec.ref, doc.cache_records(), _document_layers(doc, source),
                                  store.root)
        return _inline(store, spec.ref, config, manifest.layers, source)


def _inline(store: Store, name: str, config: bytes, layers: Any, source: str) -> ImportedSource:
    """The inline cache of an image: records in its config, layers its own."""
    try:
        data = json.loads(config)
    except ValueError:
        raise RegistryError(f"{name}: neither a cache manifest nor an image") from None
    inline = data.get(INLINE_KEY) if isinstance(data, dict) else None
    if inline is None:
        raise RegistryError(f"{name}: an image without an inline cache (build it with "
                            "--cache-to type=inline) and not a cache manifest")
    diff_ids = (data.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(layers):
        raise RegistryError(f"{name}: its config and manifest disagree on the layers")
    sizes = inline.get("layers") if isinstance(inline.get("layers"), dict) else {}
    doc_layers = {}
    for diff_id, desc in zip(diff_ids, layers, strict=True):
        diff_size = (sizes.get(diff_id) or {}).get("diffSize") if isinstance(
            sizes.get(diff_id), dict) else None
        doc_layers[diff_id] = {"digest": desc.digest, "mediaType": desc.media_type,
                               "size": desc.size, "diffSize": diff_size}
    doc = CacheDocument.from_obj({**inline, "layers": doc_layers}, f"{name} (inline cache)")
    return ImportedSource(name, doc.cache_records(), _document_layers(doc, source), store.root)


def _read_index(directory: Path) -> dict[str, Any]:
    path = directory / "index.json"
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {"schemaVersion": 2, "manifests": []}
    except (OSError, ValueError) as err:
        raise RegistryError(f"{path}: cannot read the OCI layout index: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("manifests"), list):
        raise RegistryError(f"{path}: not an OCI layout index")
    return data


def _layout_blob(directory: Path, digest: str, size: int | None = None) -> bytes:
    if not _is_digest(digest):
        raise RegistryError(f"{directory}: bad digest {digest!r}")
    path = directory / "blobs" / "sha256" / digest.removeprefix("sha256:")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise RegistryError(f"{path}: {err.strerror}") from None
    if digest_bytes(data) != digest or (size is not None and len(data) != size):
        raise RegistryError(f"{path}: does not match its digest (corrupt or truncated)")
    return data


def _load_local(store: Store, directory: Path, tag: str) -> ImportedSource:
    from dockyard.image.oci import Manifest
    from dockyard.registry.remote import layout_source

    if not (directory / "index.json").is_file():
        raise RegistryError(f"{directory}: no cache here (no index.json)")
    index = _read_index(directory)
    found = [m for m in index["manifests"] if isinstance(m, dict)
             and (m.get("annotations") or {}).get(REF_NAME) == tag]
    if not found:
        raise RegistryError(f"{directory}: no cache tagged {tag!r} in index.json")
    desc = found[-1]
    manifest = Manifest.from_json(_layout_blob(directory, str(desc.get("digest")),
                                               desc.get("size")))
    if manifest.config.media_type != CONFIG_MEDIA_TYPE:
        raise RegistryError(f"{directory}: {tag} is not a dockyard cache manifest")
    config = _layout_blob(directory, manifest.config.digest, manifest.config.size)
    doc = CacheDocument.from_json(config, str(directory))
    return ImportedSource(str(directory), doc.cache_records(),
                          _document_layers(doc, layout_source(directory)), store.root)


# ------------------------------------------------------------------------------ export


@dataclass(frozen=True)
class ExportReport:
    """What one cache export did."""

    target: str
    records: int
    layers: int
    uploaded: int = 0
    mounted: int = 0
    present: int = 0
    compressed: int = 0  # layers compressed by this export (0 on a second export)
    manifest_digest: str = ""
    merged: int = 0  # records kept from what the target held before


def select_records(
    used: Mapping[str, tuple[int, CacheRecord]], stages: Iterable[int] | None,
) -> list[CacheRecord]:
    """The records to export: those of ``stages`` (None: every stage, ``mode=max``)."""
    wanted = None if stages is None else set(stages)
    return [rec for _key, (stage, rec) in sorted(used.items())
            if wanted is None or stage in wanted]


def inline_document(store: Store, records: Iterable[CacheRecord],
                    diff_ids: Iterable[str]) -> dict[str, Any]:
    """The :data:`INLINE_KEY` value for an image config: its records whose layers are the
    image's own (their blobs are the image's layers, named by the manifest)."""
    from dockyard.solver.keys import KEY_VERSION

    image_layers = set(diff_ids)
    doc = CacheDocument()
    for record in records:
        if record.diff_id is not None and record.diff_id not in image_layers:
            continue
        size = None
        if record.diff_id is not None:
            layer = store.get_layer(record.diff_id)
            size = layer.size if layer is not None else None
        doc.add(record, {"diffSize": size} if record.diff_id else None)
    return {"format": FORMAT, "keys": KEY_VERSION, "layers": doc.layers,
            "records": doc.records}


def _layer_entries(
    store: Store, records: list[CacheRecord], compression: Literal["gzip", "zstd"],
    docker: bool, tee: Callable[[str], Any] | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, Callable[[], None] | None], int]:
    """Per diff id the blob (compressed once, kept in the store) and how to get its bytes if
    only a remote form is known; and how many layers had to be compressed now (together,
    several at once, as a push compresses: :func:`~dockyard.exporter.layout.
    compressed_layers`, whose ``tee`` gets each of those as it is compressed)."""
    from dockyard.exporter.layout import compressed_layers
    from dockyard.registry.push import _stored_blob

    blobs: dict[str, tuple[str, int]] = {}
    fetchers: dict[str, Callable[[], None] | None] = {}
    missing: list[str] = []
    for record in records:
        diff_id = record.diff_id
        if not diff_id or diff_id in blobs or diff_id in missing:
            continue
        have = _stored_blob(store, diff_id, compression)
        if have is None:
            missing.append(diff_id)
            continue
        digest, size, fetch = have
        blobs[diff_id] = (digest, size)
        fetchers[diff_id] = fetch
    if missing:
        for diff_id, made in zip(missing, compressed_layers(store, missing, compression, tee),
                                 strict=True):
            blobs[diff_id] = (made.digest, made.size)
            fetchers[diff_id] = None
    entries: dict[str, dict[str, Any]] = {}
    for diff_id, (digest, size) in blobs.items():
        layer = store.get_layer(diff_id)
        entries[diff_id] = {
            "digest": digest, "size": size,
            "mediaType": layer_media_type(compression, docker=docker),
            "diffSize": layer.size if layer is not None else None,
        }
    return entries, fetchers, len(missing)


def export_cache(
    store: Store, spec: CacheSpec, records: list[CacheRecord], *,
    progress: Progress | None = None,
) -> ExportReport:
    """Write ``records`` (and their layers) to the cache ``spec`` names, merged with what it
    holds. Raises DockyardError when the export fails."""
    say = progress or (lambda _m: None)
    docker = not spec.oci_mediatypes
    compression = spec.compression
    say(f"preparing {len(records)} records")
    if spec.type == "local":
        assert spec.path is not None
        entries, fetchers, compressed = _layer_entries(store, records, compression, docker)
        doc = _document(records, entries)
        say(f"{len(doc.layers)} layers ({compressed} compressed now)")
        return _export_local(store, Path(spec.path), spec.tag, doc, fetchers, compressed, say)
    assert spec.ref is not None
    return _export_registry(store, spec, records, say)


def _document(records: list[CacheRecord], entries: Mapping[str, Any]) -> CacheDocument:
    doc = CacheDocument()
    for record in records:
        doc.add(record, entries.get(record.diff_id) if record.diff_id else None)
    return doc


def _manifest(doc: CacheDocument, config: bytes, docker: bool) -> bytes:
    layers = [{"mediaType": layer["mediaType"], "digest": layer["digest"], "size": layer["size"],
               "annotations": {DIFF_ID_ANNOTATION: diff_id}}
              for diff_id, layer in sorted(doc.layers.items())]
    return canonical_json({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_DOCKER_MANIFEST if docker else MEDIA_TYPE_OCI_MANIFEST,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": digest_bytes(config),
                   "size": len(config)},
        "layers": layers,
    })


def _export_registry(
    store: Store, spec: CacheSpec, records: list[CacheRecord], say: Progress,
) -> ExportReport:
    from dockyard.image.oci import Descriptor
    from dockyard.image.reference import parse_reference
    from dockyard.registry.client import RegistryClient
    from dockyard.registry.push import _Pusher
    from dockyard.registry.sources import BlobSources

    assert spec.ref is not None
    ref = parse_reference(spec.ref)
    options = _options(ref.domain, spec.insecure)
    docker = not spec.oci_mediatypes
    with RegistryClient(ref.domain, options) as client:
        pusher = _Pusher(store, client, ref, lambda _m: None)
        try:  # layers compressed now are uploaded while they are compressed
            entries, fetchers, compressed = _layer_entries(
                store, records, spec.compression, docker, pusher.stream)
        finally:
            streamed = pusher.streamed()
        doc = _document(records, entries)
        say(f"{len(doc.layers)} layers ({compressed} compressed now)")
        # the rest a few at once (HEADs and mounts are round trips), biggest first
        work = sorted(doc.layers.items(), key=lambda item: -int(item[1]["size"]))
        pusher.blobs([(Descriptor(layer["mediaType"], layer["digest"], layer["size"]),
                       fetchers.get(diff_id)) for diff_id, layer in work], streamed)
    counts = pusher.counts
    say(f"layers: {counts['uploaded']} uploaded, {counts['mounted']} mounted, "
        f"{counts['present']} already there")
    target = ref.tag or "latest"
    name = f"{ref.domain}/{ref.path}:{target}"
    with RegistryClient(ref.domain, options) as client:
        pusher = _Pusher(store, client, ref, lambda _m: None)
        merged_from = 0
        digest = ""
        # A registry has no compare-and-swap, so concurrent exports to one ref are merged
        # optimistically: read, merge, upload the config, check that the ref is still what
        # was read (else merge again), write; then wait (4 times as long as our own check
        # and write took, at least 0.5 s), read it back, and merge again while it lacks any
        # of our records. A record is lost only if another export's check-to-write gap (one
        # round trip) outlasts that wait.
        for attempt in range(_MERGES):
            current, digest = _current_registry(store, client, ref, target)
            if attempt == 0 and current is not None:
                merged_from = len(set(current.records) - set(doc.records))
            if current is not None and current.covers(doc):
                # nothing of ours is missing (a re-export, or another builder's write
                # already holds our records): no write
                if attempt == 0:
                    say("the ref holds every record already")
                break
            merged = doc.merge(current) if current is not None else doc
            merged, dropped = merged.trimmed(doc.records, CONFIG_BUDGET, LAYER_BUDGET)
            if dropped and attempt == 0:
                say(_dropped_note(dropped))
            config = merged.to_json()
            config_desc = Descriptor(CONFIG_MEDIA_TYPE, digest_bytes(config), len(config))
            if not store.blobs.has(config_desc.digest):
                store.blobs.put_bytes(config)
            pusher.blob(config_desc)
            manifest = _manifest(merged, config, docker)
            started = time.monotonic()
            if _ref_digest(store, client, ref, target) != digest:
                say(f"{name} changed while merging (another export): merging again")
                continue
            client.put_manifest(ref.path, target, manifest,
                                MEDIA_TYPE_DOCKER_MANIFEST if docker else MEDIA_TYPE_OCI_MANIFEST)
            digest = digest_bytes(manifest)
            time.sleep(min(5.0, 0.5 + 4 * (time.monotonic() - started)))
            current, _ = _current_registry(store, client, ref, target)
            if current is not None and current.covers(doc):
                break
            say(f"{name} changed under us (another export): merging again")
        else:
            raise RegistryError(f"{name}: the cache manifest kept changing under this export; "
                                f"gave up after {_MERGES} merges")
        BlobSources(store.root).record(ref.domain, ref.path,
                                       [d["digest"] for d in doc.layers.values()])
    say(f"writing cache manifest {digest}")
    return ExportReport(name, len(doc.records), len(doc.layers), counts["uploaded"],
                        counts["mounted"], counts["present"], compressed, digest, merged_from)


_MERGES = 12  # read-merge-write rounds of one registry export before it gives up


def _dropped_note(count: int) -> str:
    return (f"dropped the {count} oldest records of other builds (a cache is kept under "
            f"{CONFIG_BUDGET >> 20} MiB of records and {LAYER_BUDGET} layers)")


def _ref_digest(store: Store, client: Any, ref: Any, target: str) -> str:
    """The digest of the manifest ``target`` names now ("" if there is none)."""
    from dockyard.registry.pull import _Puller

    try:
        return _Puller(store, client, ref, lambda _m: None).document(target, None)[2]
    except RegistryError as err:
        if "MANIFEST_UNKNOWN" in str(err) or "HTTP 404" in str(err):
            return ""
        raise


def _current_registry(store: Store, client: Any, ref: Any,
                      target: str) -> tuple[CacheDocument | None, str]:
    """What the ref holds now, if it is a dockyard cache (None if nothing or another kind),
    and its manifest's digest."""
    from dockyard.image.oci import Manifest
    from dockyard.registry.pull import _Puller

    puller = _Puller(store, client, ref, lambda _m: None)
    try:
        body, _media_type, digest = puller.document(target, None)
    except RegistryError as err:
        if "MANIFEST_UNKNOWN" in str(err) or "HTTP 404" in str(err):
            return None, ""
        raise
    try:
        manifest = Manifest.from_json(body)
    except InvalidDocument:
        return None, digest
    if manifest.config.media_type != CONFIG_MEDIA_TYPE:
        return None, digest
    config = puller.small_blob(manifest.config, "cache config", _MAX_DOCUMENT)
    try:
        return CacheDocument.from_json(config, f"{ref.domain}/{ref.path}:{target}"), digest
    except InvalidDocument:
        return None, digest  # unreadable: overwritten, as BuildKit overwrites


@contextlib.contextmanager
def _dir_lock(directory: Path) -> Any:
    fd = os.open(directory / ".dockyard-cache.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _export_local(
    store: Store, directory: Path, tag: str, doc: CacheDocument,
    fetchers: Mapping[str, Callable[[], None] | None], compressed: int, say: Progress,
) -> ExportReport:
    """An OCI layout directory: blobs it lacks are copied in, then config, manifest and
    ``index.json`` (under a lock on the directory, merged with what it holds)."""
    import shutil

    blob_dir = directory / "blobs" / "sha256"
    try:
        blob_dir.mkdir(parents=True, exist_ok=True)
        written = present = 0
        for diff_id, layer in sorted(doc.layers.items()):
            dest = blob_dir / layer["digest"].removeprefix("sha256:")
            if dest.exists() and dest.stat().st_size == layer["size"]:
                present += 1
                continue
            fetch = fetchers.get(diff_id)
            if fetch is not None and not store.blobs.has(layer["digest"]):
                fetch()
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
            with store.blobs.open(layer["digest"]) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
            written += 1
        with _dir_lock(directory):
            index = _read_index(directory)
            current = None
            for m in index["manifests"]:
                if isinstance(m, dict) and (m.get("annotations") or {}).get(REF_NAME) == tag:
                    with contextlib.suppress(DockyardError, ValueError):
                        current = _load_doc_local(directory, m)
            merged = doc.merge(current) if current is not None else doc
            merged_from = len(set(current.records) - set(doc.records)) if current else 0
            if current is not None and current.covers(doc):
                merged = current  # nothing of ours is missing: the same manifest again
            merged, dropped = merged.trimmed(doc.records, CONFIG_BUDGET, LAYER_BUDGET)
            if dropped:
                say(_dropped_note(dropped))
            config = merged.to_json()
            manifest = _manifest(merged, config, docker=False)
            for data in (config, manifest):
                dest = blob_dir / digest_bytes(data).removeprefix("sha256:")
                if not dest.exists():
                    _write_atomic(dest, data)
            digest = digest_bytes(manifest)
            entry = {"mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": digest,
                     "size": len(manifest), "annotations": {REF_NAME: tag}}
            index["manifests"] = [m for m in index["manifests"] if not (
                isinstance(m, dict) and (m.get("annotations") or {}).get(REF_NAME) == tag)]
            index["manifests"].append(entry)
            index.setdefault("schemaVersion", 2)
            index["mediaType"] = "application/vnd.oci.image.index.v1+json"
            _write_atomic(directory / "oci-layout",
                          canonical_json({"imageLayoutVersion": "1.0.0"}))
            _write_atomic(directory / "index.json", canonical_json(index))
    except OSError as err:
        raise RegistryError(f"{directory}: cannot write the cache: {err.strerror or err}"
                            ) from None
    say(f"layers: {written} written, {present} already there")
    say(f"writing cache manifest {digest}")
    return ExportReport(str(directory), len(doc.records), len(doc.layers), written, 0,
                        present, compressed, digest, merged_from)


def _load_doc_local(directory: Path, desc: Mapping[str, Any]) -> CacheDocument:
    from dockyard.image.oci import Manifest

    manifest = Manifest.from_json(_layout_blob(directory, str(desc.get("digest"))))
    config = _layout_blob(directory, manifest.config.digest, manifest.config.size)
    return CacheDocument.from_json(config, str(directory))
