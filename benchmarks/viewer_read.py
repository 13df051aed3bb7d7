"""Storage bytes the slice viewer reads per frame, on a sharded volume of 10^12 voxels.

A 10240³ uint8 volume at 8 nm (all pyramid levels, sharded like an ingest)
holds real EM texture (../shared/data/vnc-mito/raw.tif tiled; noise where it
is absent) only in the chunks the navigation visits; everything else is
absent. A counting wrapper around zarr's LocalStore sums the bytes every
`get` returns (whole objects and byte ranges, shard indexes included) and
fails the run if any read hit an absent shard or showed fill value, so the
ratios are not flattered by empty chunks.

For each zoom (one screen pixel = 1, 2, 4, … level-0 voxels, up to the whole
slice) and axis (xy, xz), on an 80×48-cell pane (160×96 half-block pixels),
a trace: a cold jump to a random position, 16 steps through the slices (one
visible step each), 4 pans by a quarter screen into new ground. Reported per
row: storage bytes ÷ bytes shown (160·96 per frame) over the trace, for the
cold frame alone, and for the warm frames; p50/p95 of `SliceSource.view()`;
the level; the same trace without a chunk cache (the old per-plane reads).
A second table compares the two level rules on the zooms the viewer really
offers (the whole-slice fit halved, halved again…), and how far each frame
is from one rendered from level 0.

    python benchmarks/viewer_read.py [--json] [--steps 16] [--chunks 16,128,128 --shards 64,512,512]

(~15 s on 2 cores; --chunks/--shards try another layout, --steps a longer scroll.)
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import zarr
from zarr.storage import LocalStore, WrapperStore

from fibtui.bench_formats import shared_vnc
from fibtui.tui.widgets import halfblock
from fibtui.tui.screens.viewer import screen_span
from sessions.volumes import omezarr
from sessions.geometry import unfmt
from sessions.volumes.slices import AXES, MAX_UPSAMPLE, SliceSource, choose_level

RAW = shared_vnc()
SCREEN = (96, 160)     # half-block pixels (rows, cols) of an 80×48-cell pane
TARGET = 4.0           # storage bytes per byte shown
VOXEL = 8.0
RULES = {"nearest": MAX_UPSAMPLE, "finer": 1.0}   # level pixel ≤ √2 or ≤ 1 screen pixel
Frame = tuple[int, tuple[float, float, float, float]]   # level-0 slice, level-0 region of the plane


class CountingStore(WrapperStore):
    """Counts requests and bytes returned by `get` (byte ranges included), and misses on chunk keys."""

    def __init__(self, store):
        super().__init__(store)
        self.requests = self.bytes = self.absent = 0

    async def get(self, key, prototype, byte_range=None):
        buf = await self._store.get(key, prototype, byte_range)
        self.requests += 1
        self.bytes += len(buf) if buf is not None else 0
        self.absent += buf is None and "/c/" in key
        return buf

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        bufs = await self._store.get_partial_values(prototype, key_ranges)
        self.requests += len(key_ranges)
        self.bytes += sum(len(b) for b in bufs if b is not None)
        self.absent += sum(b is None and "/c/" in k for b, (k, _) in zip(bufs, key_ranges))
        return bufs


def texture(rng: np.random.Generator):
    """box (level voxels) -> uint8 EM texture ≥ 1, so a 0 on screen can only be an absent chunk."""
    src = tifffile.imread(RAW) if RAW is not None else rng.integers(1, 256, (16, 256, 256), dtype=np.uint8)
    src = np.maximum(src, 1)
    return lambda box: src[np.ix_(*(np.arange(a, b) % n for (a, b), n in zip(box, src.shape)))]


def zooms(size: int) -> list[float]:
    """Level-0 voxels per screen pixel: 1, 2, 4, … until the whole slice fits."""
    out = [1.0]
    while min(n * out[-1] for n in SCREEN) < size:
        out.append(out[-1] * 2)
    return out


def ladder(size: int) -> list[float]:
    """The viewer's own zooms: the whole-slice fit, halved while a level-0 voxel is ≤ 1 screen pixel."""
    out = [size / min(SCREEN)]
    while out[-1] / 2 >= 1:
        out.append(out[-1] / 2)
    return out


