"""The OCI image model: references (:mod:`.reference`) and documents (:mod:`.oci`)."""

from __future__ import annotations

from dockyard.image.oci import (
    Descriptor,
    HistoryEntry,
    ImageConfig,
    Index,
    Manifest,
    Platform,
    RunConfig,
    canonical_json,
    chain_ids,
)
from dockyard.image.reference import Reference, parse_reference

__all__ = [
    "Descriptor",
    "HistoryEntry",
    "ImageConfig",
    "Index",
    "Manifest",
    "Platform",
    "Reference",
    "RunConfig",
    "canonical_json",
    "chain_ids",
    "parse_reference",
]
