"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

files({"package.json": "{}", "public/index.html": "<html></html>", "public/.gitkeep": "", "src/a.js": "a();\n", "src/b.js": "b();\n"})