def trace(src: SliceSource, axis: str, zoom: float, rng: np.random.Generator, steps: int) -> list[Frame]:
    """Cold jump, `steps` visible steps through the slices, four quarter-screen pans into new ground."""
    normal, ra, ca = AXES[axis]
    shape = src.shape(0)
    step = src.step(axis, src.choose_level(axis, zoom * VOXEL))
    focus = [0.0, 0.0, 0.0]
    for a, n in ((ra, SCREEN[0]), (ca, SCREEN[1])):
        margin = n * zoom * 3 / 4          # half a screen plus two quarter pans
        focus[a] = shape[a] / 2 if 2 * margin >= shape[a] else rng.uniform(margin, shape[a] - margin)
    focus[normal] = float(rng.integers(0, shape[normal] - steps * step))
    frames = [(int(focus[normal]) + k * step, focus) for k in range(steps + 1)]
    pos = frames[-1][0]
    for a, n in ((ca, SCREEN[1]), (ra, SCREEN[0]), (ca, SCREEN[1]), (ra, SCREEN[0])):
        focus = list(focus)
        focus[a] += n * zoom / 4
        frames.append((pos, focus))
    return [(p, region(f, axis, zoom)) for p, f in frames]


def region(focus, axis: str, zoom: float) -> tuple[float, float, float, float]:
    _, ra, ca = AXES[axis]
    (r0, r1), (c0, c1) = (screen_span(focus[a] * VOXEL, n, zoom * VOXEL, VOXEL) for a, n in zip((ra, ca), SCREEN))
    return r0, r1, c0, c1


