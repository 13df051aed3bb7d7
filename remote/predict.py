"""Blockwise whole-volume prediction into a probability OME-Zarr (uint8, p×255).

Each block is predicted with a halo at least as wide as the network's
receptive field, and block origins sit on the network's pooling grid, so the
stitched result equals a single whole-volume pass: no tiling seams. Done
blocks are recorded in `blocks.done`, so a restarted job skips them.
"""

from __future__ import annotations

import time
from itertools import product
from pathlib import Path

import numpy as np
import torch

from remote.model import UNet3D, normalize, pick_device
from remote.sampling import read_padded
from remote.train import load_model
from sessions import omezarr
from sessions.geometry import Box
from sessions.jobfiles import append_event

OUTPUT, LEDGER = "prediction.ome.zarr", "blocks.done"


def receptive_radius(model: UNet3D) -> tuple[int, int, int]:
    """Voxels of context each output voxel sees, per axis (upper bound)."""
    cfg = model.cfg
    r, scale = [0, 0, 0], [1, 1, 1]
    for lvl, k in enumerate(cfg.kernels):
        convs = 2 if lvl == len(cfg.kernels) - 1 else 4
        r = [ri + (ki // 2) * convs * s for ri, ki, s in zip(r, k, scale)]
        if lvl < len(cfg.pools):
            r = [ri + (p - 1) * s for ri, p, s in zip(r, cfg.pools[lvl], scale)]
            scale = [s * p for s, p in zip(scale, cfg.pools[lvl])]
    return tuple(r)


def round_up(v: int, m: int) -> int:
    return -(-v // m) * m


def plan_blocks(shape, block) -> list[Box]:
    ranges = [range(0, s, b) for s, b in zip(shape, block)]
    return [Box(o, tuple(min(b, s - oo) for b, s, oo in zip(block, shape, o))) for o in product(*ranges)]


def predict_block(model, raw, core: Box, halo, div, device) -> np.ndarray:
    """Probability (uint8) for `core`, from a halo-padded, grid-aligned input."""
    lo = [o - h for o, h in zip(core.offset, halo)]
    ext = [round_up(s + 2 * h, d) for s, h, d in zip(core.shape, halo, div)]
    x = read_padded(raw, Box(tuple(lo), tuple(ext)))
    t = normalize(torch.from_numpy(np.ascontiguousarray(x))[None, None]).to(device)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        p = torch.sigmoid(model(t).float())[0, 0]
    p = p[tuple(slice(h, h + s) for h, s in zip(halo, core.shape))]
    return (p * 255).round_().to(torch.uint8).cpu().numpy()


def run(spec: dict, job_dir: Path) -> dict:
    job_dir = Path(job_dir)
    device = pick_device(spec.get("device", "auto"))
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    src = omezarr.open_multiscale(spec["volume"]["path"])
    raw = src.levels[0]
    model, _ = load_model(spec["checkpoint"], device)
    model.eval()
    div = model.cfg.divisor
    halo = tuple(round_up(r, d) for r, d in zip(receptive_radius(model), div))
    out_path = job_dir / OUTPUT
    block = tuple(int(b) for b in spec.get("block", (32, 256, 256)))
    chunks = omezarr.DEFAULT_CHUNKS
    block = tuple(round_up(b, c) for b, c in zip(block, chunks))  # chunk-aligned writes, grid-aligned origins
    ledger = job_dir / LEDGER
    done = set(ledger.read_text().split()) if ledger.exists() and out_path.exists() else set()
    if not done:
        ms = omezarr.create(out_path, raw.shape, src.voxel_size, name="prediction", chunks=chunks)
        ledger.write_text("")
    else:
        ms = omezarr.open_multiscale(out_path, mode="r+")
        append_event(job_dir, "resumed", step=len(done))
    blocks = plan_blocks(raw.shape, block)
    t0, vox = time.perf_counter(), 0
    with open(ledger, "a") as led:
        for i, core in enumerate(blocks):
            key = "_".join(map(str, core.offset))
            if key in done:
                continue
            ms.levels[0][core.slices] = predict_block(model, raw, core, halo, div, device)
            led.write(key + "\n")
            led.flush()
            vox += core.size
            dt = time.perf_counter() - t0
            append_event(job_dir, "progress", step=i + 1, total=len(blocks), voxels_per_s=vox / dt if dt else 0.0)
    omezarr.build_pyramid(ms)
    return {"status": "completed", "output": OUTPUT, "blocks": len(blocks), "halo": list(halo),
            "seconds": round(time.perf_counter() - t0, 1)}
