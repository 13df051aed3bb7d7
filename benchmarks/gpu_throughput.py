"""Train step, bare model and end-to-end prediction throughput, side by side in one run (issue 12).

Four numbers on one device, one process, one model (untrained weights: speed does not depend on them):
- *train*: forward + backward + AdamW step on a batch of random patches (BCE on random targets), voxels
  of the batch per second;
- *bare*: `model(x)` on a preallocated device tensor of one block's halo-padded input (random uint8,
  normalised as the job does; as many blocks per batch as the pipeline would batch), under no_grad;
  reported two ways: voxels through
  the net per second (comparable with the issue's H100 reference, 0.33 Gvox/s for 4 levels, base 32) and
  block-output voxels per second (the same ÷ computed/output: what a prediction can deliver at best);
- *end to end*: `remote.predict.run` on a generated uint8 OME-Zarr whose sides are whole blocks (every
  block the bare model's shape), uint8 OME-Zarr out: read-ahead, batches, write-behind, ledger and
  progress events included, the pyramid not (it is reported apart with model loading); block-output
  voxels per second from the job's last progress event. One warm-up run first (cuDNN autotuning, page
  cache); then the ratio end-to-end ÷ bare (block output; bare timed again after the end-to-end run and
  the two averaged, so a neighbour's load drifting in shows as a spread), the issue's target ≥ 0.9;
- on CUDA, each of train and bare in fp32 eager (TF32 convolutions, torch's default) and in bf16
  autocast + channels_last_3d, the pipeline's setting; the measured activation memory per input voxel
  beside `remote.predict.bytes_per_voxel`'s estimate. On a CPU, float32 in channels_last_3d, the jobs'.
Then the halo table: for a 30×512×512 and a 200×4096×4096 volume at 50×4.6×4.6 nm (a 4-level U-Net's
halo there), the old default block and the block `remote.blocks.choose_block` takes for this device's
memory (and for an 80 GB GPU with the reference net), with the input a block computes and computed ÷
output voxels over the whole plan.

Load: the 1-minute load average is printed first; numbers taken beside another heavy process are low.
`--wait-load S` waits up to S seconds for it to fall under 1.

    python benchmarks/gpu_throughput.py --device cuda --base 32 --levels 4        # the issue's reference
    python benchmarks/gpu_throughput.py --device cpu --base 8 --levels 3 --block 32,128,128 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from remote import blocks, predict  # noqa: E402
from remote.checkpoints import save  # noqa: E402
from remote.model import LAYOUT, UNet3D, UNetConfig, normalize, pick_device  # noqa: E402
from sessions.geometry import Box  # noqa: E402
from sessions.jobfiles import read_events  # noqa: E402
from sessions.volumes import omezarr  # noqa: E402

ANISO = (50.0, 4.6, 4.6)
HALO_VOLUMES = [(30, 512, 512), (200, 4096, 4096)]
H100_BUDGET = predict.CUDA_MEMORY_FRACTION * 80e9  # the block chooser's budget on an idle 80 GB GPU


def triple(s: str) -> tuple[int, int, int]:
    v = tuple(int(x) for x in s.split(","))
    if len(v) != 3:
        raise argparse.ArgumentTypeError(f"{s!r}: give Z,Y,X")
    return v


def wait_for_load(seconds: float) -> float:
    """The 1-minute load average, after waiting up to `seconds` for it to fall under 1."""
    end = time.monotonic() + seconds
    while os.getloadavg()[0] >= 1 and time.monotonic() < end:
        time.sleep(5)
    return os.getloadavg()[0]


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def per_call(fn, device, seconds: float, warmup: int = 2) -> float:
    """Seconds per call of `fn`: `warmup` calls untimed, then calls until `seconds` have passed (≥ 3)."""
    for _ in range(warmup):
        fn()
    sync(device)
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < seconds:
        fn()
        n += 1
        sync(device)
    return (time.perf_counter() - t0) / n


def _net(cfg: UNetConfig, device, fast: bool) -> UNet3D:
    torch.manual_seed(0)
    return UNet3D(cfg).to(device, memory_format=_layout(device, fast))


def _layout(device, fast: bool):
    """The jobs' channels_last_3d, except for CUDA's fp32 eager reference (contiguous)."""
    return LAYOUT if fast or device.type != "cuda" else torch.contiguous_format


def _autocast(device, fast: bool):
    """bf16 where jobs use it: CUDA's fast mode only (remote/model.py)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast and device.type == "cuda")


