"""dockyard._dccache: dataclass methods compiled once and reused from a marshal file behave
exactly as the standard ones (same output from the same classes, with and without it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = r'''
import json, sys
use = sys.argv[1] == "1"
if use:
    import dockyard._dccache as dc
    dc.install()
import dataclasses
from dataclasses import dataclass, field

@dataclass(frozen=True)
class Point:
    x: int
    y: int = 2
    tags: tuple[str, ...] = ()

@dataclass(order=True)
class Item:
    name: str
    items: list[int] = field(default_factory=list)
    hidden: int = field(default=7, init=False, repr=False)

@dataclass(frozen=True, kw_only=True)
class Opts:
    a: str
    b: bool = False

out = {}
p = Point(1)
out["repr"] = [repr(p), repr(Item("a")), repr(Opts(a="z"))]
out["eq"] = [p == Point(1, 2), p == Point(1, 3), hash(p) == hash(Point(1))]
try:
    p.x = 5  # type: ignore
    out["frozen"] = "assigned"
except dataclasses.FrozenInstanceError as err:
    out["frozen"] = str(err)
i, j = Item("a"), Item("b", [1])
i.items.append(3)
out["item"] = [i.items, Item("c").items, i < j, i.hidden, dataclasses.astuple(j)]
out["replace"] = repr(dataclasses.replace(p, y=9))
try:
    Opts("positional")  # type: ignore
    out["kw"] = "accepted"
except TypeError:
    out["kw"] = "refused"
out["compiled"] = (len(dc._cache), dc._dirty) if use else None
print(json.dumps(out))
'''


def _probe(use: bool, cache: Path) -> dict[str, object]:
    env = {**os.environ, "DOCKYARD_DCCACHE": str(cache)}
    proc = subprocess.run([sys.executable, "-c", PROBE, "1" if use else "0"], env=env,
                          capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(proc.stdout)
    return result


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="only CPython 3.11 is patched")
def test_cached_methods_behave_like_the_standard_ones(tmp_path: Path) -> None:
    cache = tmp_path / "dc.marshal"
    plain = _probe(False, cache)
    assert not cache.exists()
    first = _probe(True, cache)
    assert cache.exists()
    second = _probe(True, cache)
    compiled = [run.pop("compiled") for run in (first, second)]
    assert compiled[0] == [compiled[0][0], True]  # type: ignore[index]
    assert compiled[1] == [compiled[0][0], False]  # all reused: nothing compiled anew
    plain.pop("compiled")
    assert first == plain == second
    assert plain["frozen"] == "cannot assign to field 'x'"
    # corrupt file: ignored, rewritten
    cache.write_bytes(b"\x00not marshal")
    assert {k: v for k, v in _probe(True, cache).items() if k != "compiled"} == plain
