"""Summarise a py-spy ``--format raw`` profile (collapsed stacks): where the samples go.

    python3 bench/pyspy_top.py PROFILE.txt [--top 25] [--match dockyard/]

Prints three markdown tables: the functions with the most samples *in themselves* (self),
the functions of dockyard (frames whose file matches --match) with the most samples
*under* them (inclusive), and the same for stdlib/third-party modules, by file. Proportions
of samples survive a noisy machine; absolute times do not.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

# phases of a build, in priority order: a sample belongs to the first phase one of whose
# frames it has (so an import inside the copy counts as the copy); `--phases` prints them
PHASES = (
    ("up-to-date check (quick.py walk)", ("signature (",)),
    ("base layer unpack", ("apply_layer (",)),
    ("layer diff (tar + sha256 of the upper dir)", ("OverlaySnapshotter.diff (",)),
    ("miss explanation", ("Solver._explain (", "Explainer.explain (")),
    ("cache key: context digest", ("digest_selection (", "StatCache.", "hash_file (")),
    ("COPY: reuse links", ("FileReuse.",)),
    ("COPY: copy files", ("copy_into (", "_Copier.copy_files.<locals>.run (", "_Direct.run (")),
    ("RUN: executor (spawn, spec, runtime)", ("Executor.run (",)),
    ("snapshot prepare/mount/commit", ("OverlaySnapshotter.", "mounted (", "LayerSnapshots.",
                                        "unmount (", "MetaTable.")),
    ("store records (SQLite, blobs)", ("Store.",)),
    ("imports", ("_find_and_load (",)),
)

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _is_code(frame: str) -> bool:
    m = _FRAME.match(frame)
    return bool(m) and (m["file"].endswith(".py") or m["file"].startswith("<")
                        or m["file"].endswith("/dockyard"))


def parse(path: str) -> list[tuple[list[str], int]]:
    stacks: list[tuple[list[str], int]] = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            stacks.append((stack.split(";"), int(count)))
    return stacks


def name(frame: str, with_line: bool = False) -> tuple[str, str]:
    m = _FRAME.match(frame)
    if not m:
        return frame, ""
    file = m["file"]
    for marker in ("/site-packages/", "/src/", "/lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    func = m["func"]
    if with_line and m["line"]:
        func += f":{m['line']}"
    return func, file


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("profile")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--match", default="dockyard/")
    ap.add_argument("--phases", action="store_true", help="also the samples by build phase")
    ap.add_argument("--wait", action="append", default=None,
                    help="innermost frames (prefixes) that are a thread blocked in a system "
                         "call py-spy still counts as busy; counted apart, left out of the "
                         "tables (default: the solver's scheduling thread on its queue, the "
                         "executor reading the container's output until it exits)")
    a = ap.parse_args()
    waits = tuple(a.wait or ("Solver.solve (", "Executor._run_container ("))
    stacks = parse(a.profile)
    waiting: Counter[str] = Counter()
    kept = []
    for fr, c in stacks:
        leaf = next((f for f in reversed(fr) if _is_code(f)), "")
        if leaf.startswith(waits):
            waiting[leaf.split(" (", 1)[0]] += c
        else:
            kept.append((fr, c))
    stacks = kept
    total = sum(c for _, c in stacks) or 1
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    files: Counter[str] = Counter()
    for frames, count in stacks:
        # py-spy puts the thread first ("process 1:..." / "thread (0x...)"); skip non-frames
        real = [f for f in frames if _is_code(f)]
        if not real:
            continue
        func, file = name(real[-1])
        self_c[f"{func} ({file})"] += count
        seen: set[str] = set()
        seen_files: set[str] = set()
        for fr in real:
            func, file = name(fr)
            key = f"{func} ({file})"
            if a.match in fr and key not in seen:
                incl[key] += count
                seen.add(key)
            if a.match not in fr and file not in seen_files:
                files[file] += count
                seen_files.add(file)
    print(f"{total} samples busy in Python or a system call, and waiting apart: "
          + (", ".join(f"{k} {v}" for k, v in waiting.items()) or "none") + "\n")
    if a.phases:
        phases: Counter[str] = Counter()
        for frames, count in stacks:
            names = [name(f)[0] + " (" for f in frames if _is_code(f)]
            phase = next((p for p, prefixes in PHASES
                          if any(fr.startswith(prefixes) for fr in names)), "other")
            phases[phase] += count
        print("| phase | samples | % |\n|---|---|---|")
        for key, c in phases.most_common():
            print(f"| {key} | {c} | {100 * c / total:.1f} |")
        print()
    for title, counter in (("self", self_c), (f"inclusive, {a.match}", incl),
                           ("inclusive, other modules by file", files)):
        print(f"| {title} | samples | % |\n|---|---|---|")
        for key, c in counter.most_common(a.top):
            print(f"| `{key}` | {c} | {100 * c / total:.1f} |")
        print()


if __name__ == "__main__":
    main()