def train_rate(cfg, device, patch, batch, seconds, fast: bool) -> float:
    """Gvox/s of training steps on a batch of `batch` patches."""
    model = _net(cfg, device, fast).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand((batch, 1, *patch), device=device) * 2 - 1
    y = (torch.rand_like(x) > 0.5).float()
    x = x.contiguous(memory_format=_layout(device, fast))

    def step():
        opt.zero_grad(set_to_none=True)
        with _autocast(device, fast):
            loss = F.binary_cross_entropy_with_logits(model(x).float(), y)
        loss.backward()
        opt.step()

    return batch * math.prod(patch) / per_call(step, device, seconds) / 1e9


def bare_rate(cfg, device, in_shape, batch, seconds, fast: bool) -> tuple[float, float | None]:
    """(Gvox/s through the net, measured activation bytes per input voxel on CUDA else None)."""
    model = _net(cfg, device, fast).eval()
    x = normalize(torch.randint(0, 256, (batch, 1, *in_shape), dtype=torch.uint8, device=device))  # as the job's
    x = x.contiguous(memory_format=_layout(device, fast))

    def forward():
        with torch.no_grad(), _autocast(device, fast):
            model(x)

    secs = per_call(forward, device, seconds)
    peak = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        forward()
        sync(device)
        peak = (torch.cuda.max_memory_allocated(device) - base) / (batch * math.prod(in_shape))
    return batch * math.prod(in_shape) / secs / 1e9, peak


def make_volume(path: Path, shape, block) -> None:
    """A uint8 OME-Zarr of random voxels (the codec's worst case), written one block-row at a time."""
    ms = omezarr.create(path, shape, (8, 8, 8))
    rng = np.random.default_rng(0)
    for z in range(0, shape[0], block[0]):
        for y in range(0, shape[1], block[1]):
            sl = (slice(z, z + block[0]), slice(y, y + block[1]), slice(None))
            ms.levels[0][sl] = rng.integers(0, 256, (block[0], block[1], shape[2]), dtype=np.uint8)


def end_to_end(cfg, device, block, n_blocks, threads, work: Path) -> dict:
    """remote.predict.run twice on a volume of `n_blocks` whole blocks (the first is the warm-up)."""
    shape = (block[0], block[1] * 2, block[2] * math.ceil(n_blocks / 2))
    make_volume(work / "v.ome.zarr", shape, block)
    torch.manual_seed(0)
    save({"config": cfg.to_dict(), "model": UNet3D(cfg).state_dict()}, work / "model.pt")
    spec = {"volume": {"name": "v", "path": str(work / "v.ome.zarr"), "voxel_size": [8, 8, 8]},
            "checkpoint": str(work / "model.pt"), "threads": threads, "device": device.type, "block": list(block)}
    for name in ("warm", "timed"):
        job = work / name
        job.mkdir()
        t0 = time.perf_counter()
        res = predict.run(spec, job)
        total = time.perf_counter() - t0
    last = [e for e in read_events(job)[0] if e["type"] == "progress"][-1]
    vox = math.prod(shape)
    return {"shape": list(shape), "blocks": res["blocks"], "gvox_s": last["voxels_per_s"] / 1e9,
            "blocks_s": vox / last["voxels_per_s"], "run_s": total}


