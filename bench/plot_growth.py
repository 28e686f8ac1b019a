"""Plot the growth series (issue 18): each builder's wall time against the context's size.

    .venv/bin/python bench/plot_growth.py RAW_CSV OUT.png [--note TEXT] [--peers dockyard,docker_buildkit]

Reads a bench.sh ``raw.csv`` with the cases growth-1x, growth-4x, growth-16x (bigctx's
context at 1x, 4x, 16x of its 5,003 files and 150 MiB) and draws one panel per mode (cold,
no-op, one-file change): median wall seconds against context size, log-log, one line per
peer, with the min-max range as error bars. A straight line of slope 1 is linear growth; a
flat one costs the same at every size. Needs matplotlib (the `bench` extra:
WITH_BENCH=1 scripts/setup.sh).
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

SCALES = {"growth-1x": 1, "growth-4x": 4, "growth-16x": 16}
BASE_FILES, BASE_MB = 5003, 3 * 50 * 1.048576  # bigctx: 5,000 small + 3 big files, 150 MiB
MODES = (("cold", "cold"), ("cached", "no-op rebuild"), ("change", "one-file change"))
LABELS = {"dockyard": "dockyard", "docker_buildkit": "BuildKit (dockerd 20.10)",
          "buildah_overlay": "Buildah (overlay)"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("raw")
    ap.add_argument("out")
    ap.add_argument("--note", default="")
    ap.add_argument("--peers", default="dockyard,docker_buildkit,buildah_overlay")
    a = ap.parse_args()
    walls: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    with open(a.raw, newline="") as f:
        for row in csv.DictReader(f):
            if row["case"] in SCALES and row["rc"] == "0" and row["wall_s"]:
                walls[(row["peer"], row["mode"], SCALES[row["case"]])].append(float(row["wall_s"]))
    peers = [p for p in a.peers.split(",") if any(k[0] == p for k in walls)]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for ax, (mode, title) in zip(axes, MODES, strict=True):
        for peer in peers:
            xs, ys, lo, hi = [], [], [], []
            for scale in sorted(SCALES.values()):
                w = walls.get((peer, mode, scale))
                if not w:
                    continue
                med = statistics.median(w)
                xs.append(BASE_MB * scale)
                ys.append(med)
                lo.append(med - min(w))
                hi.append(max(w) - med)
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=LABELS.get(peer, peer))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks([BASE_MB * s for s in sorted(SCALES.values())])
        ax.set_xticklabels([f"{s}x\n{BASE_FILES * s:,} files\n{BASE_MB * s:,.0f} MB"
                            for s in sorted(SCALES.values())], fontsize=8)
        ax.minorticks_off()
        ax.set_title(title)
        ax.set_ylabel("wall seconds (median)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("bigctx's context at 1x, 4x, 16x: build time against size"
                 + (f"\n{a.note}" if a.note else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(a.out, dpi=100)


if __name__ == "__main__":
    main()
