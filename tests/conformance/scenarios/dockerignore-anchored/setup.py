"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

files({"tmp/a": "1", "src/tmp/b": "2", "temp1": "3", "dir/temp2": "4", "dir/sub/temp3": "5",
       "cache/x": "6", "cache/keep/y": "7", "out.log": "8", "nested/out.log": "9", "keep.txt": "k",
       ".dockerignore": "./tmp\n*/temp*\n/cache/*\n!cache/keep\n/*.log\n# a comment\n\n"})
