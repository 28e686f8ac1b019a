#!/usr/bin/env python3
"""Make the `bigroot` base's root filesystem: the busybox rootfs plus 1 GiB of files.

usage: mk-bigroot.py BUSYBOX_ROOTFS.tar OUT.tar [--mib 1024] [--files 16384]

/data/dNNN/fNNNNN.bin, 128 directories, sizes 4 KiB-124 KiB (64 KiB on average), half of
the files incompressible (random bytes), half text that compresses ~4x, so that the base
costs an exporter or a registry push what a real 1 GB rootfs would. Deterministic: the
same arguments give the same tar, byte for byte (sorted names, fixed mtime and owner).
"""

from __future__ import annotations

import argparse
import io
import random
import tarfile

MTIME = 1704067200  # 2024-01-01, as the shared busybox base


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("busybox")
    ap.add_argument("out")
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--files", type=int, default=16384)
    ap.add_argument("--dirs", type=int, default=128)
    a = ap.parse_args()
    total = a.mib << 20
    rng = random.Random(18)
    # sizes: uniform 4-124 KiB, then scaled so that they add up to exactly `total`
    raw = [rng.randint(4, 124) << 10 for _ in range(a.files)]
    scale = total / sum(raw)
    sizes = [max(1, int(s * scale)) for s in raw]
    sizes[-1] += total - sum(sizes)
    text = b"".join(b"line %08d of a generated text file in a big base image\n" % i
                    for i in range(4096))
    with tarfile.open(a.out, "w", format=tarfile.GNU_FORMAT) as out:
        with tarfile.open(a.busybox) as bb:
            for m in bb:
                out.addfile(m, bb.extractfile(m) if m.isfile() else None)
        names = sorted((f"data/d{i % a.dirs:03d}", f"f{i:05d}.bin", i) for i in range(a.files))
        for d in ["data", *sorted({d for d, _, _ in names})]:
            ti = tarfile.TarInfo("./" + d)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, MTIME
            out.addfile(ti)
        for d, f, i in names:
            n = sizes[i]
            if i % 2:
                body = random.Random(i).randbytes(n)
            else:
                off = (i * 977) % len(text)
                body = (text[off:] + text * (n // len(text) + 1))[:n]
            ti = tarfile.TarInfo(f"./{d}/{f}")
            ti.size, ti.mode, ti.mtime = n, 0o644, MTIME
            out.addfile(ti, io.BytesIO(body))
    print(f"wrote {a.out}: busybox + {a.files} files, {a.mib} MiB in /data")


if __name__ == "__main__":
    main()
