"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

entries = [("dir", "top", (0o755, 0, 0)),
           ("file", "top/f.txt", ("content\n", 0o640, 1234, 5678)),
           ("file", "top/exec", ("#!/bin/sh\n", 0o4755, 0, 0)),
           ("dir", "top/private", (0o700, 1000, 1000)),
           ("symlink", "top/link", "f.txt"),
           ("hardlink", "top/hard", "top/f.txt")]
make_tar("archive.tar.gz", entries, "w:gz")
make_tar("archive.tar", entries, "w")
write("notarchive.tar.gz", "this is not gzip\n")
