"""Ratios of dockyard's median wall time to BuildKit's, from a bench.sh ``raw.csv``.

    python3 bench/ratios.py RAW_CSV [PEER [REFERENCE]] [--logs DIR] [--no-age-check]

Only runs that succeeded count. Prints a markdown table: per case, the medians of both peers
for cold / cached (no-op) / one-file change, and the ratio (below 1.0 = faster than BuildKit),
with the cache hits each reported (dockyard / reference; BuildKit also prints `CACHED` for
internal vertices, so its count can be higher by one) and, when the raw.csv has bench/run.sh's
`maxrss_kb` column, the peer's peak RSS. Failed builds (e.g. a timeout) are listed below it.
When both `runone-*` cases ran, it also prints issue 18's "one-file RUN on bigroot against
the same on busybox" ratio (change builds), for each peer.

Then, for the change builds, the time each peer spent outside its longest step (issue 18:
"except where the changed step itself dominates ... report it against the time of the step
itself"). Both builders print `#N DONE 2.1s` per step in their `--progress plain` log (their
own clock, 0.1 s resolution); per build the longest such step is taken, and per case and peer
the table gives the medians of the wall time, the longest step and wall - longest step, and
the ratio of the peer's wall - step to the reference's. The logs are bench.sh's
`<peer>.<case>.<mode>.<run>.log` in DIR: `--logs DIR`, else `../logs/bench` beside the
raw.csv's folder (bench.sh's default OUT is `$PEERS_WORK/results`), else
`$PEERS_WORK/logs/bench`, else `/var/tmp/peers-bench/logs/bench` (the peers' default
PEERS_WORK). A later run overwrites the logs: a log written after the raw.csv (mtime), or
whose cache hits differ from the raw.csv row's, is left out and said so (`--no-age-check`
drops the mtime test, for logs copied without their times).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

MODES = ("cold", "cached", "change")

# bench.sh counts cache hits with `grep -cE '(Using cache|^#[0-9]+ CACHED)'`
_HIT = re.compile(r"(Using cache|^#[0-9]+ CACHED)")
_DONE = re.compile(r"^#(\d+) DONE (\d+(?:\.\d+)?)s\s*$")
_VERTEX_LINE = re.compile(r"^#(\d+) (.*)$")
_STEP_TITLE = re.compile(r"^\[[^\]]*\b\d+/\d+\] ")
# a log written this long after the raw.csv's last write is another run's
_AGE_SLACK_S = 1.0


@dataclass(frozen=True)
class Step:
    """One vertex of a plain progress log: its title (the block's first line) and the longest
    `DONE` time it reported (BuildKit can print a vertex's block, with DONE, twice)."""

    vertex: int
    title: str
    seconds: float


def parse_steps(text: str) -> dict[int, Step]:
    """Every vertex of a `--progress plain` log (BuildKit's or dockyard's) that printed
    `#N DONE <t>s`. A vertex's title is the first line of its first block (a `#N ...` line at
    the start of the log or after a blank line); CACHED vertices have no DONE and are left
    out."""
    titles: dict[int, str] = {}
    steps: dict[int, Step] = {}
    block_start = True
    for line in text.splitlines():
        if not line.strip():
            block_start = True
            continue
        m = _VERTEX_LINE.match(line)
        if m is None:
            block_start = False
            continue
        vertex = int(m.group(1))
        if block_start:
            titles.setdefault(vertex, m.group(2).strip())
        block_start = False
        done = _DONE.match(line)
        if done is not None:
            seconds = float(done.group(2))
            known = steps.get(vertex)
            if known is None or seconds > known.seconds:
                steps[vertex] = Step(vertex, titles.get(vertex, ""), seconds)
    return steps


def is_dockerfile_step(title: str) -> bool:
    """`[stage n/m] INSTRUCTION ...` (both builders); not BuildKit's `[internal] ...` or
    `exporting to image`, which are no Dockerfile step (and dockyard does not print them)."""
    return _STEP_TITLE.match(title) is not None and not title.startswith("[internal]")


def longest_steps(text: str) -> list[Step]:
    """The Dockerfile steps that share the longest DONE time (vertex order; more than one on a
    tie at the logs' 0.1 s resolution), or [] when the log has no step time."""
    steps = [s for s in parse_steps(text).values() if is_dockerfile_step(s.title)]
    if not steps:
        return []
    top = max(s.seconds for s in steps)
    return sorted((s for s in steps if s.seconds == top), key=lambda s: s.vertex)


def cache_hits(text: str) -> int:
    """Cache hits as bench.sh counts them in a log (lines, not matches)."""
    return sum(1 for line in text.splitlines() if _HIT.search(line))


def default_log_dir(raw_csv: Path, env: dict[str, str] | None = None) -> Path:
    """Where bench.sh wrote the logs of the run that wrote `raw_csv` (see the module doc)."""
    env = dict(os.environ) if env is None else env
    beside = raw_csv.resolve().parent.parent / "logs" / "bench"
    if beside.is_dir():
        return beside
    if env.get("PEERS_WORK"):
        return Path(env["PEERS_WORK"]) / "logs" / "bench"
    return Path("/var/tmp/peers-bench/logs/bench")


@dataclass(frozen=True)
class Run:
    """One successful build of raw.csv."""

    peer: str
    case: str
    mode: str
    run: str
    wall: float
    hits: str


def step_of(run: Run, log_dir: Path, not_after: float | None) -> tuple[list[Step], str]:
    """The longest steps of `run`'s log (see `longest_steps`), or [] and why not (never
    raises)."""
    path = log_dir / f"{run.peer}.{run.case}.{run.mode}.{run.run}.log"
    try:
        if not_after is not None and path.stat().st_mtime > not_after + _AGE_SLACK_S:
            return [], "log newer than raw.csv"
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return [], "no log"
    except OSError as err:
        return [], f"log unreadable ({err.strerror or err})"
    if run.hits.isdigit() and cache_hits(text) != int(run.hits):
        return [], f"log has {cache_hits(text)} hits, raw.csv {run.hits}"
    steps = longest_steps(text)
    if not steps:
        return [], "no step time in log"
    return steps, ""


def _short(title: str, width: int = 48) -> str:
    title = title.replace("|", "\\|")
    return title if len(title) <= width else title[: width - 3] + "..."


def outside_longest_step(runs: list[Run], peer: str, ref: str, log_dir: Path,
                         not_after: float | None, mode: str = "change") -> list[str]:
    """Markdown lines: per case (in raw.csv's order) and peer, the medians of wall, longest
    step and wall - longest step of the `mode` builds, and peer's wall - step over ref's."""
    by_key: dict[tuple[str, str], list[Run]] = defaultdict(list)
    cases: list[str] = []
    for r in runs:
        if r.mode != mode or r.peer not in (peer, ref):
            continue
        by_key[(r.case, r.peer)].append(r)
        if r.case not in cases:
            cases.append(r.case)
    lines = [
        f"| case | peer | runs | wall (median s) | longest step (median s) "
        f"| wall - step (median s) | ratio ({peer} / {ref}) | longest step / notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        outside: dict[str, float] = {}
        cells: dict[str, list[str]] = {}
        for p in (peer, ref):
            builds = by_key.get((case, p), [])
            if not builds:
                continue
            walls, longest, rest, titles, notes = [], [], [], Counter[str](), []
            for r in builds:
                steps, why = step_of(r, log_dir, not_after)
                if not steps:
                    notes.append(f"#{r.run}: {why}")
                    continue
                walls.append(r.wall)
                longest.append(steps[0].seconds)
                rest.append(r.wall - steps[0].seconds)
                titles[_short(steps[0].title) if len(steps) == 1
                       else f"{len(steps)} steps tie at {steps[0].seconds:.1f} s"] += 1
            n = f"{len(rest)}/{len(builds)}"
            if not rest:
                cells[p] = [case, p, n, "-", "-", "-", "-", "; ".join(notes)]
                continue
            outside[p] = statistics.median(rest)
            title = titles.most_common(1)[0][0]
            about = title + (f" ({titles[title]} of {len(rest)} runs)" if len(titles) > 1 else "")
            cells[p] = [case, p, n, f"{statistics.median(walls):.2f}",
                        f"{statistics.median(longest):.2f}", f"{outside[p]:.2f}", "",
                        "; ".join([about, *notes])]
        if peer in cells:
            a, b = outside.get(peer), outside.get(ref)
            cells[peer][6] = f"{a / b:.2f}x" if a is not None and b is not None and b > 0 else "-"
        lines += ["| " + " | ".join(cells[p]) + " |" for p in (peer, ref) if p in cells]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw_csv", type=Path)
    parser.add_argument("peer", nargs="?", default="dockyard")
    parser.add_argument("ref", nargs="?", default="docker_buildkit")
    parser.add_argument("--logs", type=Path, help="bench.sh's log folder (default: see above)")
    parser.add_argument("--no-age-check", action="store_true",
                        help="use logs written after the raw.csv too")
    args = parser.parse_args(argv)
    path, peer, ref = args.raw_csv, args.peer, args.ref
    walls: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    hits: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    rss: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    failed: list[str] = []
    cases: list[str] = []
    ok_runs: list[Run] = []
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
            ok_runs.append(Run(row["peer"], row["case"], row["mode"], row["run"],
                               float(row["wall_s"]), row["cache_hits"]))
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
    if any(r.mode == "change" for r in ok_runs):
        log_dir = args.logs or default_log_dir(path)
        print(f"\nchange builds outside their longest step (step times: `#N DONE` of {log_dir}):")
        if not log_dir.is_dir():
            print(f"\nno log folder {log_dir} (give one with --logs)")
            return
        not_after = None if args.no_age_check else path.stat().st_mtime
        print()
        print("\n".join(outside_longest_step(ok_runs, peer, ref, log_dir, not_after)))


if __name__ == "__main__":
    main()
