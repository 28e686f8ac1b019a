"""Summarise ``python -X importtime`` output (stderr of a run with PYTHONPROFILEIMPORTTIME=1).

    python3 bench/importtime.py IMPORTTIME.txt [--top 30]

Prints the number of modules and their summed self time, then the modules imported at the
top two levels of nesting with their cumulative time, largest first: what a build pays
for in imports before it does any work.
"""

from __future__ import annotations

import argparse


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--top", type=int, default=30)
    a = ap.parse_args()
    rows: list[tuple[int, int, int, str]] = []
    with open(a.path, errors="replace") as f:
        for line in f:
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            parts = line[len("import time:"):].split("|")
            raw = parts[2].rstrip("\n")[1:]
            level = (len(raw) - len(raw.lstrip(" "))) // 2
            rows.append((int(parts[0]), int(parts[1]), level, raw.strip()))
    total = sum(r[0] for r in rows)
    print(f"{len(rows)} modules imported, {total / 1000:.1f} ms (self times added up)\n")
    print("| module | level | cumulative ms |\n|---|---|---|")
    for _, cum, level, mod in sorted((r for r in rows if r[2] <= 1), key=lambda r: -r[1])[:a.top]:
        print(f"| `{mod}` | {level} | {cum / 1000:.1f} |")


if __name__ == "__main__":
    main()
