"""Ratios of dockyard's median wall time to BuildKit's, from a bench.sh ``raw.csv``.

    python3 bench/ratios.py /var/tmp/peers-bench/results/raw.csv [PEER [REFERENCE]]

Only runs that succeeded count. Prints a markdown table: per case, the medians of both peers
for cold / cached (no-op) / one-file change, and the ratio (below 1.0 = faster than BuildKit).
"""

from __future__ import annotations

import csv
import statistics
import sys
from collections import defaultdict

MODES = ("cold", "cached", "change")


def main() -> None:
    path = sys.argv[1]
    peer = sys.argv[2] if len(sys.argv) > 2 else "dockyard"
    ref = sys.argv[3] if len(sys.argv) > 3 else "docker_buildkit"
    walls: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    cases: list[str] = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["rc"] != "0" or not row["wall_s"]:
                continue
            walls[(row["case"], row["peer"], row["mode"])].append(float(row["wall_s"]))
            if row["case"] not in cases:
                cases.append(row["case"])
    print(f"| case | mode | {peer} (median s) | {ref} (median s) | ratio |")
    print("|---|---|---|---|---|")
    for case in cases:
        for mode in MODES:
            mine, theirs = walls.get((case, peer, mode)), walls.get((case, ref, mode))
            if not mine or not theirs:
                continue
            a, b = statistics.median(mine), statistics.median(theirs)
            print(f"| {case} | {mode} | {a:.2f} | {b:.2f} | {a / b:.2f}x |")


if __name__ == "__main__":
    main()