def halo_nets(base: int) -> list[tuple[str, UNetConfig]]:
    """The nets of the halo table at 50×4.6×4.6 nm: the issue's reference (4 levels, no stem, `base`) and the
    one a round trains from scratch there (train_options' defaults, `rounds.default_stem`), whose 4× stem
    widens the in-plane halo fourfold."""
    from sessions import train_options as opts
    from sessions.rounds import default_stem

    stem = default_stem(ANISO)
    return [(f"4 levels, base {base}, no stem", UNetConfig(voxel_size=ANISO, levels=4, base=base)),
            (f"default: base {opts.DEFAULT_BASE}, stem {','.join(map(str, stem))}",
             UNetConfig(voxel_size=ANISO, levels=opts.DEFAULT_LEVELS, base=opts.DEFAULT_BASE, stem=stem,
                        kernel_grid=opts.DEFAULT_KERNEL_GRID))]


def halo_rows(base: int, device) -> list[dict]:
    """Old default block vs the chosen one, for this device's memory and for an 80 GB GPU (bf16), per net."""
    rows, budget_here = [], predict.memory_budget(device)
    for net, cfg in halo_nets(base):
        model = UNet3D(cfg)
        div, halo = cfg.divisor, predict.block_halo(model)
        here = (f"this {device.type} ({budget_here / 1e9:.1f} GB budget)", predict.bytes_per_voxel(model, device),
                budget_here)
        ref = ("80 GB GPU, bf16", predict.bytes_per_voxel(model, torch.device("cuda")), H100_BUDGET)
        for shape in HALO_VOLUMES:
            choices = [("old default", blocks.DEFAULT_BLOCK)]
            choices += [(name, blocks.choose_block(shape, halo, div, bpv, budget)) for name, bpv, budget in (here, ref)]
            for name, block in choices:
                biggest = tuple(min(b, s) for b, s in zip(block, shape))
                rows.append({"net": net, "halo": list(halo), "volume": list(shape), "memory": name,
                             "block": list(block), "input": list(blocks.input_shape(biggest, halo, div)),
                             "computed_per_output": blocks.computed_per_output(shape, block, halo, div)})
    return rows


def halo_report(rows: list[dict]) -> list[str]:
    lines = ["halo at 50×4.6×4.6 nm (computed ÷ output voxels over the whole plan, edge blocks included):",
             f"{'net':30} {'halo':12} {'volume':14} {'memory':28} {'block':14} {'input computed':15} {'comp/out':>8}"]
    for h in rows:
        lines.append(f"{h['net']:30} {','.join(map(str, h['halo'])):12} {'×'.join(map(str, h['volume'])):14} "
                     f"{h['memory']:28} {'×'.join(map(str, h['block'])):14} {'×'.join(map(str, h['input'])):15} "
                     f"{h['computed_per_output']:8.3f}")
    return lines


def measure(args) -> dict:
    device = pick_device(args.device)
    torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    load = wait_for_load(args.wait_load)
    cfg = UNetConfig(voxel_size=(8, 8, 8), levels=args.levels, base=args.base)
    div = cfg.divisor
    halo = predict.block_halo(UNet3D(cfg))
    block = blocks.block_shape({"block": args.block})
    in_shape = blocks.input_shape(block, halo, div)
    overhead = math.prod(in_shape) / math.prod(block)
    core = Box((0, 0, 0), block)
    batch = predict.batch_blocks({}, [core], halo, div, model=UNet3D(cfg), device=device)
    modes = [("bf16+channels_last", True), ("fp32 eager", False)] if device.type == "cuda" else \
        [("fp32+channels_last", False)]
    out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else
           f"CPU ({torch.get_num_threads()} threads)", "load_1min": round(load, 2), "base": args.base,
           "levels": args.levels, "block": list(block), "input": list(in_shape), "computed_per_output": overhead,
           "batch_blocks": batch, "patch": list(args.patch), "train_batch": args.batch, "modes": {}}
    for name, fast in modes:
        tensor, peak = bare_rate(cfg, device, in_shape, batch, args.seconds, fast)
        out["modes"][name] = {"train_gvox_s": train_rate(cfg, device, args.patch, args.batch, args.seconds, fast),
                              "bare_tensor_gvox_s": tensor, "bare_output_gvox_s": tensor / overhead,
                              **({"activation_bytes_per_voxel": peak} if peak is not None else {})}
    if device.type == "cuda":
        out["estimated_bytes_per_voxel"] = predict.bytes_per_voxel(UNet3D(cfg), device)
    (name, fast), before = modes[0], out["modes"][modes[0][0]]["bare_output_gvox_s"]
    n_blocks = max(2 * batch, math.ceil(args.seconds * before * 1e9 / math.prod(block)))
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        e2e = end_to_end(cfg, device, block, n_blocks, args.threads, Path(tmp))
    after = bare_rate(cfg, device, in_shape, batch, args.seconds, fast)[0] / overhead  # bare again: drift shows
    bare = (before + after) / 2
    out["end_to_end"] = {**e2e, "mode": name, "bare_before_gvox_s": before, "bare_after_gvox_s": after,
                         "ratio_to_bare": e2e["gvox_s"] / bare}
    out["load_1min_end"] = round(os.getloadavg()[0], 2)
    out["halo"] = halo_rows(args.base, device)
    return out