def chunk_box(src: SliceSource, axis: str, frame: Frame) -> tuple[int, list[tuple[int, int]]]:
    """The level a frame reads and the chunk-aligned box (level voxels, z/y/x) it touches."""
    pos, reg = frame
    level, (r0, r1, c0, c1) = src.locate(axis, reg, SCREEN)
    normal, ra, ca = AXES[axis]
    arr = src.raw.levels[level]
    ch, shape = arr.chunks, arr.shape
    idx = pos // src.step(axis, level)
    box = [None, None, None]
    box[normal] = (idx, idx + 1)
    box[ra], box[ca] = (r0, r1), (c0, c1)
    return level, [(a // c * c, min(-(-b // c) * c, s)) for (a, b), c, s in zip(box, ch, shape)]


def write_visited(ms: omezarr.Multiscale, runs, tex) -> int:
    """Fill, per trace and level, the bounding box of the chunks the trace touches; returns voxels written."""
    boxes = set()
    for src, axis, frames in runs:
        per_level: dict[int, list] = {}
        for frame in frames:
            level, box = chunk_box(src, axis, frame)
            old = per_level.get(level, box)
            per_level[level] = [(min(a, c), max(b, d)) for (a, b), (c, d) in zip(old, box)]
        boxes |= {(lvl, tuple(box)) for lvl, box in per_level.items()}
    for level, box in sorted(boxes):
        ms.levels[level][tuple(slice(a, b) for a, b in box)] = tex(box)
    return sum(math.prod(b - a for a, b in box) for _, box in boxes)


def run(src: SliceSource, store: CountingStore, axis: str, frames: list[Frame]) -> dict:
    shown = math.prod(SCREEN)
    per_frame, times, requests = [], [], store.requests
    for pos, reg in frames:
        before, t0 = store.bytes, time.perf_counter()
        data, level = src.view(axis, pos, reg, SCREEN)
        times.append(time.perf_counter() - t0)
        per_frame.append(store.bytes - before)
        if not data.raw.all() or store.absent:
            sys.exit(f"{axis} frame at {pos} read an absent chunk: the benchmark's writes missed it")
    warm = per_frame[1:]
    return {
        "level": level, "ratio": sum(per_frame) / (shown * len(frames)), "cold": per_frame[0] / shown,
        "warm": sum(warm) / (shown * len(warm)), "max_warm": max(warm) / shown,
        "p50_ms": 1e3 * statistics.median(times), "p95_ms": 1e3 * float(np.percentile(times, 95)),
        "frames": len(frames), "bytes": sum(per_frame), "requests": store.requests - requests,
        "chunk_loads": src.cache.reads,
    }


def quality(tex, zooms_: list[float]) -> list[dict]:
    """Mean |frame − frame from level 0| (grey levels) for each rule, on a real 1024² slice and its 2D pyramid."""
    img = tex([(0, 1), (0, 1024), (0, 1024)])
    pyr = [img]
    while pyr[-1].shape[1] > 64:
        pyr.append(omezarr.downsample_mean(pyr[-1], (1, 2, 2)))
    scales = [(VOXEL, VOXEL * 2 ** k, VOXEL * 2 ** k) for k in range(len(pyr))]
    out = []
    for zoom in zooms_:
        frames = {}
        levels = {"level 0": 0, **{name: choose_level(scales, "xy", zoom * VOXEL, r) for name, r in RULES.items()}}
        for name, level in levels.items():
            plans = [halfblock.plan(n, screen_span(512 * VOXEL, n, zoom * VOXEL, scales[level][1])[0], zoom / 2 ** level,
                                    pyr[level].shape[1]) for n in SCREEN]
            frames[name] = halfblock.resample_mean(pyr[level][0], *plans)
        ref = frames.pop("level 0")
        out.append({"zoom": zoom, "contrast": float(ref.std()),
                    **{f"mae_{k}": float(np.abs(v - ref).mean()) for k, v in frames.items()}})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/fibtui-viewer-bench"))
    ap.add_argument("--size", type=int, default=10240, help="edge of the cubic volume (voxels)")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--chunks", default=",".join(map(str, omezarr.VOLUME_CHUNKS)), help="z,y,x of the inner chunks")
    ap.add_argument("--shards", default=",".join(map(str, omezarr.VOLUME_SHARDS)), help="z,y,x, or 'none'")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    command = " ".join(["python benchmarks/viewer_read.py", *sys.argv[1:]])
    shutil.rmtree(args.dir, ignore_errors=True)
    path = args.dir / "v.ome.zarr"
    shards = None if args.shards == "none" else unfmt(args.shards)
    ms = omezarr.create(path, (args.size,) * 3, (VOXEL,) * 3, chunks=unfmt(args.chunks), shards=shards)
    plain = {name: SliceSource(ms, max_upsample=rule) for name, rule in RULES.items()}

    # (table, zoom, axis, rule) -> frames; both rules of a zoom and axis start at the same place,
    # each stepping one slice of its own level; the old reads replay table 1 ("finer" was the old rule)
    traces = {}
    for t, (table, zs, rules) in enumerate((("target", zooms(args.size), ["nearest"]),
                                            ("rule", ladder(args.size), list(RULES)))):
        for i, zoom in enumerate(zs):
            for j, axis in enumerate(("xy", "xz")):
                for name in rules:
                    rng = np.random.default_rng((args.seed, t, i, j))
                    traces[table, zoom, axis, name] = trace(plain[name], axis, zoom, rng, args.steps)
    tex = texture(np.random.default_rng(args.seed))
    t0 = time.perf_counter()
    runs = [(plain[k[3]], k[2], f) for k, f in traces.items()]
    runs += [(plain["finer"], k[2], f) for k, f in traces.items() if k[0] == "target"]
    written = write_visited(ms, runs, tex)
    write_s = time.perf_counter() - t0

    store = CountingStore(LocalStore(str(path), read_only=True))
    group = zarr.open_group(store=store, mode="r")
    counted = omezarr.Multiscale(path, group, [group[str(i)] for i in range(len(ms.levels))], ms.scales)
    rows = []
    for (table, zoom, axis, name), frames in traces.items():
        new = run(SliceSource(counted, max_upsample=RULES[name]), store, axis, frames)
        row = {"table": table, "zoom": zoom, "axis": axis, "rule": name, **new}
        if table == "target":
            old = run(SliceSource(counted, max_upsample=1.0, cache_bytes=0), store, axis, frames)
            row["old"] = {k: old[k] for k in ("level", "ratio", "cold", "p50_ms", "p95_ms")}
        rows.append(row)
    quality_rows = quality(tex, [1.5, 1.667, 3.0, 3.333, 6.0])   # mid-octave, and the ladder's offset above
    meta = {"volume": [args.size] * 3, "voxels": args.size ** 3, "chunks": list(ms.levels[0].chunks),
            "shards": list(ms.levels[0].shards or ms.levels[0].chunks), "levels": len(ms.levels), "screen": list(SCREEN),
            "texture": str(RAW) if RAW is not None else "noise", "written_voxels": written, "write_s": write_s,
            "steps": args.steps, "command": command}
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows, "quality": quality_rows}, indent=1))
    else:
        report(meta, rows, quality_rows)
    shutil.rmtree(args.dir, ignore_errors=True)


