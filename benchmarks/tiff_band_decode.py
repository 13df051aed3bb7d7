"""Compressed TIFF read in ingest bands: decoding only a band's strips vs decoding the whole page.

Ingest reads slices too wide for 64 of them to fit its 256 MB task budget in bands of 512-row
shards (`sessions.volumes.ingest.band_rows`: 1024 rows for 4096² uint8, 512 for 8192²), so each page is
read once per band. This times reading every band of a 64-page zlib TIFF stack of real EM
texture (vnc-mito tiled) two ways, side by side in one run:

- whole page: `TiffPage.asarray()` per band, cropped (what fibtui did before, and what reading
  through tifffile's API gives);
- strips: `sessions.volumes.sources` (only the strips or tiles holding the band's rows).

    python benchmarks/tiff_band_decode.py [--side 4096] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ingest_throughput import make_source  # noqa: E402
from sessions.volumes.ingest import band_rows  # noqa: E402
from sessions.volumes.sources import open_source  # noqa: E402


def whole_pages(path: Path, depth: int, side: int, band: int) -> float:
    t = time.perf_counter()
    with tifffile.TiffFile(path) as tif:
        for y0 in range(0, side, band):
            for z in range(depth):
                tif.pages[z].asarray(maxworkers=1)[y0: y0 + band]
    return time.perf_counter() - t


def strips(path: Path, depth: int, side: int, band: int) -> float:
    src = open_source(path)
    out = np.empty((depth, band, side), np.uint8)
    t = time.perf_counter()
    for y0 in range(0, side, band):
        src.read(0, depth, y0, min(y0 + band, side), out=out[:, : min(band, side - y0)])
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--side", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fibtui-bench-") as tmp:
        raw = Path(tmp) / "raw.tif"
        depth = make_source(raw, 0, a.side)[0]  # one task's depth: 64 slices
        path = Path(tmp) / "zlib.tif"
        with tifffile.TiffFile(raw) as tif:  # same pixels, zlib, tifffile's default ~256 KB strips
            tifffile.imwrite(path, (p.asarray() for p in tif.pages), shape=tif.series[0].shape, dtype=np.uint8,
                             compression="zlib", bigtiff=True)
        raw.unlink()
        band = band_rows((depth, a.side, a.side))
        rounds = [(whole_pages(path, depth, a.side, band), strips(path, depth, a.side, band)) for _ in range(a.rounds)]
    whole, strip = (statistics.median(r[i] for r in rounds) for i in (0, 1))
    res = {"side": a.side, "pages": depth, "band_rows": band, "bands": -(-a.side // band),
           "whole_page_s": round(whole, 3), "strips_s": round(strip, 3), "speedup": round(whole / strip, 2)}
    if a.json:
        print(json.dumps(res))
    else:
        print(f"{depth} zlib pages of {a.side}², {res['bands']} bands of {band} rows (median of {a.rounds} rounds)")
        print(f"  decode whole page per band: {whole:.2f} s\n  decode only the band's strips: {strip:.2f} s"
              f"\n  speed-up: {whole / strip:.1f}×")


if __name__ == "__main__":
    main()
