"""What one archive may cost: the limits every unpack and every import is held to.

A small input must not buy an unbounded cost. Each layer, each ``ADD`` archive, each
``import`` and each ``load`` archive is held to:

============================  ====================  ============================  ===========
limit                         flag (global)         environment                   default
============================  ====================  ============================  ===========
decompressed bytes            ``--max-layer-size``  ``DOCKYARD_MAX_LAYER_SIZE``   64 GiB
decompressed / compressed     ``--max-ratio``       ``DOCKYARD_MAX_RATIO``        100 (past
                                                                                  256 MiB)
entries                       ``--max-entries``     ``DOCKYARD_MAX_ENTRIES``      2,000,000
path depth (components)       ``--max-path-depth``  ``DOCKYARD_MAX_PATH_DEPTH``   256
============================  ====================  ============================  ===========

The ratio limit stops decompression bombs early: once a stream has produced more than
256 MiB, it may not produce more than ``ratio`` times the compressed bytes read so far (a
1 MB gzip bomb stops at 256 MiB instead of writing gigabytes). Uncompressed input has no
ratio. ``0`` turns a limit off. Sparse files in layers are written sparse, so a hole costs
nothing on disk (see docs/reliability.md).

The CLI's global flags set the environment variables, so one setting reaches every command;
library callers use :func:`override`.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace

from dockyard.errors import UsageError

__all__ = [
    "FLAGS",
    "Limits",
    "current",
    "hint",
    "human_bytes",
    "override",
    "parse_count",
    "parse_limit_size",
]


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits (see the module docstring); 0 means none."""

    max_layer_size: int = 64 << 30
    max_ratio: int = 100
    ratio_floor: int = 256 << 20
    max_entries: int = 2_000_000
    max_path_depth: int = 256


# field -> (global flag, environment variable)
FLAGS: dict[str, tuple[str, str]] = {
    "max_layer_size": ("--max-layer-size", "DOCKYARD_MAX_LAYER_SIZE"),
    "max_ratio": ("--max-ratio", "DOCKYARD_MAX_RATIO"),
    "max_entries": ("--max-entries", "DOCKYARD_MAX_ENTRIES"),
    "max_path_depth": ("--max-path-depth", "DOCKYARD_MAX_PATH_DEPTH"),
}

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "ki": 1 << 10, "kib": 1 << 10,
          "mi": 1 << 20, "mib": 1 << 20, "gi": 1 << 30, "gib": 1 << 30, "ti": 1 << 40,
          "tib": 1 << 40}
_SIZE = re.compile(r"\s*(\d+)\s*([a-zA-Z]*)\s*")


def parse_limit_size(text: str, what: str = "size") -> int:
    """Bytes in ``64GiB``, ``500MB``, ``1024`` (``0``: no limit); UsageError otherwise."""
    m = _SIZE.fullmatch(text)
    if m is None or m.group(2).lower() not in _UNITS:
        raise UsageError(f"invalid {what} {text!r} (use e.g. 64GiB, 500MB, 0 for no limit)")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def parse_count(text: str, what: str = "number") -> int:
    """A whole number ``>= 0`` (``_`` and ``,`` allowed as separators); UsageError otherwise."""
    cleaned = text.strip().replace("_", "").replace(",", "")
    if not cleaned.isdigit():
        raise UsageError(f"invalid {what} {text!r} (a whole number, 0 for no limit)")
    return int(cleaned)


_override: Limits | None = None
_from_env: tuple[tuple[str | None, ...], Limits] | None = None


def _parse(name: str, text: str) -> int:
    flag, env = FLAGS[name]
    if name == "max_layer_size":
        return parse_limit_size(text, f"{flag}/{env}")
    return parse_count(text, f"{flag}/{env}")


def current() -> Limits:
    """The limits in force: :func:`override`'s, else the defaults changed by the environment."""
    global _from_env
    if _override is not None:
        return _override
    raw = tuple(os.environ.get(env) for _, env in FLAGS.values())
    if _from_env is not None and _from_env[0] == raw:
        return _from_env[1]
    values = {name: _parse(name, text) for name, text in zip(FLAGS, raw, strict=True)
              if text not in (None, "")}
    limits = replace(Limits(), **values)
    _from_env = (raw, limits)
    return limits


@contextlib.contextmanager
def override(limits: Limits | None = None, **changes: int) -> Iterator[Limits]:
    """Use ``limits`` (or the current ones with ``changes``) inside the block."""
    global _override
    known = {f.name for f in fields(Limits)}
    unknown = set(changes) - known
    if unknown:
        raise TypeError(f"unknown limits: {', '.join(sorted(unknown))}")
    saved = _override
    _override = replace(limits or current(), **changes)
    try:
        yield _override
    finally:
        _override = saved


def hint(name: str) -> str:
    """How to raise limit ``name``: ``raise it with --max-entries (DOCKYARD_MAX_ENTRIES)``."""
    flag, env = FLAGS[name]
    return f"raise it with {flag} or {env}"


def human_bytes(n: int) -> str:
    """``64 GiB``, ``256 MiB``, ``512 B``: how a limit is shown in an error."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"
