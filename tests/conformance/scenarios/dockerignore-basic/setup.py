"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

files({"keep.txt": "k", "a.log": "l", "keep.log": "kl", "tmp/x": "x", "dir/tmp/y": "y", "dir/b.log": "b",
       ".dockerignore": "# comment\n*.log\n!keep.log\ntmp\n\n   \n"})
