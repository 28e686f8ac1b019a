"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

files({"a": "a", "dir/b": "b", "dir/sub/c": "c"})
write("sg", "sg", mode=0o2755)  # a source special bit survives an octal --chmod
write("suid-a", "a", mode=0o4755)  # the reference's stand-in for COPY --chmod=4755
