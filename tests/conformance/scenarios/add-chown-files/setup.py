"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

files({"plain.txt": "p", "dir/x": "x"})
make_tar("a.tar", [("file", "f", ("f\n", 0o644, 42, 42))], "w")
