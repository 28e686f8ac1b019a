"""Long soundness runs outside pytest (``bench/soundness.sh`` calls this).

    python tests/soundness/run.py --steps 5000            # a random seed, printed first
    python tests/soundness/run.py --steps 300 --seed 12   # the CI sequence of one chunk
    python tests/soundness/run.py --episode 123456789     # replay one episode alone
    python tests/soundness/run.py --kind network          # the probe of one kind

Kinds and projects marked in known.py are left out unless ``--with-known``. Every failure is
printed with the run's seed, the episode's seed and the step, and how to replay it; the exit
status is 1 if anything failed.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from soundness import corpus, engine, known, probes

PROG = "bench/soundness.sh"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    # SIGTERM stops the run like Ctrl-C: the coarse-timestamp mount and the work dir go
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    parser.add_argument("--episode", type=int, help="replay the episode with this seed alone")
    parser.add_argument("--kind", action="append", default=[],
                        help="run the probe of this kind (see --list; 'all': every probe)")
    parser.add_argument("--list", action="store_true", help="list kinds, projects, KNOWN")
    parser.add_argument("--with-known", action="store_true",
                        help="also draw the kinds and projects known.py marks")
    parser.add_argument("--work", type=Path, help="work directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every step")
    args = parser.parse_args(argv)
    if args.list:
        for name in probes.PROBES:
            mark = f"  KNOWN {known.KNOWN[name]}" if name in known.KNOWN else ""
            print(f"{name}{mark}")
        print("projects:", ", ".join(p.name for p in corpus.PROJECTS))
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="soundness-", dir="/var/tmp"))
    if args.kind:
        try:
            return _probes(work, list(probes.PROBES) if "all" in args.kind else args.kind,
                           args.verbose)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    excluded = {} if args.with_known else dict(known.KNOWN)
    runner = engine.Runner(work / "run", excluded, log=_progress(args.verbose))
    t0 = time.monotonic()
    seed = args.seed
    try:
        if args.episode is not None:
            engine.run_episode(runner, args.episode, engine.random_projects(excluded))
            label = f"episode {args.episode}"
        else:
            if seed is None:
                seed = random.SystemRandom().randrange(1 << 32)
            print(f"soundness: seed {seed}, {args.steps} steps", flush=True)
            engine.random_run(runner, seed, args.steps)
            label = f"seed {seed}"
    finally:
        runner.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    runner.stats.seconds = time.monotonic() - t0
    print(f"soundness {label}: {runner.stats.line()}")
    for failure in runner.failures:
        print(failure.render())
        print(f"  replay: {PROG} --episode {failure.seed}   (this episode alone, fresh "
              f"store)")
        if seed is not None:
            print(f"  or: {PROG} --seed {seed} --steps {args.steps}   (the whole run)")
    print(f"soundness {label}: {len(runner.failures)} failure(s)")
    return 1 if runner.failures else 0


def _progress(verbose: bool) -> Callable[[str], None]:
    """Every step when verbose, else a line every 100 steps (and each failing step)."""
    count = [0]
    t0 = time.monotonic()

    def log(line: str) -> None:
        count[0] += 1
        if verbose or "problem(s)" in line:
            print(line, flush=True)
        elif count[0] % 100 == 0:
            print(f"... {count[0]} steps, {time.monotonic() - t0:.0f} s", flush=True)
    return log


def _probes(work: Path, names: list[str], verbose: bool) -> int:
    """Each probe in its own store; one line each: passed, failed, or (KNOWN) as expected."""
    bad = 0
    for name in names:
        runner = engine.Runner(work / name, {}, log=print if verbose else (lambda _line: None))
        t0 = time.monotonic()
        try:
            probes.run_probe(runner, name)
        finally:
            runner.close()
        failed = bool(runner.failures)
        mark = known.KNOWN.get(name)
        verdict = ("fails, as KNOWN " + mark if failed and mark else
                   "PASSES although KNOWN " + mark + ": remove the mark" if mark else
                   "FAILED" if failed else "passed")
        bad += failed != bool(mark)
        print(f"probe {name}: {verdict} ({time.monotonic() - t0:.1f} s, "
              f"{runner.stats.steps} steps)", flush=True)
        if failed and (verbose or not mark):
            for failure in runner.failures:
                print(failure.render())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
