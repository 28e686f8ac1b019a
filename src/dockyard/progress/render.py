"""Renderers for build progress: ``plain``, ``rawjson``, ``quiet`` (and ``tty`` in tty.py).

Choose one with :func:`make_renderer`. Every renderer is thread-safe: the solver runs stages in
parallel threads and calls ``handle`` from all of them.

The ``plain`` format follows BuildKit's plain printer closely enough for tools that read it::

    #3 [builder 2/4] RUN make
    #3 0.123 cc -o app main.c
    #3 DONE 0.4s

    #4 [builder 3/4] COPY src/ /app/src
    #4 CACHED

A vertex header is printed when a vertex starts, and printed again (after a blank line) when
output of another vertex interleaves; the interrupted vertex gets a ``#N ...`` line, as BuildKit
does. Log lines carry the seconds since the vertex started: three decimals under 10s, two under
100s, one above.

dockyard adds one line BuildKit does not have, the reason a cache lookup missed::

    #4 CACHE MISS: COPY src/ /app/src: 2 files changed: src/main.c (content), src/util.h (added)

It has the same ``#N <text>`` shape as BuildKit's status lines (``#N transferring context: 2B
done``), so tools that match ``#N CACHED``, ``#N DONE <t>s`` or ``#N ERROR: <msg>`` and skip other
lines ignore it safely. Warnings are listed after the last vertex, as BuildKit does.
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

from dockyard.errors import UsageError
from dockyard.progress.events import (
    BuildFinished,
    BuildWarning,
    CacheMissExplained,
    Event,
    Renderer,
    VertexCached,
    VertexDone,
    VertexError,
    VertexLog,
    VertexStarted,
)

__all__ = [
    "MODES",
    "PlainRenderer",
    "ProgressMode",
    "QuietRenderer",
    "RawJSONRenderer",
    "make_renderer",
]

ProgressMode = Literal["auto", "tty", "plain", "rawjson", "quiet"]
MODES: tuple[str, ...] = ("auto", "tty", "plain", "rawjson", "quiet")


def make_renderer(mode: str, stream: TextIO, *, stdout: TextIO | None = None) -> Renderer:
    """The renderer for ``--progress MODE``, writing to ``stream`` (normally stderr).

    ``auto`` is ``tty`` when ``stream`` is a terminal, else ``plain``. ``quiet`` writes only the
    image id, to ``stdout`` (default ``sys.stdout``). rich is imported only for ``tty``.
    """
    if mode == "auto":
        isatty = getattr(stream, "isatty", None)
        mode = "tty" if isatty is not None and isatty() else "plain"
    if mode == "plain":
        return PlainRenderer(stream)
    if mode == "rawjson":
        return RawJSONRenderer(stream)
    if mode == "quiet":
        return QuietRenderer(stdout if stdout is not None else sys.stdout)
    if mode == "tty":
        from dockyard.progress.tty import TTYRenderer

        return TTYRenderer(stream)
    raise UsageError(f"unknown progress mode {mode!r} (expected one of: {', '.join(MODES)})")


def format_log_time(seconds: float) -> str:
    """BuildKit's log timestamp: seconds since the vertex started, shorter as it grows."""
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.3f}"
    if seconds < 100:
        return f"{seconds:.2f}"
    return f"{seconds:.1f}"


@dataclass
class _PlainVertex:
    """A step the plain renderer has printed, with its pending partial output line."""

    index: int
    name: str
    started: float
    partial: bytes = b""
    partial_time: float = 0.0
    miss_printed: bool = False
    pending_miss: list[str] = field(default_factory=list)


