"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

files({"go.mod": "module app\n", "go.sum": "", "vendor/dep.h": "#define DEP 1\n",
       "cmd/app/main.c": "#include \"dep.h\"\nint main(void){return DEP-1;}\n"})