def report(meta: dict, rows: list[dict], quality_rows: list[dict]) -> None:
    print(meta["command"])
    print(f"volume {'×'.join(map(str, meta['volume']))} uint8 ({meta['voxels']:.2e} voxels), {meta['levels']} levels, "
          f"chunks {meta['chunks']} in shards {meta['shards']}; texture {meta['texture']}; "
          f"{meta['written_voxels'] / 1e6:.0f} M voxels written in {meta['write_s']:.1f} s")
    print(f"screen {SCREEN[1]}×{SCREEN[0]} px; trace = cold + {meta['steps']} steps + 4 pans; "
          f"ratio = storage bytes ÷ bytes shown; target ≤ {TARGET:g}\n")
    print("voxels/px axis level | trace  cold   warm  worst-warm  requests | p50 ms p95 ms | target "
          "| no cache: trace   cold  p50 ms")
    for r in (r for r in rows if r["table"] == "target"):
        o = r["old"]
        verdict = "PASS" if r["ratio"] <= TARGET else "FAIL"
        print(f"{r['zoom']:9.4g} {r['axis']:>4} {r['level']:5d} | {r['ratio']:5.2f} {r['cold']:6.1f} {r['warm']:6.2f} "
              f"{r['max_warm']:9.1f} {r['requests']:9d} | {r['p50_ms']:6.2f} {r['p95_ms']:6.1f} | {verdict:>6} | "
              f"{o['ratio']:14.2f} {o['cold']:6.1f} {o['p50_ms']:7.1f}")
    print("\nlevel rule on the viewer's zooms: nearest (level px ≤ √2 screen px) vs finer (level px ≤ screen px)")
    print("voxels/px axis | nearest: level trace  p95 ms | finer: level trace  p95 ms | bytes finer/nearest")
    by = {(r["zoom"], r["axis"], r["rule"]): r for r in rows if r["table"] == "rule"}
    for zoom, axis, _ in (k for k in by if k[2] == "nearest"):
        n, f = by[zoom, axis, "nearest"], by[zoom, axis, "finer"]
        print(f"{zoom:9.4g} {axis:>4} | {n['level']:14d} {n['ratio']:5.2f} {n['p95_ms']:7.1f} | "
              f"{f['level']:12d} {f['ratio']:5.2f} {f['p95_ms']:7.1f} | {f['bytes'] / n['bytes']:6.2f}")
    print("\nframe vs one rendered from level 0 (mean |difference|, grey levels; frame contrast = std)")
    for q in quality_rows:
        print(f"{q['zoom']:9.4g} voxels/px: nearest {q['mae_nearest']:5.2f}, finer {q['mae_finer']:5.2f}, "
              f"contrast {q['contrast']:5.1f}")


if __name__ == "__main__":
    main()
