"""Where a dockyard command's peak memory goes: its CLI under tracemalloc.

    MEMTOP_OUT=report.md .venv/bin/python bench/memtop.py --root R build ...

A thread checks the traced memory every 0.2 s and keeps a snapshot each time it reaches a
new peak (at least 10% over the last one); when the command ends, the report (MEMTOP_OUT,
default stderr) lists the source lines holding the most memory in the largest snapshot
(MEMTOP_GROUP=traceback with MEMTOP_FRAMES=N: the N innermost callers of each, innermost
first).
tracemalloc sees Python allocations only (not the interpreter, shared libraries or
SQLite's page cache) and slows the command 2-4x: use it for shares, not for the RSS.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import tracemalloc


def main() -> None:
    tracemalloc.start(int(os.environ.get("MEMTOP_FRAMES", "1")))
    best: list[tuple[int, tracemalloc.Snapshot | None]] = [(0, None)]
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.2):
            current, _ = tracemalloc.get_traced_memory()
            if current > best[0][0] * 1.1:
                best[0] = (current, tracemalloc.take_snapshot())

    def report() -> None:
        stop.set()
        size, snap = best[0]
        _, peak = tracemalloc.get_traced_memory()
        lines = [f"traced peak {peak / 1e6:.1f} MB; largest snapshot {size / 1e6:.1f} MB", "",
                 "| where (file:line) | MB | blocks |", "|---|---|---|"]
        if snap is not None:
            snap = snap.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
            group = os.environ.get("MEMTOP_GROUP", "lineno")  # or "traceback"
            for stat in snap.statistics(group)[:30]:
                where = " < ".join(
                    f"{fr.filename.split('/src/')[-1].split('/lib/python3.11/')[-1]}:{fr.lineno}"
                    for fr in reversed(stat.traceback) if group == "traceback" or fr is
                    stat.traceback[0])
                lines.append(f"| `{where}` | {stat.size / 1e6:.1f} | {stat.count} |")
        out = os.environ.get("MEMTOP_OUT")
        text = "\n".join(lines) + "\n"
        if out:
            with open(out, "w") as f:
                f.write(text)
        else:
            sys.stderr.write(text)

    threading.Thread(target=watch, daemon=True, name="memtop").start()
    atexit.register(report)
    sys.argv = ["dockyard", *sys.argv[1:]]
    from dockyard.cli.main import entry

    entry()


if __name__ == "__main__":
    main()
