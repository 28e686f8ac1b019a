#!/usr/bin/env bash
# Run the whole test suite: lint (ruff), types (mypy --strict), unit, integration and
# conformance tests. Sets up what it needs first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WITH_PEERS=${WITH_PEERS-1} scripts/setup.sh
. .venv/bin/activate
echo "== ruff"; ruff check src tests
echo "== mypy"; mypy
echo "== pytest"
python -m pytest -p no:cacheprovider -n "${TEST_JOBS:-2}" "$@"
