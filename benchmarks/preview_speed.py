"""Viewer preview vs the bare model: 1 M voxels on 2 CPU threads, side by side in one run.

The model is the training default (`UNetConfig()`: 4 levels, base 16; untrained weights: the
speed does not depend on them). The region is 16×256×256 (1.05 M voxels) of a 64×512×512 uint8
OME-Zarr volume. *preview* is `remote.preview.preview` end to end, as the viewer's worker calls
it: read the halo-padded block from the zarr store, normalise, forward, sigmoid, crop, uint8.
*bare* is `model(x)` alone on the same padded input tensor, under `torch.no_grad()`, same
threads. Alternating, median of --repeats (after one warm-up of each).

    python benchmarks/preview_speed.py [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from remote.blocks import round_up  # noqa: E402
from remote.checkpoints import save  # noqa: E402
from remote.model import UNet3D, UNetConfig, normalize  # noqa: E402
from remote.predict import receptive_radius  # noqa: E402
from remote.preview import preview  # noqa: E402
from remote.sampling import read_padded  # noqa: E402
from sessions.geometry import Box  # noqa: E402
from sessions.volumes import catalog  # noqa: E402
from sessions.workspace import init_session  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        s = init_session(Path(tmp) / "s")
        raw = np.random.default_rng(1).integers(0, 256, (64, 512, 512), dtype=np.uint8)
        catalog.write_volume(s, "vol", raw, (8, 8, 8), source="bench")
        arr = catalog.open_volume(s, "vol").levels[0]
        s.close()
        torch.manual_seed(0)
        cfg = UNetConfig()
        model = UNet3D(cfg).eval()
        path = Path(tmp) / "model.pt"
        save({"model": model.state_dict(), "config": cfg.to_dict()}, path)
        box = Box((24, 128, 128), (16, 256, 256))
        halo, div = receptive_radius(model), cfg.divisor
        lo = [o - h for o, h in zip(box.offset, halo)]
        ext = [round_up(n + 2 * h, d) for n, h, d in zip(box.shape, halo, div)]
        x = normalize(torch.from_numpy(np.ascontiguousarray(read_padded(arr, Box(tuple(lo), tuple(ext)))))[None, None])
        torch.set_num_threads(args.threads)

        def bare():
            t0 = time.perf_counter()
            with torch.no_grad():
                torch.sigmoid(model(x))
            return time.perf_counter() - t0

        def prev():
            return preview(path, arr, box, threads=args.threads)["seconds"]

        bare(), prev()
        b, p = [], []
        for _ in range(args.repeats):
            b.append(bare())
            p.append(prev())
    mb, mp = statistics.median(b), statistics.median(p)
    print(f"region {box.shape} = {box.size:,} voxels, padded input {tuple(x.shape[2:])}, {args.threads} threads")
    print(f"bare model forward: {mb:.2f} s   preview end to end: {mp:.2f} s   preview / bare = {mp / mb:.2f} "
          "(target ≤ 2)")
    print(f"reproduce: python benchmarks/preview_speed.py --repeats {args.repeats} --threads {args.threads}")


if __name__ == "__main__":
    main()
