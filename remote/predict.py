"""Blockwise whole-volume prediction into a probability OME-Zarr (uint8, p×255).

Each block is predicted with a halo at least as wide as the network's
receptive field, and block origins sit on the network's pooling grid, so the
stitched result equals a single whole-volume pass: no tiling seams. Done
blocks are recorded in `blocks.done`, so a restarted job skips them.

Prediction is a pipeline (remote/pipeline.py): a read-ahead thread reads and
mirror-pads the inputs of the coming batches, the job's thread only runs the
model, and a write-behind thread writes each block's uint8 output into the
zarr and only then appends its key to the ledger, so a block in the ledger is
on disk (a crash may redo a block, never skip one). A batch holds up to
`spec["batch_blocks"]` blocks of the same input shape (edge blocks of another
shape make their own batches). The model and its inputs are in channels_last_3d
on every device (remote/model.py). On CUDA also: cuDNN autotuning, bf16 autocast,
pinned host buffers and asynchronous copies both ways. On CPU each block of a batch still goes
through the network alone: oneDNN's convolutions are not batch-invariant
(measured: a batch of 3 differs from 3 single passes by up to 6e-8, enough
to flip a uint8 rounding), and a bigger batch buys no CPU throughput at real
block sizes; so the output is bit-identical to `predict_block`'s, block by
block.

Block size: the spec's `block` when it names one; otherwise the single
process job chooses it on the node that runs it, from the memory free there
(`memory_budget`) and the model's activation memory per input voxel
(`bytes_per_voxel`, an estimate from the config), with
`remote.blocks.choose_block` (halo overhead ≤ 1.30 where memory allows), and
records it in `block.json` before the first block: a resumed run, maybe on a
node with other memory, keeps the grid its ledger was written on. An array's
tasks and its final step run on different nodes and cannot each measure:
they use the block recorded in `array.json` when the submitting side put one
there, else `block_shape(spec)`, the same on every node.

A preview job (kind `preview`) is the same run with `spec["region"]`
({"offset", "shape"}, level-0 voxels): only the blocks of the same grid that
overlap the region are predicted, into a store of the whole volume's shape
(unwritten chunks cost nothing), and no pyramid is built (it would read the
whole volume). The same blocks on the same grid: the region's voxels equal
the whole-volume prediction's. A preview never grows its blocks: a small
region wants small blocks.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from remote.blocks import block_key, block_shape, choose_block, computed_per_output, input_shape, plan_blocks, \
    round_up, task_slice
from remote.checkpoints import load_model
from remote.model import LAYOUT, UNet3D, normalize, pick_device
from remote.pipeline import ReadAhead, WriteBehind
from remote.preprocess import wrap
from remote.predict_array import OUTPUT, task_dir
from remote.sampling import read_padded
from sessions.geometry import Box
from sessions.jobfiles import append_event, atomic_write_json, read_json
from sessions.jobs import ARRAY, LEDGER, array_info
from sessions.volumes import omezarr

BLOCK_PLAN = "block.json"  # the block a single-process run chose, for its resumes
DEPTH = 2  # batches read ahead, and batches waiting to be written
MAX_BATCH_BLOCKS = 4  # CUDA default cap: past a few blocks a batch no longer raises GPU utilisation
CUDA_MEMORY_FRACTION = 0.8  # of the free GPU memory (cuDNN workspaces, allocator fragmentation)
CPU_MEMORY_FRACTION = 0.25  # of the available RAM: a node's RAM is shared, and a job's limit may be lower
# Live activation values per input voxel and base channel at the forward's peak (level-0 skip, the
# decoder's concatenation and the conv and norm outputs, plus the coarser levels). Measured on CPU fp32
# with /proc VmHWM: 33-46 bytes per voxel per base channel (8-12 values) for base 8-16, 3-4 levels.
ACTIVATION_VALUES = 12
# A stem's full-resolution end, in values per input voxel and per channel of its output: the transposed
# convolution's output, the concatenation with the input, the convolution and its norm, and oneDNN's
# channel-padded copies of them. Measured (VmHWM, base 16, eval, 40×480×480): stem 1,4,4 233 bytes per
# voxel, 1,2,2 272 (the estimate below: 248 and 392; without a stem 650 against 768).
STEM_VALUES = 6


def receptive_radius(model: UNet3D) -> tuple[int, int, int]:
    """Voxels of context each output voxel sees, per axis (upper bound)."""
    cfg = model.cfg
    r, scale = [0, 0, 0], list(cfg.stem)
    if cfg.stem != (1, 1, 1):  # the full-resolution convolution, the transposed one and the pooling
        r = [k // 2 + 2 * (s - 1) for k, s in zip(cfg.full_kernel, cfg.stem)]
    for lvl, k in enumerate(cfg.kernels):
        convs = 2 if lvl == len(cfg.kernels) - 1 else 4
        r = [ri + (ki // 2) * convs * s for ri, ki, s in zip(r, k, scale)]
        if lvl < len(cfg.pools):
            r = [ri + (p - 1) * s for ri, p, s in zip(r, cfg.pools[lvl], scale)]
            scale = [s * p for s, p in zip(scale, cfg.pools[lvl])]
    return tuple(r)


def block_halo(model: UNet3D) -> tuple[int, int, int]:
    """The halo every blockwise prediction pads with: the receptive radius up to the pooling grid, so block
    inputs stay on the grid and stitch without seams (prediction, validation, preview and export agree)."""
    return tuple(round_up(r, d) for r, d in zip(receptive_radius(model), model.cfg.divisor))


def input_box(core: Box, halo, div) -> Box:
    """The halo-padded, grid-aligned input a block's output needs."""
    lo = tuple(o - h for o, h in zip(core.offset, halo))
    return Box(lo, input_shape(core.shape, halo, div))


