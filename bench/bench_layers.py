"""Throughput of the layer writer, the applier and each compressor.

    python bench/bench_layers.py [--workdir DIR]

Tree: 5,000 small files + 3 x 50 MiB (the bigctx shape, ~155 MB). Compressors: 50 MiB of
random bytes and 50 MiB of text-like bytes (repetitive source code and words).
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import tempfile
import time
import zlib
from pathlib import Path
from typing import BinaryIO

from dockyard.layers.apply import apply_layer
from dockyard.layers.compress import compress
from dockyard.layers.tarwriter import write_layer_from_dir

MIB = 1 << 20


class Sink:
    """A writer that throws bytes away (measures the writer, not the disk)."""

    def write(self, data: bytes) -> int:
        return len(data)


def make_tree(root: Path) -> int:
    rng = random.Random(1)
    total = 0
    for i in range(5000):
        d = root / f"d{i % 50:02d}"
        d.mkdir(parents=True, exist_ok=True)
        data = rng.randbytes(rng.randint(200, 3000))
        (d / f"f{i:04d}.txt").write_bytes(data)
        total += len(data)
    for i in range(3):
        with open(root / f"big{i}.bin", "wb") as f:
            for _ in range(50):
                f.write(os.urandom(MIB))
        total += 50 * MIB
    return total


def text_like(size: int) -> bytes:
    rng = random.Random(2)
    words = [("".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randint(2, 10))))
             for _ in range(3000)]
    out = io.StringIO()
    n = 0
    while n < size:
        line = "    " * rng.randint(0, 3) + " ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + "\n"
        out.write(line)
        n += len(line)
    return out.getvalue().encode()[:size]


def timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def bench_compressors(name: str, payload: bytes) -> None:
    size = len(payload)

    def run(kind: str) -> tuple[float, int]:
        out = io.BytesIO()
        t = timed(lambda: compress(io.BytesIO(payload), out, kind))  # type: ignore[arg-type]
        return t, len(out.getvalue())

    rows: list[tuple[str, float, int]] = []
    for kind in ("none", "gzip", "zstd"):
        t, n = run(kind)
        rows.append((f"dockyard {kind}", t, n))
    from isal import igzip, igzip_threaded

    for level in (0, 1, 2, 3):
        out = io.BytesIO()
        t = timed(lambda lv=level, o=out: _isal(igzip, o, payload, lv))
        rows.append((f"isal igzip level {level}", t, len(out.getvalue())))
    out = io.BytesIO()
    t = timed(lambda: _isal_threaded(igzip_threaded, out, payload))
    rows.append(("isal igzip_threaded lvl1 x2", t, len(out.getvalue())))
    import zstandard

    for threads in (0, 2):
        out = io.BytesIO()
        t = timed(lambda th=threads, o=out: _zstd(zstandard, o, payload, th))
        rows.append((f"zstd level 3 threads={threads}", t, len(out.getvalue())))
    for level in (1, 6):
        t0 = time.perf_counter()
        n = len(zlib.compress(payload, level))
        rows.append((f"zlib level {level}", time.perf_counter() - t0, n))
    print(f"\n{name} ({size / MIB:.0f} MiB)")
    for label, t, n in rows:
        print(f"  {label:32s} {size / MIB / t:8.0f} MiB/s   ratio {n / size:6.3f}")


def _isal(igzip: object, out: io.BytesIO, payload: bytes, level: int) -> None:
    with igzip.IGzipFile(fileobj=out, mode="wb", compresslevel=level, mtime=0) as gz:  # type: ignore[attr-defined]
        gz.write(payload)


def _isal_threaded(mod: object, out: io.BytesIO, payload: bytes) -> None:
    with mod.open(out, "wb", compresslevel=1, threads=2) as gz:  # type: ignore[attr-defined]
        gz.write(payload)


def _zstd(zstandard: object, out: io.BytesIO, payload: bytes, threads: int) -> None:
    cctx = zstandard.ZstdCompressor(level=3, threads=threads)  # type: ignore[attr-defined]
    with cctx.stream_writer(out, closefd=False) as w:
        w.write(payload)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(dir=args.workdir, prefix="bench-layers-"))
    try:
        src = work / "src"
        total = make_tree(src)
        os.sync()
        print(f"tree: {total / 1e6:.0f} MB in 5,003 files")
        sink: BinaryIO = Sink()  # type: ignore[assignment]
        t = timed(lambda: write_layer_from_dir(src, sink))
        print(f"  write layer -> sink        {t:6.2f} s  {total / 1e6 / t:7.0f} MB/s")
        tar = work / "layer.tar"
        with open(tar, "wb") as f:
            t = timed(lambda: write_layer_from_dir(src, f))
        print(f"  write layer -> file        {t:6.2f} s  {total / 1e6 / t:7.0f} MB/s")
        with open(tar, "rb") as f:
            t = timed(lambda: apply_layer(f, work / "dst"))
        print(f"  apply layer (plain tar)    {t:6.2f} s  {total / 1e6 / t:7.0f} MB/s")
        (src / "big0.bin").unlink()
        (src / "big1.bin").unlink()
        (src / "big2.bin").unlink()
        t = timed(lambda: write_layer_from_dir(src, sink))
        print(f"  write 5,000 small files    {t:6.2f} s  {5000 / t:7.0f} files/s")
        shutil.rmtree(work / "dst")
        bench_compressors("random", os.urandom(50 * MIB))
        bench_compressors("text-like", text_like(50 * MIB))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
