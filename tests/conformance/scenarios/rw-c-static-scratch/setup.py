"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

write("util.h", "int add(int a, int b);\n")
write("util.c", "#include \"util.h\"\nint add(int a, int b){return a+b;}\n")
write("hello.c", "#include <stdio.h>\n#include \"util.h\"\nint main(void){printf(\"%d\\n\", add(2,3));return 0;}\n")