def read_input(raw, core: Box, halo, div) -> np.ndarray:
    return np.ascontiguousarray(read_padded(raw, input_box(core, halo, div)))


def _probabilities(model, t: torch.Tensor, device) -> torch.Tensor:
    """Sigmoid of the model on a uint8 batch (N, 1, z, y, x) already on `device` (float32)."""
    x = normalize(t).contiguous(memory_format=LAYOUT)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        return torch.sigmoid(model(x).float())


def _to_u8(p: torch.Tensor, core: Box, halo) -> torch.Tensor:
    """One block's probabilities (z, y, x), halo cropped, as p×255 rounded."""
    p = p[tuple(slice(h, h + s) for h, s in zip(halo, core.shape))]
    return (p * 255).round_().to(torch.uint8)


def predict_block(model, raw, core: Box, halo, div, device) -> np.ndarray:
    """Probability (uint8) for `core`, from a halo-padded, grid-aligned input."""
    t = torch.from_numpy(read_input(raw, core, halo, div))[None, None].to(device)
    return _to_u8(_probabilities(model, t, device)[0, 0], core, halo).cpu().numpy()


def _load(spec: dict):
    device = pick_device(spec.get("device", "auto"))
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    src = omezarr.open_multiscale(spec["volume"]["path"])
    model, ck = load_model(spec["checkpoint"], device)
    model.eval()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one autotuning per input shape; a plan has one or a few
    div = model.cfg.divisor
    halo = block_halo(model)
    raw = wrap(src.levels[0], ck.get("preprocess"), spec["volume"]["path"])  # the model's own preprocessing
    return device, src, raw, model, div, halo


# ----------------------------------------------------------------------------- memory and block size

