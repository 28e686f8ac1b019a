"""The layer walk through directory descriptors (``_walk_at``, regular files read and their
xattrs listed through their own descriptor) writes the same bytes as the path-by-path route
(``paths=``, which ``lstat``s and opens every entry by its full path), for any tree."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockyard.layers.tarwriter import write_layer_from_dir

NAMES = st.sampled_from(["a", "b", "é", "x" * 120, "sub", ".wh.not"])
TREES = st.dictionaries(
    st.lists(NAMES, min_size=1, max_size=3).map("/".join),
    st.sampled_from(["file", "dir", "link", "hardlink", "fifo", "xattr", "big"]),
    min_size=1, max_size=14,
)


def _make(root: Path, tree: dict[str, str]) -> list[str]:
    root.mkdir()
    first_file: Path | None = None
    for rel, kind in sorted(tree.items()):
        path = root / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind == "dir":
                path.mkdir()
            elif kind == "link":
                os.symlink("../somewhere", path)
            elif kind == "fifo":
                os.mkfifo(path)
            elif kind == "hardlink" and first_file is not None:
                os.link(first_file, path)
            else:
                path.write_bytes(os.urandom(300_000) if kind == "big" else rel.encode())
                first_file = first_file or path
                if kind == "xattr":
                    with contextlib.suppress(OSError):  # a file system without them
                        os.setxattr(path, "user.k", b"v")
            os.utime(path, (1_600_000_000, 1_600_000_000), follow_symlinks=False)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            continue
    return [os.path.relpath(os.path.join(d, n), root)
            for d, dirs, files in os.walk(root) for n in dirs + files]


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=TREES, sde=st.sampled_from([None, 1_500_000_000]))
def test_the_descriptor_walk_writes_what_the_path_walk_writes(
    tmp_path_factory: pytest.TempPathFactory, tree: dict[str, str], sde: int | None,
) -> None:
    root = tmp_path_factory.mktemp("layer") / "root"
    entries = _make(root, tree)
    walked, listed = io.BytesIO(), io.BytesIO()
    a = write_layer_from_dir(root, walked, source_date_epoch=sde, overlay_whiteouts=True)
    b = write_layer_from_dir(root, listed, source_date_epoch=sde, overlay_whiteouts=True,
                             paths=entries)
    assert walked.getvalue() == listed.getvalue()
    assert a == b
    assert a.diff_id == "sha256:" + hashlib.sha256(walked.getvalue()).hexdigest()
