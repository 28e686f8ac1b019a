"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

write("go.mod", "module example.invalid/server\n\ngo 1.22\n")
write("main.c", "#include <stdio.h>\nint main(void){puts(\"serving\");return 0;}\n")