def bytes_per_voxel(model: UNet3D, device) -> float:
    """Activation memory of the forward per input voxel: an estimate from the config (bf16 on CUDA, float32
    on CPU). The levels hold ACTIVATION_VALUES values per base channel on their own grid, 1/prod(stem) of the
    input's voxels; a stem's full-resolution end adds STEM_VALUES per output channel. Summed, not the larger
    of the two: an upper bound. benchmarks/gpu_throughput.py measures it on CUDA."""
    cfg = model.cfg
    values = ACTIVATION_VALUES * cfg.base / math.prod(cfg.stem)
    if cfg.stem != (1, 1, 1):
        values += STEM_VALUES * model.head.in_channels + 2 * cfg.in_channels
    return values * (2 if device.type == "cuda" else 4)


def _ram_available() -> int:
    """Bytes this process may still use: the kernel's MemAvailable, lowered to the cgroup's limit (a Slurm
    job's --mem) when there is one."""
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        avail = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            avail = min(avail, int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return max(0, avail)


def memory_budget(device) -> float:
    """Bytes a batch's activations may take on `device`, measured now (so it differs between nodes)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return CUDA_MEMORY_FRACTION * free
    return CPU_MEMORY_FRACTION * _ram_available()


def _chosen_block(spec: dict, job_dir: Path, shape, resuming: bool, *, model, halo, div, device) -> tuple:
    """A single-process run's block: the spec's; else, resuming, the one recorded (or the old default, for a
    run begun before blocks were chosen); else chosen from the memory here and recorded before any block."""
    if "block" in spec or spec.get("region") is not None:
        return block_shape(spec)
    path = Path(job_dir) / BLOCK_PLAN
    if resuming:
        return tuple(read_json(path)["block"]) if path.exists() else block_shape(spec)
    bpv, budget = bytes_per_voxel(model, device), memory_budget(device)
    block = choose_block(shape, halo, div, bpv, budget)
    atomic_write_json(path, {"block": list(block), "bytes_per_voxel": bpv, "budget_bytes": int(budget),
                             "computed_per_output": round(computed_per_output(shape, block, halo, div), 4)})
    return block


def _array_block(spec: dict, info: dict) -> tuple:
    """An array's block, the same for the submitter, every task and the final step."""
    return tuple(int(b) for b in info["block"]) if info.get("block") else block_shape(spec)


def batch_blocks(spec: dict, todo: list[Box], halo, div, *, model, device) -> int:
    """Blocks per batch: the spec's; on CPU 1 (see the module docstring); on CUDA as many of the biggest
    input as the free memory holds, at most MAX_BATCH_BLOCKS."""
    if spec.get("batch_blocks"):
        return max(1, int(spec["batch_blocks"]))
    if device.type != "cuda" or not todo:
        return 1
    biggest = max(math.prod(input_shape(b.shape, halo, div)) for b in todo)
    return int(max(1, min(MAX_BATCH_BLOCKS, memory_budget(device) // (biggest * bytes_per_voxel(model, device)))))


# ----------------------------------------------------------------------------- the pipeline

def _batches(blocks: list[Box], halo, div, n: int) -> list[list[Box]]:
    """The blocks in runs of up to `n` of the same input shape, in plan order within a shape."""
    by_shape: dict[tuple, list[Box]] = {}
    for b in blocks:
        by_shape.setdefault(input_shape(b.shape, halo, div), []).append(b)
    return [g[i:i + n] for g in by_shape.values() for i in range(0, len(g), n)]


def _read_batch(raw, cores: list[Box], halo, div, pin: bool):
    """(cores, uint8 tensor (N, 1, z, y, x)); in pinned memory for an asynchronous copy to the GPU."""
    first = read_input(raw, cores[0], halo, div)
    x = torch.empty((len(cores), 1, *first.shape), dtype=torch.uint8, pin_memory=pin)
    view = x.numpy()
    view[0, 0] = first
    for i, core in enumerate(cores[1:], 1):
        view[i, 0] = read_input(raw, core, halo, div)
    return cores, x


def _infer_batch(model, x: torch.Tensor, cores: list[Box], halo, device):
    """(cores, uint8 outputs, CUDA event or None): the outputs are ready to write once the event is done."""
    if device.type != "cuda":
        outs = [_to_u8(_probabilities(model, x[i:i + 1], device)[0, 0], c, halo) for i, c in enumerate(cores)]
        return cores, outs, None
    p = _probabilities(model, x.to(device, non_blocking=True), device)
    outs = []
    for i, core in enumerate(cores):
        u8 = _to_u8(p[i, 0], core, halo)
        outs.append(torch.empty(u8.shape, dtype=torch.uint8, pin_memory=True).copy_(u8, non_blocking=True))
    done = torch.cuda.Event()
    done.record()
    return cores, outs, done


class _Writer:
    """The write-behind side: each block into the zarr, then its key into the ledger, then a progress event."""

    def __init__(self, out, ledger, events_dir: Path, step: int, total: int):
        self.out, self.ledger, self.events_dir = out, ledger, events_dir
        self.step, self.total, self.voxels, self.t0 = step, total, 0, time.perf_counter()

    def __call__(self, item) -> None:
        cores, outs, done = item
        if done is not None:
            done.synchronize()
        for core, u8 in zip(cores, outs):
            self.out[core.slices] = u8.numpy()
            self.ledger.write(block_key(core) + "\n")
            self.ledger.flush()
            self.step, self.voxels = self.step + 1, self.voxels + core.size
            dt = time.perf_counter() - self.t0
            append_event(self.events_dir, "progress", step=self.step, total=self.total,
                         voxels_per_s=self.voxels / dt if dt else 0.0)


def _predict_blocks(spec, blocks, out, ledger: Path, done: set, events_dir: Path, *, model, raw, halo, div,
                    device) -> float:
    """Every block of `blocks` not in `done`, through the pipeline; the seconds it took."""
    t0 = time.perf_counter()
    todo = [b for b in blocks if block_key(b) not in done]
    n = batch_blocks(spec, todo, halo, div, model=model, device=device)
    pin = device.type == "cuda"
    with open(ledger, "a") as led:
        write = _Writer(out, led, events_dir, len(blocks) - len(todo), len(blocks))  # its clock starts first
        with ReadAhead(_batches(todo, halo, div, n), lambda cores: _read_batch(raw, cores, halo, div, pin),
                       DEPTH) as inputs, WriteBehind(write, DEPTH) as writer:
            for cores, x in inputs:
                writer.put(_infer_batch(model, x, cores, halo, device))
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- the job's entry points

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
    device, src, raw, model, div, halo = _load(spec)
    region = region_of(spec, raw.shape)
    out_path = job_dir / OUTPUT
    ledger = job_dir / LEDGER
    done = set(ledger.read_text().split()) if ledger.exists() and out_path.exists() else set()
    block = _chosen_block(spec, job_dir, raw.shape, bool(done), model=model, halo=halo, div=div, device=device)
    if not done:
        ms = omezarr.create(out_path, raw.shape, src.voxel_size, name="prediction", chunks=omezarr.DEFAULT_CHUNKS)
        ledger.write_text("")
    else:
        ms = omezarr.open_multiscale(out_path, mode="r+")
        append_event(job_dir, "resumed", step=len(done))
    blocks = [b for b in plan_blocks(raw.shape, block) if region is None or b.overlaps(region)]
    t0 = time.perf_counter()
    _predict_blocks(spec, blocks, ms.levels[0], ledger, done, job_dir, model=model, raw=raw, halo=halo, div=div,
                    device=device)
    if region is None:
        omezarr.build_pyramid(ms)
    return {"status": "completed", "output": OUTPUT, "blocks": len(blocks), "halo": list(halo),
            "block": list(block), "computed_per_output": round(computed_per_output(raw.shape, block, halo, div), 3),
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
    device, src, raw, model, div, halo = _load(spec)
    blocks = plan_blocks(raw.shape, _array_block(spec, info))
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
    blocks = plan_blocks(src.levels[0].shape, _array_block(spec, info))
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
