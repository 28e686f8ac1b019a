"""Issue 12: a chmod of the context directory itself changes nothing ``COPY . /x`` makes
(the destination is made 0755; BuildKit never receives the root's own metadata), so it hits,
as BuildKit does. A subdirectory's mode is in the key, as in BuildKit's content hash."""

from __future__ import annotations

import os
from pathlib import Path

from test_build_support import BASE, build, flatten, fresh_store, needs_runtime, write_tree

pytestmark = needs_runtime

DOCKERFILE = f"FROM {BASE}\nCOPY . /x\nRUN stat -c '%a %n' /x /x/sub > /modes\n"


def _tree(root: Path) -> dict[str, tuple[int, bytes | None]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            data = open(path, "rb").read() if name in filenames else None  # noqa: SIM115
            out[os.path.relpath(path, root)] = (st.st_mode, data)
    return out


def test_a_chmod_of_the_context_directory_hits(tmp_path: Path) -> None:
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, "a.txt": "a\n",
                                        "sub/b.txt": "b\n"})
    root = fresh_store(tmp_path / "store")
    first = build(ctx, root, tags=["img"])
    os.chmod(ctx, 0o700)
    second = build(ctx, root, tags=["img"])
    assert second.result.cached_all
    assert second.step(2).key == first.step(2).key
    fresh = fresh_store(tmp_path / "fresh")
    ref = build(ctx, fresh, tags=["img"], no_cache=True)
    assert ref.step(2).key == second.step(2).key
    assert _tree(flatten(root, "img", tmp_path / "fs")) == _tree(
        flatten(fresh, "img", tmp_path / "ref"))
    assert (tmp_path / "fs" / "modes").read_text() == "755 /x\n755 /x/sub\n"
    os.chmod(ctx / "sub", 0o700)  # copied with its mode: a miss
    third = build(ctx, root, tags=["img"])
    assert not third.step(2).cached
    assert "sub (mode 755 -> 700)" in (third.step(2).reason or "")