def report(r: dict, argv: list[str]) -> str:
    lines = [f"device: {r['device']}   load (1 min) {r['load_1min']} at the start, {r['load_1min_end']} at the end"
             + ("   (another process was running: numbers may be low)" if r["load_1min"] >= 1 else ""),
             f"model: 3D U-Net, {r['levels']} levels, base {r['base']}, isotropic voxels; block {r['block']} "
             f"computes {r['input']} ({r['computed_per_output']:.2f}× its output), {r['batch_blocks']} per batch; "
             f"train patch {r['patch']} × {r['train_batch']}",
             "", f"{'mode':20} {'train':>9} {'bare net':>9} {'bare out':>9}   Gvox/s"]
    for name, m in r["modes"].items():
        mem = (f"   activations {m['activation_bytes_per_voxel']:.0f} B/voxel (estimate "
               f"{r['estimated_bytes_per_voxel']:.0f})") if "activation_bytes_per_voxel" in m else ""
        lines.append(f"{name:20} {m['train_gvox_s']:9.4g} {m['bare_tensor_gvox_s']:9.4g} "
                     f"{m['bare_output_gvox_s']:9.4g}{mem}")
    e = r["end_to_end"]
    lines += ["", f"end to end (remote.predict.run, uint8 zarr {e['shape']} in → uint8 zarr out, {e['blocks']} blocks): "
              f"{e['gvox_s']:.4g} Gvox/s of block output in {e['blocks_s']:.1f} s "
              f"(run with model load + pyramid {e['run_s']:.1f} s)",
              f"ratio end to end ÷ bare (block output, {e['mode']}; bare {e['bare_before_gvox_s']:.4g} before, "
              f"{e['bare_after_gvox_s']:.4g} after, their mean): {e['ratio_to_bare']:.3f}",
              ""] + halo_report(r["halo"])
    lines += ["", "reproduce: python benchmarks/gpu_throughput.py " + " ".join(argv)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="cuda, cpu or auto")
    ap.add_argument("--base", type=int, default=32, help="base channels (32: the issue's reference)")
    ap.add_argument("--levels", type=int, default=4)
    ap.add_argument("--block", type=triple, default=(64, 256, 256), help="prediction block Z,Y,X")
    ap.add_argument("--patch", type=triple, default=(64, 128, 128), help="training patch Z,Y,X")
    ap.add_argument("--batch", type=int, default=2, help="training batch")
    ap.add_argument("--seconds", type=float, default=10.0, help="timing budget of each measurement")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads")
    ap.add_argument("--wait-load", type=float, default=0.0, help="seconds to wait for the load to fall under 1")
    ap.add_argument("--workdir", default=None, help="where the generated volume goes (default: the temp dir)")
    ap.add_argument("--halo-only", action="store_true", help="print only the halo table (no timing; seconds)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.halo_only:
        rows = halo_rows(args.base, pick_device(args.device))
        print(json.dumps(rows, indent=2) if args.json else "\n".join(halo_report(rows)))
        return
    r = measure(args)
    print(json.dumps(r, indent=2) if args.json else report(r, argv))


if __name__ == "__main__":
    main()
