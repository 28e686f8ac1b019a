"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

write("real.txt", "real\n")
mkdir("realdir")
write("realdir/inner", "inner\n")
symlink("real.txt", "rel-link")
symlink("/etc/passwd", "abs-link")
symlink("missing-target", "dangling")
symlink("realdir", "linkdir")
symlink("../real.txt", "realdir/up-link")
