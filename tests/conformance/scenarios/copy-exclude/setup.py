"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

files({"app/main.sh": "m", "app/debug.log": "l", "app/sub/keep.log": "k", "app/tmp/x": "x", "app/sub/tmp": "t"})
