#!/usr/bin/env bash
# The soundness test of issue 12, long: random mutation sequences over the corpus of
# tests/soundness, every build compared with a --no-cache build of the same inputs in a fresh
# store. Not a timing benchmark: it hunts for a cached result that differs from a fresh one.
#
#   bench/soundness.sh                      # 5,000 steps, a random seed (printed first)
#   bench/soundness.sh --seed 12 --steps 80 # replay a run (CI runs seeds 12..15, 80 steps each)
#   bench/soundness.sh --episode N          # replay one failing episode alone
#   bench/soundness.sh --kind all           # every probe (KNOWN ones must fail)
#   bench/soundness.sh --list               # kinds, projects and the KNOWN marks
#
# Every failure is printed with its seed, episode and step and how to replay it; the exit
# status is 1 if anything failed. Needs root, crun or runc, busybox-static (scripts/setup.sh).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
args=("$@")
if [[ " ${args[*]-} " != *" --steps "* && " ${args[*]-} " != *" --episode "* \
      && " ${args[*]-} " != *" --kind "* && " ${args[*]-} " != *" --list "* ]]; then
  args+=(--steps 5000)
fi
exec "$REPO/.venv/bin/python" "$REPO/tests/soundness/run.py" "${args[@]}"
