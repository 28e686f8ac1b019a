#!/usr/bin/env python3
"""Generate a node_modules-like context of 100,000 small files (deterministic content).

usage: gen.py OUTDIR [--modules 90000] [--src 10000]

node_modules/: packages (a fifth of them scoped, `@scopeN/name`) of 60-140 files each:
package.json, README.md, LICENSE, index.js, lib/**.js, dist/*.min.js, types/*.d.ts, in
directories up to four levels deep, 60 B-16 KiB (median ~1 KiB), as npm leaves them.
src/: the app, 10,000 files in components/cNNN/ and util/, the part a .dockerignore of
`node_modules` keeps. Both sizes are file counts; the same arguments give the same tree.
"""

from __future__ import annotations

import argparse
import json
import os
import random

WORDS = ["function", "return", "const", "let", "var", "export", "import", "default", "module", "require", "this", "value", "state", "props", "render", "options", "config", "callback", "promise", "resolve", "reject", "error", "buffer", "stream", "length", "index", "array", "object", "string", "number"]


def body(rng: random.Random, n: int) -> bytes:
    out: list[str] = []
    size = 0
    while size < n:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + ";\n"
        out.append(line)
        size += len(line)
    return "".join(out).encode()[:n]


def size(rng: random.Random) -> int:
    # log-uniform 60 B .. 16 KiB: most files around 1 KiB, a few big ones
    return int(60 * (16384 / 60) ** rng.random())


def write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def package(rng: random.Random, root: str, name: str, nfiles: int) -> None:
    meta = {"name": name, "version": f"{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}",
            "main": "index.js", "license": "MIT"}
    write(os.path.join(root, "package.json"), json.dumps(meta, indent=2).encode() + b"\n")
    fixed = ["README.md", "LICENSE", "index.js"]
    for f in fixed:
        write(os.path.join(root, f), body(rng, size(rng)))
    subdirs = ["lib", "lib/internal", "lib/internal/streams", "dist", "types", "lib/utils"]
    for i in range(nfiles - 1 - len(fixed)):
        d = rng.choice(subdirs)
        ext = {"dist": ".min.js", "types": ".d.ts"}.get(d, ".js")
        write(os.path.join(root, d, f"m{i:03d}{ext}"), body(rng, size(rng)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--modules", type=int, default=90000, help="files in node_modules/")
    ap.add_argument("--src", type=int, default=10000, help="files in src/")
    a = ap.parse_args()
    rng = random.Random(100000)
    left, n = a.modules, 0
    while left > 0:
        count = min(left, rng.randint(60, 140))
        name = f"pkg-{n:04d}" if n % 5 else f"@scope{n % 37}/pkg-{n:04d}"
        package(rng, os.path.join(a.out, "node_modules", name), name, count)
        left -= count
        n += 1
    for i in range(a.src):
        d = f"components/c{i % 500:03d}" if i % 10 else "util"
        write(os.path.join(a.out, "src", d, f"f{i:05d}.js"), body(rng, size(rng)))
    write(os.path.join(a.out, "package.json"),
          b'{"name": "app", "version": "1.0.0", "main": "src/index.js"}\n')


if __name__ == "__main__":
    main()
