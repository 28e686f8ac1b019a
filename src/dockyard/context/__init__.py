"""context room (see docs/architecture.md): build contexts, .dockerignore, content digests
through a stat cache, and the COPY/ADD file operation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dockyard.context.context import BuildContext, open_named_contexts
from dockyard.context.dockerignore import PatternMatcher, load_dockerignore, parse_dockerignore
from dockyard.context.hashing import (
    FileMeta,
    SelectionDigest,
    StatCache,
    digest_selection,
    explain_diff,
)

if TYPE_CHECKING:
    from dockyard.context.copy import (
        ChmodSpec,
        add_remote,
        copy_into,
        parse_chmod,
        resolve_chown,
        write_heredocs,
    )

# The copy operation is imported on first use: a fully cached build never copies.
_LAZY = {
    name: "dockyard.context.copy"
    for name in (
        "ChmodSpec",
        "add_remote",
        "copy_into",
        "parse_chmod",
        "resolve_chown",
        "write_heredocs",
    )
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "BuildContext",
    "ChmodSpec",
    "FileMeta",
    "PatternMatcher",
    "SelectionDigest",
    "StatCache",
    "add_remote",
    "copy_into",
    "digest_selection",
    "explain_diff",
    "load_dockerignore",
    "open_named_contexts",
    "parse_chmod",
    "parse_dockerignore",
    "resolve_chown",
    "write_heredocs",
]
