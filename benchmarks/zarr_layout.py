"""Which chunking, sharding and codec for ingested volumes: measured side by side in one run.

Three access patterns matter: 3D blocks (training crops, blockwise prediction), 2D xy slices
(the viewer, the imaging plane) and 2D xz/yz slices (the viewer's side views); plus the number
of files, which on Lustre/GPFS decides whether `ls`, backups and quota scans finish at all.
Every layout holds the same real EM data (vnc-mito tiled) and is read through zarr-python, as
the jobs and the viewer read it. "decoded ÷ used" is the bytes of the chunks a read must
decompress over the bytes it returns, at the same random positions as the timed reads.

    python benchmarks/zarr_layout.py [--shape 128,1024,1024] [--reads 30] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
import zarr.codecs
from numcodecs import LZ4, Zstd

from fibtui.bench_formats import load_volume


LAYOUTS = {  # name: (inner chunks, shards or None)
    "chunks 16×128×128": ((16, 128, 128), None),
    "chunks 64×64×64": ((64, 64, 64), None),
    "shards 64×512×512 of 16×128×128": ((16, 128, 128), (64, 512, 512)),
    "shards 64×512×512 of 64×64×64": ((64, 64, 64), (64, 512, 512)),
    "shards 64×512×512 of 32×32×32": ((32, 32, 32), (64, 512, 512)),
    "shards 64×512×512 of 4×256×256": ((4, 256, 256), (64, 512, 512)),
}


def timed(fn, n):
    t = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t) / n


def decoded_ratio(chunks, box) -> float:
    """Bytes of the chunks a box touches ÷ bytes of the box."""
    n = 1
    for (a, b), c in zip(box, chunks):
        n *= (b - 1) // c - a // c + 1
    return n * int(np.prod(chunks)) / int(np.prod([b - a for a, b in box]))


def bench_layout(path: Path, data: np.ndarray, chunks, shards, reads: int, rng) -> dict:
    t = time.perf_counter()
    arr = zarr.create_array(str(path), shape=data.shape, chunks=chunks, shards=shards, dtype="uint8",
                            fill_value=0, compressors=zarr.codecs.ZstdCodec(level=3))
    arr[:] = data
    write_s = time.perf_counter() - t
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    Z, Y, X = data.shape
    block = (min(64, Z), 256, 256)
    starts = [tuple(int(rng.integers(0, s - b + 1)) for s, b in zip(data.shape, block)) for _ in range(reads)]
    xy = [(int(rng.integers(0, Z)), int(rng.integers(0, Y - 512 + 1)), int(rng.integers(0, X - 512 + 1)))
          for _ in range(reads)]
    xz = [(int(rng.integers(0, Y)), int(rng.integers(0, X - 512 + 1))) for _ in range(reads)]
    s3 = timed(lambda i: arr[tuple(slice(a, a + b) for a, b in zip(starts[i], block))], reads)
    sxy = timed(lambda i: arr[xy[i][0], xy[i][1]: xy[i][1] + 512, xy[i][2]: xy[i][2] + 512], reads)
    sxz = timed(lambda i: arr[:, xz[i][0], xz[i][1]: xz[i][1] + 512], reads)
    c = chunks
    return {
        "files_per_tb": 1e12 / (int(np.prod(shards or chunks))),
        "ratio": size / data.nbytes, "write_mb_s": data.nbytes / write_s / 1e6,
        "block3d_mb_s": int(np.prod(block)) / s3 / 1e6, "xy_ms": sxy * 1e3, "xz_ms": sxz * 1e3,
        "xy_decoded_over_used": np.mean([decoded_ratio(c, [(z, z + 1), (y, y + 512), (x, x + 512)])
                                         for z, y, x in xy]),
        "xz_decoded_over_used": np.mean([decoded_ratio(c, [(0, Z), (y, y + 1), (x, x + 512)]) for y, x in xz]),
        "block_decoded_over_used": np.mean([decoded_ratio(c, [(a, a + b) for a, b in zip(st, block)])
                                            for st in starts]),
    }


def bench_codecs(data: np.ndarray) -> dict:
    sample = [np.ascontiguousarray(data[z: z + 16, y: y + 128, x: x + 128])
              for z in range(0, data.shape[0] - 15, 16) for y in range(0, 512, 128) for x in range(0, 512, 128)]
    out = {}
    for name, codec in {"zstd-1": Zstd(level=1), "zstd-3": Zstd(level=3), "zstd-6": Zstd(level=6),
                        "lz4": LZ4()}.items():
        t = time.perf_counter()
        enc = [codec.encode(s) for s in sample]
        te = time.perf_counter() - t
        t = time.perf_counter()
        for e in enc:
            codec.decode(e)
        td = time.perf_counter() - t
        n = sum(s.nbytes for s in sample)
        out[name] = {"ratio": sum(map(len, enc)) / n, "encode_mb_s": n / te / 1e6, "decode_mb_s": n / td / 1e6}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="128,1024,1024")
    ap.add_argument("--reads", type=int, default=30)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    data, what = load_volume(None, shape, 0, lambda z: None)
    work = Path(tempfile.mkdtemp(prefix="fibtui-layout-"))
    try:
        layouts = {name: bench_layout(work / f"{i}.zarr", data, c, s, args.reads, np.random.default_rng(i))
                   for i, (name, (c, s)) in enumerate(LAYOUTS.items())}
        codecs = bench_codecs(data)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps({"shape": shape, "layouts": layouts, "codecs": codecs}, indent=2))
        return
    print(f"data: {what} {shape}; reads through zarr-python, page cache warm")
    print("| layout | files per TB | 3D 64×256×256 MB/s | decoded÷used 3D | xy 512² ms | decoded÷used xy | "
          "xz Z×512 ms | decoded÷used xz | write MB/s (zarr-python) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in layouts.items():
        print(f"| {name} | {r['files_per_tb']:,.0f} | {r['block3d_mb_s']:.0f} | {r['block_decoded_over_used']:.2f} | "
              f"{r['xy_ms']:.1f} | {r['xy_decoded_over_used']:.0f} | {r['xz_ms']:.1f} | "
              f"{r['xz_decoded_over_used']:.0f} | {r['write_mb_s']:.0f} |")
    print("\n| codec (one core, 16×128×128 chunks) | ratio | encode MB/s | decode MB/s |")
    print("|---|---|---|---|")
    for name, r in codecs.items():
        print(f"| {name} | {r['ratio']:.3f} | {r['encode_mb_s']:.0f} | {r['decode_mb_s']:.0f} |")
    print(f"\nreproduce: python benchmarks/zarr_layout.py --shape {args.shape} --reads {args.reads}", file=sys.stderr)


if __name__ == "__main__":
    main()
