"""Blockwise whole-volume prediction into a probability OME-Zarr (uint8, p×255).

Each block is predicted with a halo at least as wide as the network's
receptive field, and block origins sit on the network's pooling grid, so the
stitched result equals a single whole-volume pass: no tiling seams. Done
blocks are recorded in `blocks.done`, so a restarted job skips them.

A preview job (kind `preview`) is the same run with `spec["region"]`
({"offset", "shape"}, level-0 voxels): only the blocks of the same grid that
overlap the region are predicted, into a store of the whole volume's shape
(unwritten chunks cost nothing), and no pyramid is built (it would read the
whole volume). The same blocks on the same grid: the region's voxels equal
the whole-volume prediction's.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from remote.blocks import block_key, block_shape, plan_blocks, round_up, task_slice
from remote.checkpoints import load_model
from remote.model import UNet3D, normalize, pick_device
from remote.predict_array import OUTPUT, task_dir
from remote.sampling import read_padded
from sessions.geometry import Box
from sessions.jobfiles import append_event
from sessions.jobs import ARRAY, LEDGER, array_info
from sessions.volumes import omezarr


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


def _load(spec: dict):
    device = pick_device(spec.get("device", "auto"))
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    src = omezarr.open_multiscale(spec["volume"]["path"])
    model, _ = load_model(spec["checkpoint"], device)
    model.eval()
    div = model.cfg.divisor
    halo = tuple(round_up(r, d) for r, d in zip(receptive_radius(model), div))
    return device, src, model, div, halo


def _predict_blocks(spec, blocks, out, ledger: Path, done: set, events_dir: Path, *, model, raw, halo, div,
                    device) -> float:
    t0, vox = time.perf_counter(), 0
    with open(ledger, "a") as led:
        for i, core in enumerate(blocks):
            key = block_key(core)
            if key in done:
                continue
            out[core.slices] = predict_block(model, raw, core, halo, div, device)
            led.write(key + "\n")
            led.flush()
            vox += core.size
            dt = time.perf_counter() - t0
            append_event(events_dir, "progress", step=i + 1, total=len(blocks), voxels_per_s=vox / dt if dt else 0.0)
    return time.perf_counter() - t0


def region_of(spec: dict, shape) -> Box | None:
    """The preview region of `spec` (None: the whole volume); one outside the volume is an error, not no work."""
    r = spec.get("region")
    if r is None:
        return None
    box = Box(tuple(int(v) for v in r["offset"]), tuple(int(v) for v in r["shape"]))
    if box.size == 0 or not box.inside(tuple(shape)):
        raise ValueError(f"region {box} is empty or outside the volume {tuple(shape)}")
    return box


def run(spec: dict, job_dir: Path) -> dict:
    """The whole volume, or the blocks overlapping spec["region"], in one process (local, SSH, one Slurm job)."""
    job_dir = Path(job_dir)
    device, src, model, div, halo = _load(spec)
    raw = src.levels[0]
    region = region_of(spec, raw.shape)
    out_path = job_dir / OUTPUT
    ledger = job_dir / LEDGER
    done = set(ledger.read_text().split()) if ledger.exists() and out_path.exists() else set()
    if not done:
        ms = omezarr.create(out_path, raw.shape, src.voxel_size, name="prediction", chunks=omezarr.DEFAULT_CHUNKS)
        ledger.write_text("")
    else:
        ms = omezarr.open_multiscale(out_path, mode="r+")
        append_event(job_dir, "resumed", step=len(done))
    blocks = [b for b in plan_blocks(raw.shape, block_shape(spec)) if region is None or b.overlaps(region)]
    t0 = time.perf_counter()
    _predict_blocks(spec, blocks, ms.levels[0], ledger, done, job_dir, model=model, raw=raw, halo=halo, div=div,
                    device=device)
    if region is None:
        omezarr.build_pyramid(ms)
    return {"status": "completed", "output": OUTPUT, "blocks": len(blocks), "halo": list(halo),
            "seconds": round(time.perf_counter() - t0, 1), **({"region": spec["region"]} if region else {})}


def run_task(spec: dict, job_dir: Path, task: int) -> dict:
    """One task of the array: its slice of the blocks into the pre-created store; its own ledger."""
    job_dir = Path(job_dir)
    info = array_info(job_dir)
    if info is None:
        raise RuntimeError(f"{job_dir / ARRAY} missing: the array was not prepared at submission")
    tasks = int(info["tasks"])
    if not 0 <= task < tasks:
        raise RuntimeError(f"task {task} outside the array's 0..{tasks - 1}")
    tdir = task_dir(job_dir, task)
    device, src, model, div, halo = _load(spec)
    raw = src.levels[0]
    blocks = plan_blocks(raw.shape, block_shape(spec))
    mine = blocks[task_slice(len(blocks), tasks, task)]
    ledger = tdir / LEDGER
    done = set(ledger.read_text().split()) if ledger.exists() else set()
    if done:
        append_event(tdir, "resumed", step=len(done))
    ms = omezarr.open_multiscale(job_dir / OUTPUT, mode="r+")
    secs = _predict_blocks(spec, mine, ms.levels[0], ledger, done, tdir, model=model, raw=raw, halo=halo, div=div,
                           device=device)
    return {"status": "completed", "task": task, "blocks": len(mine), "seconds": round(secs, 1)}


def finalize(spec: dict, job_dir: Path) -> dict:
    """The dependent step after every task: check the ledgers cover every block, build the pyramid."""
    job_dir = Path(job_dir)
    t0 = time.perf_counter()
    info = array_info(job_dir)
    if info is None:
        raise RuntimeError(f"{job_dir / ARRAY} missing: the array was not prepared at submission")
    src = omezarr.open_multiscale(spec["volume"]["path"])
    blocks = plan_blocks(src.levels[0].shape, block_shape(spec))
    done = set()
    for i in range(int(info["tasks"])):
        led = task_dir(job_dir, i) / LEDGER
        if led.exists():
            done |= set(led.read_text().split())
    missing = [block_key(b) for b in blocks if block_key(b) not in done]
    if missing:
        raise RuntimeError(f"{len(missing)} of {len(blocks)} blocks were not predicted (first: {missing[0]}); "
                           f"see tasks/*/stderr.log")
    ms = omezarr.open_multiscale(job_dir / OUTPUT, mode="r+")
    omezarr.build_pyramid(ms)
    return {"status": "completed", "output": OUTPUT, "blocks": len(blocks), "tasks": int(info["tasks"]),
            "seconds": round(time.perf_counter() - t0, 1)}
