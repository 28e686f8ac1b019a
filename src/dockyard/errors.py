"""Every exception dockyard raises on purpose, in one leaf module.

The hierarchy::

    DockyardError                    base; the CLI prints str(err) and exits 1
    ├── UsageError                   bad command-line use (exit 2)
    ├── DockerfileError              a problem in the Dockerfile, with its Location
    │   └── ExpansionError           ${X:?msg}, bad substitution (location added later)
    ├── BuildError                   a step failed while building (location of the step)
    │   └── RunError                 a RUN exited non-zero (command, exit code, output tail)
    ├── ContextError                 build context: missing file, symlink escape, bad tar
    │   └── SourceChangedError       a source changed between its digest and its copy
    ├── LayerError                   unsafe or corrupt layer tar (path escape, bad whiteout)
    ├── StoreError                   the local store
    │   └── NotFoundError            an image, tag or blob that is not there
    ├── ExecutorError                the OCI runtime could not be found or started
    ├── RegistryError                a registry reply we cannot use
    └── NoSpaceError                 the disk (or a quota) is full while writing something

Errors that belong to a Dockerfile line carry a :class:`Location` and render like
BuildKit's source block, with the failing line marked::

    Dockerfile:3
    --------------------
       2 |     FROM busybox
       3 | >>> FORM busybox
       4 |     RUN true
    --------------------
    ERROR: Dockerfile:3: unknown instruction: FORM (did you mean FROM?)

This module imports nothing from the rest of dockyard.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BuildError",
    "ContextError",
    "DockerfileError",
    "DockyardError",
    "ExecutorError",
    "ExpansionError",
    "LayerError",
    "Location",
    "NoSpaceError",
    "NotFoundError",
    "RegistryError",
    "RunError",
    "SourceChangedError",
    "StoreError",
    "UsageError",
]


@dataclass(frozen=True, slots=True)
class Location:
    """Where something is in a Dockerfile: the file name as the user gave it, 1-based lines."""

    file: str
    start_line: int
    end_line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.start_line}"


class DockyardError(Exception):
    """Base class of every error dockyard raises on purpose."""

    exit_code: int = 1

    def render(self) -> str:
        """The full text shown to a user (may span several lines)."""
        return f"ERROR: {self}"


class UsageError(DockyardError):
    """The command line is wrong."""

    exit_code = 2


class _Located(DockyardError):
    """An error that may point at Dockerfile lines."""

    def __init__(
        self,
        message: str,
        location: Location | None = None,
        hint: str | None = None,
        source: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.location = location
        self.hint = hint
        self.source = source

    def __str__(self) -> str:
        text = self.message
        if self.hint:
            text = f"{text} ({self.hint})"
        if self.location is not None:
            text = f"{self.location}: {text}"
        return text

    def located(self, location: Location, source: str | None = None) -> _Located:
        """Give the error a location (and the source text to show) if it has none yet."""
        if self.location is None:
            self.location = location
        if self.source is None and source is not None:
            self.source = source
        return self

    def render(self) -> str:
        block = render_source_block(self.location, self.source) if self.location else ""
        return f"{block}ERROR: {self}"


def render_source_block(location: Location | None, source: str | None, context: int = 1) -> str:
    """BuildKit-style excerpt of ``source`` around ``location``, failing lines marked ``>>>``."""
    if location is None or source is None:
        return ""
    lines = source.splitlines()
    if not lines:
        return ""
    first = max(1, location.start_line - context)
    last = min(len(lines), location.end_line + context)
    if first > last:
        return ""
    width = len(str(last))
    rule = "-" * 20
    out = [f"{location.file}:{location.start_line}"]
    if location.end_line != location.start_line:
        out[0] += f"-{location.end_line}"
    out.append(rule)
    for n in range(first, last + 1):
        mark = ">>>" if location.start_line <= n <= location.end_line else "   "
        text = lines[n - 1]
        if len(text) > 200:
            text = text[:200] + "..."
        out.append(f" {n:>{width}} | {mark} {text}")
    out.append(rule)
    return "\n".join(out) + "\n"


class DockerfileError(_Located):
    """A problem in the Dockerfile itself: syntax, an unknown instruction, a bad flag."""


class ExpansionError(DockerfileError):
    """Word expansion failed (``${X:?msg}``, a bad substitution); located by the caller."""


class BuildError(_Located):
    """A build step failed."""


class RunError(BuildError):
    """A RUN step exited non-zero."""

    def __init__(
        self,
        message: str,
        location: Location | None = None,
        *,
        command: str = "",
        exit_code: int = 1,
        output_tail: list[str] | None = None,
        source: str | None = None,
    ) -> None:
        super().__init__(message, location, None, source)
        self.command = command
        self.exit_status = exit_code
        self.output_tail = list(output_tail or [])

    def render(self) -> str:
        tail = ""
        if self.output_tail:
            tail = "output (last lines):\n" + "\n".join(
                f"  {line}" for line in self.output_tail
            ) + "\n"
        return tail + super().render()


class ContextError(_Located):
    """The build context: a missing file, a symlink leaving the context, a bad tarball."""


class SourceChangedError(ContextError):
    """A file a step reads from a build context changed after the step's key was made from
    it (and before the step had read it): the result would not match its key, so it is not
    kept. The solver keys the step again; this reaches the user only when the file keeps
    changing."""


class LayerError(DockyardError):
    """An unsafe or corrupt layer archive."""


class StoreError(DockyardError):
    """The local store is unusable or inconsistent."""


class NotFoundError(StoreError):
    """An image, tag, blob or cache record that is not in the store."""


class ExecutorError(_Located):
    """The OCI runtime could not be found, or could not start the container."""


class RegistryError(DockyardError):
    """A registry reply that dockyard cannot use (auth, protocol, digest mismatch)."""


class NoSpaceError(DockyardError):
    """The disk (or a quota) filled up while dockyard was writing something.

    Renders as ``no space left on device while writing <what> (<path>)``; ``what`` says
    what was being written (a layer, a blob, the store database, an export) and ``path``
    where."""

    def __init__(self, what: str, path: str) -> None:
        super().__init__(f"no space left on device while writing {what} ({path})")
        self.what = what
        self.path = path
