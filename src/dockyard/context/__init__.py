"""context room (see docs/architecture.md): build contexts, .dockerignore, content digests
through a stat cache, and the COPY/ADD file operation."""

from __future__ import annotations

from dockyard.context.context import BuildContext, open_named_contexts
from dockyard.context.copy import (
    ChmodSpec,
    add_remote,
    copy_into,
    parse_chmod,
    resolve_chown,
    write_heredocs,
)
from dockyard.context.dockerignore import PatternMatcher, load_dockerignore, parse_dockerignore
from dockyard.context.hashing import (
    FileMeta,
    SelectionDigest,
    StatCache,
    digest_selection,
    explain_diff,
)

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
