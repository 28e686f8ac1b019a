"""Ratios of dockyard's median wall time to BuildKit's, from a bench.sh ``raw.csv``.

    python3 bench/ratios.py /var/tmp/peers-bench/results/raw.csv [PEER [REFERENCE]]

Only runs that succeeded count. Prints a markdown table: per case, the medians of both peers
for cold / cached (no-op) / one-file change, and the ratio (below 1.0 = faster than BuildKit),
with the cache hits each reported (dockyard / reference; BuildKit also prints `CACHED` for
internal vertices, so its count can be higher by one) and, when the raw.csv has bench/run.sh's
`maxrss_kb` column, the peer's peak RSS. Failed builds (e.g. a timeout) are listed below it.
When both `runone-*` cases ran, it also prints issue 18's "one-file RUN on bigroot against
the same on busybox" ratio (change builds), for each peer.
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
    hits: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    rss: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    failed: list[str] = []
    cases: list[str] = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            key = (row["case"], row["peer"], row["mode"])
            if row["case"] not in cases:
                cases.append(row["case"])
            if row["rc"] != "0" or not row["wall_s"]:
                failed.append(f"{row['peer']} {row['case']} {row['mode']} #{row['run']} (rc {row['rc']})")
                continue
            walls[key].append(float(row["wall_s"]))
            hits[key].add(row["cache_hits"])
            if row.get("maxrss_kb"):
                rss[key].append(int(row["maxrss_kb"]))
    print(f"| case | mode | {peer} (median s) | {ref} (median s) | ratio | hits | {peer} peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for case in cases:
        for mode in MODES:
            mine, theirs = walls.get((case, peer, mode)), walls.get((case, ref, mode))
            if not mine:
                continue
            a = statistics.median(mine)
            b = statistics.median(theirs) if theirs else None
            h = "/".join(sorted(hits[(case, peer, mode)])) + " / " + (
                "/".join(sorted(hits[(case, ref, mode)])) or "-")
            m = rss.get((case, peer, mode))
            mb = f"{max(m) / 1024:.0f}" if m else ""
            ratio = f"{a / b:.2f}x" if b else "-"
            bs = f"{b:.2f}" if b is not None else "-"
            print(f"| {case} | {mode} | {a:.2f} | {bs} | {ratio} | {h} | {mb} |")
    if failed:
        print("\nfailed builds: " + ", ".join(failed))
    runone = [(p, walls.get(("runone-bigroot", p, "change")), walls.get(("runone-busybox", p, "change")))
              for p in (peer, ref)]
    if any(big and small for _, big, small in runone):
        print("\none-file RUN (change build: COPY + RUN), bigroot / busybox:")
        for p, big, small in runone:
            if big and small:
                x, y = statistics.median(big), statistics.median(small)
                print(f"- {p}: {x:.2f} s / {y:.2f} s = {x / y:.2f}x")


if __name__ == "__main__":
    main()
