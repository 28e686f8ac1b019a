"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

files({"logs/a.log": "a", "logs/keep/b.log": "b", "logs/important.log": "i", "secrets/s1": "s", "secrets/public": "p",
       "x.md": "x", "README.md": "r", "Dockerfile.extra": "d",
       ".dockerignore": "logs\n!logs/important.log\n!logs/keep\nsecrets/*\n!secrets/public\n*.md\n!README.md\n.dockerignore\n"})
