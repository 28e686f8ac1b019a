"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

files({"content/index.md": "# Home\n", "content/about.md": "# About\n", "content/posts/one.md": "# One\n"})
write("build.sh", "set -e\nfind content -name '*.md' | while read -r f; do out=public/${f#content/}; out=${out%.md}.html; mkdir -p \"$(dirname \"$out\")\"; sed 's/^# \\(.*\\)/<h1>\\1<\\/h1>/' \"$f\" > \"$out\"; done\n")
