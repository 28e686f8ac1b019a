"""A no-op rebuild leaves the build history alone, and the next real change is still explained
from it (the COPY manifest is read back packed, decoded only for the explanation)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from test_build_support import build, fresh_store, needs_runtime, write_tree

pytestmark = needs_runtime

DOCKERFILE = """\
FROM busybox
COPY src/ /app/src/
"""


def _history_rows(root: Path) -> list[tuple[str, float]]:
    with sqlite3.connect(root / "dockyard.db") as db:
        rows = db.execute("SELECT info, updated FROM build_history").fetchall()
    db.close()
    return [(str(info), float(updated)) for info, updated in rows]


def test_noop_rebuild_keeps_the_history_and_explains_the_next_change(tmp_path: Path) -> None:
    root = fresh_store(tmp_path / "store")
    files: dict[str, str | bytes] = {"Dockerfile": DOCKERFILE}
    files.update({f"src/d{i}/f{j}.txt": f"{i}-{j}\n" for i in range(3) for j in range(20)})
    ctx = write_tree(tmp_path / "ctx", files)
    first = build(ctx, root)
    assert not first.step(2).cached
    written = _history_rows(root)
    assert len(written) == 1

    second = build(ctx, root)
    assert second.result.cached_all
    assert second.step(2).key == first.step(2).key
    assert _history_rows(root) == written  # nothing changed, nothing rewritten

    (ctx / "src" / "d1" / "f7.txt").write_text("changed\n")
    third = build(ctx, root)
    reason = third.step(2).reason or ""
    assert "1 file changed: src/d1/f7.txt (content)" in reason
    assert _history_rows(root) != written

    fourth = build(ctx, root)  # and the record the third build wrote serves the next one
    assert fourth.result.cached_all
    (ctx / "src" / "d2" / "new.txt").write_text("new\n")
    fifth = build(ctx, root)
    assert "1 file changed: src/d2/new.txt (added)" in (fifth.step(2).reason or "")
