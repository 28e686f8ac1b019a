"""The ``tty`` renderer: a rich live display of steps per stage, timers, CACHED marks and the
tail of the running steps' output, then a summary.

Every row is laid out for the terminal's width by hand, so nothing squeezes anything else:
the ``[+]``/``=>`` marks and the right-aligned times always show, and only a row's own text
is cut (with ``…``) when it is too long; a CACHED or ERROR mark keeps its place at the end
of the name. The summary line is short enough for a 40-column terminal. FROM is not a step:
the counts are those of the API's ``BuildResult.steps`` and the metadata file.

This is the only module of dockyard that imports rich, and only ``make_renderer("tty")`` (or
``auto`` on a terminal) imports this module, so non-tty start-up never pays for rich.
"""

from __future__ import annotations

import threading
import time as _time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from dockyard.progress.events import (
    BuildFinished,
    BuildWarning,
    CacheMissExplained,
    Event,
    VertexCached,
    VertexDone,
    VertexError,
    VertexLog,
    VertexStarted,
)

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.text import Text

__all__ = ["TTYRenderer"]

TAIL_LINES = 5


@dataclass
class _Step:
    index: int
    name: str
    stage: str | None
    started: float
    state: str = "running"  # running | cached | done | error
    duration: float | None = None
    reason: str | None = None
    error: str | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    partial: bytes = b""
    instruction: str | None = None


