"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

make_tar("a.tar", [("dir", "top", (0o750, 0, 0)), ("file", "top/f.txt", ("new\n", 0o600, 0, 0))], "w")
