"""Brush stroke → on screen, in the slice viewer at 200×60, side by side with a full frame rebuild.

A session with a 64×512×512 volume; the viewer zooms in once from the whole
slice (one pixel ≈ 2.4 voxels, so each stroke paints several exact voxels), with a
crop box at the view and --painted voxels already painted in it (the
overlay redraws every painted voxel of the slice on every stroke). Then,
--strokes times: the cursor moves one pixel (untimed), a `space` key is
posted, and the latency is key posted → painted voxels in the annotation
→ first screen refresh after (`Screen.wait_for_refresh`), headless.

Beside it, in the same run: what a stroke would cost if it rebuilt the
frame from the volume as a slice step does (`build_frame` + `to_strips`,
chunks already cached) — the path a stroke avoids by drawing its overlay
over the last image on the UI thread.

    python benchmarks/paint_latency.py [--strokes 40] [--painted 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from textual import events  # noqa: E402

from fibtui.tui.app import FibApp  # noqa: E402
from fibtui.tui.screens.viewer import ViewerScreen, build_frame  # noqa: E402
from fibtui.tui.widgets import halfblock  # noqa: E402
from sessions import labels, rounds  # noqa: E402
from sessions.volumes import catalog  # noqa: E402
from sessions.workspace import init_session  # noqa: E402

SIZE = (200, 60)
SHAPE = (64, 512, 512)


def pct(v, q):
    return float(np.percentile(v, q))


async def until(pred, timeout=30.0):
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise TimeoutError
        await asyncio.sleep(0.01)


async def run(root: Path, strokes: int, painted: int) -> dict:
    app = FibApp(root, refresh_s=60)
    lat, rebuild = [], []
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("v")
        screen = app.screen
        assert isinstance(screen, ViewerScreen)
        await until(lambda: screen.base is not None and screen.round_n is not None)
        await pilot.press("plus")             # the whole slice is 4.7 voxels per pixel: over the paint limit
        await until(lambda: screen.base.view == screen.view)
        await pilot.press("b", "d", "c")
        box = screen.ann.box
        rng = np.random.default_rng(0)
        zyx = np.stack([np.full(painted, box.offset[0]),
                        rng.integers(box.offset[1], box.stop[1], painted),
                        rng.integers(box.offset[2], box.stop[2], painted)], axis=1)
        screen.ann.apply(zyx, 1)
        screen.compose_frame()
        step = screen.smap().cols.step
        for i in range(strokes):
            # boustrophedon: 20 pixels right, one down, 20 left...: every stroke lands on unpainted voxels
            await pilot.press("down" if i and i % 20 == 0 else "right" if (i // 20) % 2 == 0 else "left")
            await pilot.pause()
            before = len(screen.ann.undo_stack)
            t0 = time.perf_counter()
            app.post_message(events.Key("space", " "))
            try:
                await until(lambda: len(screen.ann.undo_stack) > before, timeout=5)
            except TimeoutError:
                raise SystemExit(f"the stroke did not paint: {screen.tool_note}") from None
            await screen.wait_for_refresh()
            lat.append(time.perf_counter() - t0)
        size = screen.slice_size()
        for _ in range(max(5, strokes // 4)):
            t0 = time.perf_counter()
            halfblock.to_strips(build_frame(screen.source, screen.view, size.width, size.height))
            rebuild.append(time.perf_counter() - t0)
        widget = (size.width, size.height)
    return {"median": statistics.median(lat), "p95": pct(lat, 95), "max": max(lat),
            "rebuild": statistics.median(rebuild), "step": step, "widget": widget}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strokes", type=int, default=40)
    ap.add_argument("--painted", type=int, default=20000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        s = init_session(Path(tmp) / "s")
        raw = np.random.default_rng(1).integers(0, 256, SHAPE, dtype=np.uint8)
        catalog.write_volume(s, "vol", raw, (8, 8, 8), source="bench")
        rounds.new_round(s)
        crop = Path(tmp) / "crop.tif"
        import tifffile
        tifffile.imwrite(crop, np.ones((1, 4, 4), np.uint8), photometric="minisblack")
        labels.add_crop(s, 1, "vol", crop, (0, 0, 0), classes=["bg", "mito"])
        s.close()
        r = asyncio.run(run(Path(tmp) / "s", args.strokes, args.painted))
    print(f"viewer {SIZE[0]}×{SIZE[1]} (slice widget {r['widget'][0]}×{r['widget'][1]} cells), "
          f"{args.painted} voxels already painted, one pixel = {r['step']:.2f} voxels")
    print(f"stroke → on screen: median {r['median'] * 1e3:.1f} ms, p95 {r['p95'] * 1e3:.1f} ms, "
          f"max {r['max'] * 1e3:.1f} ms (target ≤ 50 ms)")
    print(f"full frame rebuild (build_frame + to_strips, cached chunks): median {r['rebuild'] * 1e3:.1f} ms; "
          f"stroke / rebuild = {r['median'] / r['rebuild']:.2f}")
    print("reproduce: python benchmarks/paint_latency.py --strokes", args.strokes, "--painted", args.painted)


if __name__ == "__main__":
    main()
