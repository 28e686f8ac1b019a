"""Context for this scenario (see tests/conformance/ctxlib.py)."""

from ctxlib import files, hardlink, make_tar, mkdir, symlink, write  # noqa: F401

write("Cargo.toml", "[package]\nname = \"app\"\nversion = \"0.1.0\"\n")
write("Cargo.lock", "# lock\n")
write("src/main.c", "#include <stdio.h>\nint main(void){puts(\"rust-ish\");return 0;}\n")
write(".dockerignore", "target\n.git\n")
write("target/debug/junk", "junk")