class TTYRenderer:
    """Live display on a terminal; a plain summary stays on screen when the build ends."""

    def __init__(self, stream: TextIO, *, width: int | None = None) -> None:
        from rich.console import Console
        from rich.live import Live

        self._lock = threading.Lock()
        self._steps: dict[int, _Step] = {}
        self._warnings: list[BuildWarning] = []
        self._finished: BuildFinished | None = None
        self._t0 = _time.time()
        self._console = Console(file=stream, highlight=False, width=width)
        self._live = Live(
            get_renderable=self._render,
            console=self._console,
            refresh_per_second=8,
            transient=True,
        )
        self._live.start()
        self._closed = False

    def handle(self, event: Event) -> None:
        """Update the display state; rich redraws from its own refresh thread."""
        with self._lock:
            self._apply(event)

    def _apply(self, event: Event) -> None:
        match event:
            case VertexStarted():
                self._steps[event.vertex] = _Step(event.vertex, event.name, event.stage,
                                                  event.time, instruction=event.instruction)
            case VertexLog():
                step = self._step(event.vertex, event.time)
                *lines, step.partial = (step.partial + event.data).split(b"\n")
                for raw in lines:
                    step.tail.append(raw.rstrip(b"\r").decode("utf-8", "replace"))
            case CacheMissExplained():
                self._step(event.vertex, event.time).reason = event.reason
            case VertexCached():
                step = self._step(event.vertex, event.time)
                step.state = "cached"
                step.duration = 0.0
            case VertexDone():
                step = self._step(event.vertex, event.time)
                step.state = "done"
                step.duration = event.duration
                step.reason = step.reason or event.reason
            case VertexError():
                step = self._step(event.vertex, event.time)
                step.state = "error"
                step.error = event.error
                step.duration = event.time - step.started
                if step.partial:
                    step.tail.append(step.partial.decode("utf-8", "replace"))
                    step.partial = b""
            case BuildWarning():
                self._warnings.append(event)
            case BuildFinished():
                self._finished = event

    def _step(self, index: int, time: float) -> _Step:
        step = self._steps.get(index)
        if step is None:
            step = _Step(index, f"#{index}", None, time)
            self._steps[index] = step
        return step

    def _render(self) -> RenderableType:
        from rich.console import Group
        from rich.text import Text

        width = max(self._console.width, 20)
        with self._lock:
            now = _time.time()
            elapsed = (self._finished.duration if self._finished else now - self._t0)
            steps = [s for s in self._steps.values() if _is_step(s)]
            done = sum(1 for s in steps if s.state != "running")
            lines = [_fit(Text("[+] ", style="bold"),
                          Text(f"Building {elapsed:.1f}s ({done}/{len(steps)})", style="bold"),
                          Text(""), Text(""), width)]
            stage: str | None = None
            for step in sorted(self._steps.values(), key=lambda s: s.index):
                if step.stage != stage and step.stage is not None:
                    stage = step.stage
                    lines.append(_fit(Text(""), Text(f"stage {stage}", style="bold blue"),
                                      Text(""), Text(""), width))
                lines.append(self._row(step, now, width))
                if step.state == "running" or (step.state == "error" and step.tail):
                    for line in step.tail:
                        tail = Text("   " + line, style="dim")
                        tail.truncate(width, overflow="ellipsis")
                        lines.append(tail)
            return Group(*lines)

    def _row(self, step: _Step, now: float, width: int) -> Text:
        from rich.text import Text

        mark = {"running": ("=> ", "yellow"), "cached": ("=> ", "blue"),
                "done": ("=> ", "green"), "error": ("=> ", "bold red")}[step.state]
        name = Text(f"#{step.index} {step.name}")
        suffix = Text("")
        if step.state == "cached":
            suffix = Text(" CACHED", style="blue")
        elif step.state == "error" and step.error:
            suffix = Text(f" ERROR: {step.error}", style="red")
        seconds = step.duration if step.duration is not None else now - step.started
        return _fit(Text(mark[0], style=mark[1]), name, suffix, Text(f"{seconds:.1f}s"), width)

    def close(self) -> None:
        """Stop the live display and print the summary."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._live.stop()
        self._console.print(self._render())
        with self._lock:
            misses = [s for s in self._steps.values() if s.reason]
            counted = [s for s in self._steps.values() if _is_step(s)]
            cached = sum(1 for s in counted if s.state == "cached")
            finished = self._finished
            warnings = list(self._warnings)
        for step in sorted(misses, key=lambda s: s.index):
            self._console.print(f"#{step.index} CACHE MISS: {step.reason}", style="dim",
                                markup=False)
        if warnings:
            n = len(warnings)
            self._console.print(f"{n} warning{'s' if n != 1 else ''} found:", style="yellow")
            for w in warnings:
                where = f" ({w.location})" if w.location else ""
                self._console.print(f" - {w.message}{where}", markup=False)
        if finished is not None:
            total = len(counted)
            if finished.image_id:
                # the id follows on its own line (the CLI's "writing image ..."): this one
                # stays short enough not to wrap on a 40-column terminal
                self._console.print(
                    f"Built in {finished.duration:.1f}s ({total} steps, {cached} cached)",
                    markup=False, style="green", overflow="ellipsis", no_wrap=True)
            elif finished.error:
                self._console.print(f"Build failed after {finished.duration:.1f}s",
                                    style="bold red", markup=False)


def _is_step(step: _Step) -> bool:
    """One definition of a step: not FROM and not an internal vertex."""
    return step.instruction != "FROM" and not step.name.startswith("[internal]")


def _fit(mark: Text, name: Text, suffix: Text, right: Text, width: int) -> Text:
    """``mark name suffix ... right`` in exactly ``width`` cells: the name gives way first
    (cut with an ellipsis), then the suffix; the mark and the right column always show."""
    from rich.text import Text

    right_width = len(right.plain)
    room = width - len(mark.plain) - (right_width + 1 if right_width else 0)
    if room < 1:
        room = 1
    keep_suffix = min(len(suffix.plain), max(room - 8, 0))
    name = name.copy()
    name.truncate(room - keep_suffix, overflow="ellipsis")
    suffix = suffix.copy()
    suffix.truncate(keep_suffix, overflow="ellipsis")
    line = Text.assemble(mark, name, suffix)
    if right_width:
        line.append(" " * (width - len(line.plain) - right_width))
        line.append_text(right)
    return line
