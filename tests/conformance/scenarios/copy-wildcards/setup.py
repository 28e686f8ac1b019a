"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

files({"one.txt": "1", "two.txt": "2", "c.md": "c", "dir/x": "x", "dar/y": "y", "dar/sub/z": "z",
       "a.c": "a", "b.c": "b", "c.c": "c", "nested/p/file": "p", "nested/q/file": "q"})
mkdir("nothing-matches-dir-ok")
write("nothing-matches-dir-ok/k", "k")
