"""Output files written under a temp name beside their destination, then renamed onto it.

A process killed while writing (SIGKILL, power loss) cannot remove its hidden
``.<name>.<random>.dockyard-tmp`` file, and nothing else would know where it is. So the temp
name is recorded first, in ``<root>/outputs/<token>.json`` with the writer's pid and start
time, and the record goes only after the rename (or the cleanup): mark, then sweep.
:func:`sweep` (``prune``, ``store check --repair``) removes the temp files of writers that are
gone, and nothing that is not named like one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PendingOutput", "atomic_output", "pending", "sweep"]

_TMP_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.dockyard-tmp")


@dataclass(frozen=True)
class PendingOutput:
    """One recorded temp output: the record file and the temp path it names."""

    record: Path
    path: Path
    alive: bool  # its writer still runs


def _outputs(root: Path) -> Path:
    return root / "outputs"


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[19]  # starttime, field 22 of proc(5)
    except (OSError, IndexError):
        return None


@contextlib.contextmanager
def atomic_output(root: Path, path: Path) -> Iterator[Path]:
    """A temp path beside ``path`` (recorded under store ``root``); it is renamed onto
    ``path`` when the block ends without an error, and removed otherwise."""
    token = os.urandom(4).hex()
    tmp = path.with_name(f".{path.name}.{token}.dockyard-tmp")
    records = _outputs(root)
    records.mkdir(mode=0o700, parents=True, exist_ok=True)
    record = records / f"{os.getpid()}-{token}.json"
    with open(record, "w", encoding="utf-8") as f:
        json.dump({"path": str(tmp.absolute()), "pid": os.getpid(),
                   "start": _start_time(os.getpid())}, f)
        f.flush()
        os.fsync(f.fileno())
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
        with contextlib.suppress(OSError):
            record.unlink()


def pending(root: Path) -> list[PendingOutput]:
    """Every recorded temp output (left by a writer that is gone, or still being written)."""
    found = []
    try:
        names = sorted(os.listdir(_outputs(root)))
    except OSError:
        return []
    for name in names:
        record = _outputs(root) / name
        try:
            data = json.loads(record.read_text(encoding="utf-8"))
            path = Path(str(data["path"]))
            pid = int(data["pid"])
            start = data.get("start")
        except (OSError, ValueError, KeyError, TypeError):
            found.append(PendingOutput(record, record, alive=False))  # unreadable: a leftover
            continue
        alive = start is not None and _start_time(pid) == start
        found.append(PendingOutput(record, path, alive))
    return found


def sweep(root: Path) -> list[Path]:
    """Remove the temp outputs (and records) of writers that are gone; returns the temp
    files removed. Only regular files named like our temp files are ever deleted."""
    removed = []
    for item in pending(root):
        if item.alive:
            continue
        if item.path != item.record and _TMP_NAME.fullmatch(item.path.name):
            with contextlib.suppress(OSError):
                if item.path.is_file() and not item.path.is_symlink():
                    item.path.unlink()
                    removed.append(item.path)
        with contextlib.suppress(OSError):
            item.record.unlink()
    return removed
