"""The test tree has no __init__.py files (rootdir-relative module names), so two test files
with one basename in different folders make pytest stop collecting one of them ("import
file mismatch"), which only the whole-suite run (CI) shows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent


def test_every_test_file_has_a_unique_basename() -> None:
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []
