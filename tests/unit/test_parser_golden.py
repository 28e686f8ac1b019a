"""Golden files: tests/unit/testdata/parser/<case>/Dockerfile -> expected.dump (or expected.error).

expected.dump is BuildKit's ``Node.Dump()`` output; the same inputs are checked against the Go
parser in test_parser_differential.py, so these files are BuildKit's answers, not ours.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.dockerfile.parser import parse
from dockyard.errors import DockerfileError

CASES = sorted(p for p in (Path(__file__).parent / "testdata" / "parser").iterdir() if p.is_dir())


def test_enough_cases() -> None:
    assert len(CASES) >= 25


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden(case: Path) -> None:
    text = (case / "Dockerfile").read_bytes().decode("utf-8", "surrogateescape")
    dump_file, error_file = case / "expected.dump", case / "expected.error"
    if error_file.exists():
        with pytest.raises(DockerfileError) as info:
            parse(text)
        assert str(info.value) + "\n" == error_file.read_text(encoding="utf-8")
    else:
        result = parse(text)
        got = "".join(node.dump() + "\n" for node in result.nodes)
        assert got == dump_file.read_text(encoding="utf-8")