class PlainRenderer:
    """BuildKit-style ``#N ...`` lines (see the module docstring for the exact format)."""

    def __init__(self, stream: TextIO) -> None:
        self._out = stream
        self._lock = threading.Lock()
        self._vertices: dict[int, _PlainVertex] = {}
        self._early_misses: dict[int, list[str]] = {}
        self._current: int | None = None
        self._first = True
        self._warnings: list[BuildWarning] = []

    def handle(self, event: Event) -> None:
        """Print what ``event`` adds to the log."""
        with self._lock:
            self._handle(event)
            self._out.flush()

    def close(self) -> None:
        """Flush partial log lines and print collected warnings."""
        with self._lock:
            for v in self._vertices.values():
                if v.partial:
                    self._switch(v)
                    self._flush_partial(v)
            self._print_warnings()
            self._out.flush()

    def _w(self, line: str) -> None:
        self._out.write(line + "\n")

    def _handle(self, event: Event) -> None:
        match event:
            case VertexStarted():
                v = _PlainVertex(event.vertex, event.name, event.time)
                v.pending_miss = self._early_misses.pop(event.vertex, [])
                self._vertices[event.vertex] = v
                self._switch(v, force_header=True)
                for reason in v.pending_miss:
                    self._w(f"#{v.index} CACHE MISS: {reason}")
                    v.miss_printed = True
            case VertexLog():
                v = self._vertex(event.vertex, event.time)
                self._switch(v)
                self._log(v, event.data, event.time)
            case CacheMissExplained():
                known = self._vertices.get(event.vertex)
                if known is None:
                    self._early_misses.setdefault(event.vertex, []).append(event.reason)
                    return
                self._switch(known)
                self._w(f"#{known.index} CACHE MISS: {event.reason}")
                known.miss_printed = True
            case VertexCached():
                v = self._vertex(event.vertex, event.time)
                self._switch(v)
                self._flush_partial(v)
                self._w(f"#{v.index} CACHED")
                self._current = None
            case VertexDone():
                v = self._vertex(event.vertex, event.time)
                self._switch(v)
                self._flush_partial(v)
                if event.reason and not v.miss_printed:
                    self._w(f"#{v.index} CACHE MISS: {event.reason}")
                self._w(f"#{v.index} DONE {event.duration:.1f}s")
                self._current = None
            case VertexError():
                v = self._vertex(event.vertex, event.time)
                self._switch(v)
                self._flush_partial(v)
                self._w(f"#{v.index} ERROR: {event.error}")
                self._current = None
            case BuildWarning():
                self._warnings.append(event)
            case BuildFinished():
                pass

    def _vertex(self, index: int, time: float) -> _PlainVertex:
        v = self._vertices.get(index)
        if v is None:  # an event for a vertex that never started: still show it
            v = _PlainVertex(index, "", time)
            self._vertices[index] = v
        return v

    def _switch(self, v: _PlainVertex, *, force_header: bool = False) -> None:
        if self._current == v.index and not force_header:
            return
        if self._current is not None and self._current != v.index:
            self._w(f"#{self._current} ...")
        if self._first:
            self._first = False
        else:
            self._w("")
        self._w(f"#{v.index} {v.name}".rstrip())
        self._current = v.index

    def _log(self, v: _PlainVertex, data: bytes, time: float) -> None:
        # A line split over several chunks keeps the time of its first chunk.
        first_time = v.partial_time if v.partial else time
        *lines, rest = (v.partial + data).split(b"\n")
        for i, raw in enumerate(lines):
            stamp = format_log_time((first_time if i == 0 else time) - v.started)
            text = raw.rstrip(b"\r").decode("utf-8", "replace")
            self._w(f"#{v.index} {stamp} {text}")
        if rest and (lines or not v.partial):
            v.partial_time = time
        v.partial = rest

    def _flush_partial(self, v: _PlainVertex) -> None:
        if v.partial:
            stamp = format_log_time(v.partial_time - v.started)
            text = v.partial.rstrip(b"\r").decode("utf-8", "replace")
            self._w(f"#{v.index} {stamp} {text}")
            v.partial = b""

    def _print_warnings(self) -> None:
        if not self._warnings:
            return
        n = len(self._warnings)
        self._w("")
        self._w(f" {n} warning{'s' if n != 1 else ''} found:")
        for w in self._warnings:
            where = f" ({w.location})" if w.location else ""
            self._w(f" - {w.message}{where}")
        self._warnings.clear()


class RawJSONRenderer:
    """One JSON object per line: ``event.to_dict()``, bytes decoded as UTF-8 text."""

    def __init__(self, stream: TextIO) -> None:
        self._out = stream
        self._lock = threading.Lock()

    def handle(self, event: Event) -> None:
        """Write the event as one line of JSON."""
        line = json.dumps(event.to_dict(), separators=(",", ":"), default=_json_default)
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()

    def close(self) -> None:
        """Nothing to flush: every line is written as it comes."""
        with self._lock:
            self._out.flush()


def _json_default(obj: object) -> Any:
    if isinstance(obj, bytes | bytearray):
        return bytes(obj).decode("utf-8", "replace")
    raise TypeError(f"cannot encode {type(obj).__name__} in a progress event")


class QuietRenderer:
    """Prints nothing but the image id of a successful build, on stdout."""

    def __init__(self, stdout: TextIO) -> None:
        self._out = stdout
        self._lock = threading.Lock()
        self._image_id: str | None = None

    def handle(self, event: Event) -> None:
        """Remember the image id of ``BuildFinished``."""
        if isinstance(event, BuildFinished):
            with self._lock:
                self._image_id = event.image_id

    def close(self) -> None:
        """Print the image id, if the build produced one."""
        with self._lock:
            if self._image_id:
                self._out.write(self._image_id + "\n")
                self._out.flush()
            self._image_id = None
