"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

files({"a.txt": "a\n", "b.txt": "bb\n", "c.txt": "ccc\n", "dir/x": "x\n", "dir/y": "yy\n"})
