"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

files({"a.pyc": "1", "pkg/b.pyc": "2", "pkg/sub/c.pyc": "3", "pkg/c.py": "4",
       "node_modules/x/i.js": "5", "web/node_modules/y/j.js": "6", "web/app.js": "7",
       "docs/build/out.html": "8", "build/keep-not": "9", "src/build/inner": "10",
       ".dockerignore": "**/*.pyc\n**/node_modules\n/build\ndocs/**/*.html\n"})
