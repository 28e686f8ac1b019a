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
    ap.add_argument("--drop", default="Solver.solve (",
                    help="leave out samples whose innermost frame starts so (default: the "
                         "scheduling thread blocked on its queue, which py-spy counts as busy)")
    a = ap.parse_args()
    stacks = parse(a.profile)
    dropped = sum(c for fr, c in stacks if a.drop and fr and fr[-1].startswith(a.drop))
    stacks = [(fr, c) for fr, c in stacks if not (a.drop and fr and fr[-1].startswith(a.drop))]
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
    print(f"{total} samples ({dropped} more left out: innermost frame {a.drop!r})\n")
    for title, counter in (("self", self_c), (f"inclusive, {a.match}", incl),
                           ("inclusive, other modules by file", files)):
        print(f"| {title} | samples | % |\n|---|---|---|")
        for key, c in counter.most_common(a.top):
            print(f"| `{key}` | {c} | {100 * c / total:.1f} |")
        print()


if __name__ == "__main__":
    main()
