#!/usr/bin/env python3
"""Frontend speed (issue 2): parse a 5,000-line Dockerfile; time `dockyard --version`.

Targets: parse under 50 ms; `dockyard --version` under 100 ms (whole process).
usage: .venv/bin/python bench/bench_frontend.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path


def make_dockerfile(lines: int = 5000) -> str:
    """A varied Dockerfile of about ``lines`` lines (continuations, heredocs, JSON, flags)."""
    out = ["# syntax=docker/dockerfile:1", "ARG BASE=busybox", "FROM ${BASE} AS build"]
    i = 0
    while len(out) < lines:
        i += 1
        out += [
            f"ENV K{i}=v{i} P{i}=\"quoted value {i}\"",
            f"RUN echo step {i} && \\",
            f"    echo continued {i} \\",
            "    # a comment inside a continuation",
            f"    && touch /f{i}",
            f"COPY --chown=1000:1000 --chmod=644 src/{i}.txt /dst/{i}/",
            f"LABEL l{i}=\"x\" m{i}=y",
            f'CMD ["/bin/app", "--n", "{i}"]',
            f"RUN <<EOF\necho heredoc {i}\nEOF",
        ]
    return "\n".join(out[:lines]) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    a = ap.parse_args()
    from dockyard.dockerfile.parser import parse

    text = make_dockerfile()
    parse_times = []
    for _ in range(a.runs):
        t = time.perf_counter()
        result = parse(text)
        parse_times.append(time.perf_counter() - t)
    exe = Path(sys.executable).with_name("dockyard")
    version_times = []
    for _ in range(a.runs):
        t = time.perf_counter()
        subprocess.run([str(exe), "--version"], check=True, capture_output=True)
        version_times.append(time.perf_counter() - t)
    py_times = []
    for _ in range(a.runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        py_times.append(time.perf_counter() - t)
    print(f"parse {len(text.splitlines())} lines ({len(result.nodes)} instructions): "
          f"median {statistics.median(parse_times) * 1000:.1f} ms, "
          f"min {min(parse_times) * 1000:.1f} ms (target < 50 ms)")
    print(f"dockyard --version: median {statistics.median(version_times) * 1000:.0f} ms, "
          f"min {min(version_times) * 1000:.0f} ms (target < 100 ms); "
          f"bare python start: median {statistics.median(py_times) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
