"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

files({"keep.txt": "k\n", "secret.key": "s\n", ".git/VERSION": "1\n", "sub/a.log": "l\n",
       "sub/b.txt": "b\n", "sub/keep.log": "kl\n",
       ".dockerignore": ".git\n*.key\nsub/*.log\n!sub/keep.log\n"})
