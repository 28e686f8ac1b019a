"""COPY of many small files: time ``copy_into`` into a fresh overlay mount, as a build does.

    sudo .venv/bin/python bench/bench_copy.py SRC_DIR [--rounds 5] [--baseline FILE]

Each round mounts an overlay (empty lower, fresh upper) under /var/tmp, copies SRC_DIR's
contents to ``/data/`` inside it with :func:`dockyard.context.copy.copy_into`, and unmounts.
``--baseline FILE`` also loads another copy.py (e.g. ``git show HEAD:src/dockyard/context/copy.py
> /tmp/copy_old.py``) and alternates the two round by round, so machine noise hits both alike.
Prints the median and min wall and CPU seconds of each.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any


def _load(path: str, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class _WithWorkers:
    """The current copy module with ``_COPY_WORKERS`` set for the duration of a call."""

    def __init__(self, module: Any, workers: int) -> None:
        self.module, self.workers = module, workers

    def copy_into(self, *args: Any, **kwargs: Any) -> None:
        saved = self.module._COPY_WORKERS
        self.module._COPY_WORKERS = self.workers
        try:
            self.module.copy_into(*args, **kwargs)
        finally:
            self.module._COPY_WORKERS = saved


def _round(module: Any, src: Path, work: Path) -> tuple[float, float]:
    lower, upper, wd, mnt = (work / n for n in ("lower", "upper", "work", "mnt"))
    for d in (lower, upper, wd, mnt):
        d.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={wd}", str(mnt)], check=True)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        module.copy_into(src.parent, [src.name + "/"], "/data/", mnt, workdir="/", chown=None,
                         chmod=None, parents=False, excludes=(), is_add=False, ignore=None)
        return time.perf_counter() - t0, time.process_time() - c0
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
        shutil.rmtree(work)
        work.mkdir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", help="another copy.py to compare against")
    parser.add_argument("--workers", default="", help="comma-separated thread counts to "
                        "compare for the current copy.py (its _COPY_WORKERS), e.g. 1,2,4")
    args = parser.parse_args()
    from dockyard.context import copy as current

    variants: dict[str, Any] = {"current": current}
    for count in filter(None, args.workers.split(",")):
        variants[f"threads={count}"] = _WithWorkers(current, int(count))
    if args.baseline:
        variants["baseline"] = _load(args.baseline, "copy_baseline")
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="bench-copy-") as tmp:
        work = Path(tmp) / "w"
        work.mkdir()
        for _ in range(args.rounds):
            for name, module in variants.items():
                subprocess.run(["sync"], check=True)
                times[name].append(_round(module, args.src.resolve(), work))
    files = sum(len(f) for _, _, f in os.walk(args.src))
    for name, rows in times.items():
        walls, cpus = [w for w, _ in rows], [c for _, c in rows]
        print(f"{name:9s} {files} files: wall median {statistics.median(walls):.3f}s "
              f"min {min(walls):.3f}s | cpu median {statistics.median(cpus):.3f}s "
              f"min {min(cpus):.3f}s")


if __name__ == "__main__":
    main()
