"""``--output`` specs, parsed like buildx: ``type=oci,dest=out.tar,compression=zstd``.

Shorthands (as buildx): ``-o DIR`` is ``type=local,dest=DIR`` and ``-o -`` is
``type=tar,dest=-``. Fields are CSV, so a value may be quoted: ``"dest=a,b.tar"``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import Literal, cast

from dockyard.errors import UsageError

__all__ = ["Compression", "OutputSpec", "OutputType", "parse_output"]

OutputType = Literal["oci", "docker", "local", "tar", "image", "registry"]
Compression = Literal["gzip", "zstd", "uncompressed"]

_TYPES: tuple[str, ...] = ("oci", "docker", "local", "tar", "image", "registry")
_COMPRESSIONS: tuple[str, ...] = ("gzip", "zstd", "uncompressed")
_KEYS = {"type", "dest", "tar", "compression", "compression-level", "force-compression",
         "name", "oci-mediatypes", "push", "registry.insecure"}


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """One parsed ``--output``. ``dest`` is a path, ``-`` for stdout, or None: ``image`` and
    ``registry`` write none, and ``docker`` without one loads into the Docker daemon
    (``--load``), as buildx does."""

    type: OutputType
    dest: str | None
    tar: bool = True
    compression: Compression = "gzip"
    compression_level: int | None = None
    name: str | None = None
    push: bool = False  # type=registry, or type=image,push=true: push every name
    insecure: bool = False  # registry.insecure=true: plain HTTP / unverified TLS allowed
    oci_mediatypes: bool = True  # false: push Docker schema2 media types


def _bool(key: str, value: str) -> bool:
    low = value.strip().lower()
    if low in ("true", "1", "yes", "on"):
        return True
    if low in ("false", "0", "no", "off"):
        return False
    raise UsageError(f"--output: {key}={value!r} is not a boolean")


def parse_output(spec: str) -> OutputSpec:
    """Parse an ``--output`` value (see the module docstring); raises UsageError."""
    spec = spec.strip()
    if not spec:
        raise UsageError("--output: empty value")
    if spec == "-":
        return OutputSpec(type="tar", dest="-")
    if "=" not in spec:
        return OutputSpec(type="local", dest=spec)
    try:
        fields = next(csv.reader([spec]))
    except (csv.Error, StopIteration) as err:
        raise UsageError(f"--output: cannot parse {spec!r}: {err}") from None
    values: dict[str, str] = {}
    for item in fields:
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep:
            raise UsageError(f"--output: {item!r} is not key=value")
        if key not in _KEYS:
            raise UsageError(
                f"--output: unknown key {key!r} (known: {', '.join(sorted(_KEYS))})")
        values[key] = value
    kind = values.get("type", "")
    if kind not in _TYPES:
        raise UsageError(f"--output: type must be one of {', '.join(_TYPES)}, not {kind!r}")
    dest = values.get("dest")
    push = kind == "registry" or ("push" in values and _bool("push", values["push"]))
    if push and kind not in ("image", "registry"):
        raise UsageError("--output: push=true only applies to type=image or type=registry")
    if kind not in ("image", "registry", "docker") and not dest:
        raise UsageError(f"--output type={kind} needs dest=PATH")
    if kind == "local" and dest == "-":
        raise UsageError("--output type=local cannot write to stdout; use type=tar,dest=-")
    compression = values.get("compression", "gzip")
    if compression not in _COMPRESSIONS:
        raise UsageError(f"--output: compression must be one of {', '.join(_COMPRESSIONS)}")
    level: int | None = None
    if "compression-level" in values:
        try:
            level = int(values["compression-level"])
        except ValueError:
            raise UsageError("--output: compression-level must be an integer") from None
    as_tar = _bool("tar", values["tar"]) if "tar" in values else True
    if not as_tar and kind != "oci":
        raise UsageError("--output: tar=false only applies to type=oci")
    if not as_tar and dest == "-":
        raise UsageError("--output: tar=false needs a directory dest, not -")
    return OutputSpec(
        type=cast(OutputType, kind),
        dest=dest,
        tar=as_tar,
        compression=cast(Compression, compression),
        compression_level=level,
        name=values.get("name"),
        push=push,
        insecure=_bool("registry.insecure", values["registry.insecure"])
        if "registry.insecure" in values else False,
        oci_mediatypes=_bool("oci-mediatypes", values["oci-mediatypes"])
        if "oci-mediatypes" in values else True,
    )
