"""Issue 12, item 8: the caller's umask never reaches the image. Every directory dockyard
itself creates (WORKDIR, the parents of an ADD'ed archive's entries, COPY destinations, the
snapshot roots a RUN sees as ``/``, a RUN's missing working directory) gets BuildKit's 0755,
and RUN steps behave the same (a non-root user can read ``/``). The same Dockerfile built
under umask 022, 077 and 000, each in a fresh store, gives the same file tree with the same
modes."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_build_support import BASE, build, flatten, fresh_store, needs_runtime, write_tree

pytestmark = needs_runtime

DOCKERFILE = f"""\
FROM {BASE} AS base
WORKDIR /w/deep/er
ADD implicit.tar /arch/a/b
ADD implicit.tar /arch2/
COPY plain /c/d/e/plain
COPY --parents tree/sub/deeper/f /par/
COPY tree /ctree
COPY <<EOT /h/i/j/
hello
EOT
WORKDIR /cw/x
RUN rm -rf /cw
RUN pwd > /cwd-seen && stat -c '%a %n' /cw /cw/x > /cwd-modes
USER nobody
RUN ls / > /dev/null && stat -c '%a' / > /tmp/root-mode
USER root
RUN cp /tmp/root-mode /root-mode && umask > /run-umask

FROM scratch AS bare
COPY plain /s/t/
WORKDIR /sw/x

FROM base
RUN --mount=type=bind,from=bare,target=/m/n/o su nobody -s /bin/sh -c 'ls /m/n/o/s' > /mount-seen
"""


def _implicit_parents_tar() -> bytes:
    """A tar with one file and none of its directories (its parents are made on ADD)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        data = b"content\n"
        info = tarfile.TarInfo("p/q/r/file")
        info.size = len(data)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _tree(root: Path) -> dict[str, tuple[int, int, int, int]]:
    """path -> (type, permission bits, uid, gid) of everything below ``root``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            out[str(path.relative_to(root))] = (
                stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return out


@pytest.mark.parametrize("snapshotter", ["overlay", "native"])
def test_the_callers_umask_never_reaches_the_image(tmp_path: Path, snapshotter: str) -> None:
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": DOCKERFILE,
        "implicit.tar": _implicit_parents_tar(),
        "plain": "x\n",
        "tree/sub/deeper/f": "hi\n",
    })
    trees: dict[int, dict[str, tuple[int, int, int, int]]] = {}
    for mask in (0o022, 0o077, 0o000):
        root = fresh_store(tmp_path / f"store-{mask:03o}")
        with _umask(mask):
            build(ctx, root, tags=["img"], snapshotter=snapshotter)
        fs = flatten(root, "img", tmp_path / f"fs-{mask:03o}")
        trees[mask] = _tree(fs)
        for made in ("w", "w/deep", "w/deep/er", "arch/a/b/p", "arch/a/b/p/q/r",
                     "arch2/p/q", "c/d/e", "par", "h/i/j", "cw", "cw/x"):
            assert trees[mask][made][1] == 0o755, (oct(mask), made)
        assert (fs / "root-mode").read_text() == "755\n"
        assert (fs / "run-umask").read_text() == "0022\n"
        assert (fs / "cwd-modes").read_text() == "755 /cw\n755 /cw/x\n"
        assert (fs / "mount-seen").read_text() == "t\n"
    assert trees[0o077] == trees[0o022]
    assert trees[0o000] == trees[0o022]
    bare_root = fresh_store(tmp_path / "store-bare")
    with _umask(0o077):
        build(ctx, bare_root, tags=["bare"], target="bare", snapshotter=snapshotter)
    bare = _tree(flatten(bare_root, "bare", tmp_path / "fs-bare"))
    assert bare["sw"][1] == bare["sw/x"][1] == bare["s"][1] == 0o755
