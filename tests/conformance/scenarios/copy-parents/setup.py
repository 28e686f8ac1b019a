"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

files({"src/a/x.txt": "x", "src/b/y.txt": "y", "src/c/z.txt": "z", "lib/one/m.py": "m", "lib/one/n.py": "n", "lib/one/o.txt": "o"})
