"""Training / fine-tuning job: masked BCE + Dice on sparse labels, one class at a time.

Resumable: every `checkpoint_every` iterations the full state (model,
optimiser, LR schedule, RNG states, iteration) goes atomically to
`checkpoint.pt`; a restarted job continues from it. SIGTERM/SIGUSR1 ask for
a checkpoint at the next iteration boundary and a clean exit.

A resumed training is a new job (a new attempt, `resume_from` in its spec)
whose directory starts with the old attempt's checkpoint.pt: it continues from
that iteration exactly ("resumed" event; steps, metrics and RNG streams go on
from there), so with the same total it ends on bit-identical weights. With more
iterations, the warm-up stays as it was and the cosine decay is recomputed for
the new total: from the resumed iteration on, the learning rate follows the
schedule of a run that had been started with the new total.
"""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from remote.checkpoints import CHECKPOINT, MODEL, load_model, save
from remote.model import UNet3D, UNetConfig, normalize, pick_device
from remote.sampling import PatchSampler
from sessions.jobfiles import append_event
from sessions.volumes import omezarr


class Interrupted(Exception):
    """Raised after a checkpoint was written because the scheduler asked us to stop."""


def masked_loss(logits: torch.Tensor, tgt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    n = mask.sum().clamp_min(1.0)
    bce = (F.binary_cross_entropy_with_logits(logits, tgt, reduction="none") * mask).sum() / n
    p = torch.sigmoid(logits) * mask
    inter = (p * tgt).sum()
    dice = 1 - (2 * inter + 1) / (p.sum() + (tgt * mask).sum() + 1)
    return bce + dice


def lr_factor(it: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 1 %: stable final weights without picking on eval data."""
    if it < warmup:
        return (it + 1) / warmup
    t = (it - warmup) / max(1, total - warmup)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def run(spec: dict, job_dir: Path) -> dict:
    job_dir = Path(job_dir)
    stop = {"signal": None}  # asked to stop during the set-up too: one step, a checkpoint, a clean exit

    def on_signal(signum, _frame):
        stop["signal"] = signal.Signals(signum).name

    for s in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(s, on_signal)
    device = pick_device(spec.get("device", "auto"))
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    seed = int(spec.get("seed", 0))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)

    raw = omezarr.open_multiscale(spec["volume"]["path"]).levels[0]
    cfg = UNetConfig(voxel_size=tuple(spec["volume"]["voxel_size"]), **spec.get("model", {}))
    model = UNet3D(cfg).to(device)
    ck_path = job_dir / CHECKPOINT
    if spec.get("resume_from") and not ck_path.exists():
        raise ValueError(f"spec resumes {spec['resume_from'].get('job')} but {ck_path} is missing; "
                         "resume again, or train from scratch")
    if spec.get("init_checkpoint") and not ck_path.exists():  # resuming: the checkpoint has the weights
        init, _ = load_model(spec["init_checkpoint"], device)
        if init.cfg.to_dict() != cfg.to_dict():
            raise ValueError(f"{spec['init_checkpoint']} has another architecture than the spec's model; "
                             "train from scratch")
        model.load_state_dict(init.state_dict())
    total = int(spec["iterations"])
    opt = torch.optim.AdamW(model.parameters(), lr=float(spec.get("lr", 1e-3)),
                            weight_decay=float(spec.get("weight_decay", 1e-4)))
    warmup = max(1, min(100, total // 20)) if not spec.get("init_checkpoint") else 1
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: lr_factor(it, total, warmup))

    sampler = PatchSampler(raw, spec["crops"], spec["target"], spec["patch"], rng,
                           transpose_yx=spec["volume"]["voxel_size"][1] == spec["volume"]["voxel_size"][2])
    start = 0
    if ck_path.exists():
        ck = torch.load(ck_path, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        torch.set_rng_state(ck["torch_rng"])
        rng.bit_generator.state = ck["numpy_rng"]
        start = ck["iteration"]
        warmup = ck.get("warmup", warmup)  # the lambda reads it: the warm-up of the first attempt
        if ck.get("total", total) != total:  # more iterations: this step's LR on the new total's schedule
            for g, base_lr in zip(opt.param_groups, sched.base_lrs):
                g["lr"] = base_lr * lr_factor(start, total, warmup)
            sched._last_lr = [g["lr"] for g in opt.param_groups]
        append_event(job_dir, "resumed", step=start, total=total, **(
            {"previous_total": ck["total"]} if ck.get("total", total) != total else {}))

    def checkpoint(it: int) -> None:
        save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
              "torch_rng": torch.get_rng_state(), "numpy_rng": rng.bit_generator.state, "iteration": it,
              "config": cfg.to_dict(), "total": total, "warmup": warmup}, ck_path)
        append_event(job_dir, "checkpoint", step=it, path=CHECKPOINT)

    batch, every = int(spec.get("batch", 2)), int(spec.get("checkpoint_every", 100))
    log_every = max(1, int(spec.get("log_every", 5)))
    model.train()
    t0, seen, run_loss = time.perf_counter(), 0, []
    for it in range(start, total):
        samples = [sampler.sample() for _ in range(batch)]
        x = normalize(torch.from_numpy(np.stack([s[0] for s in samples])[:, None])).to(device)
        y = torch.from_numpy(np.stack([s[1] for s in samples])[:, None]).to(device)
        m = torch.from_numpy(np.stack([s[2] for s in samples])[:, None]).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x)
        loss = masked_loss(logits.float(), y, m)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        seen += x.numel()
        run_loss.append(loss.item())
        done = it + 1
        if done % log_every == 0 or done == total:
            dt = time.perf_counter() - t0
            append_event(job_dir, "progress", step=done, total=total, loss=float(np.mean(run_loss)),
                         lr=sched.get_last_lr()[0], voxels_per_s=seen / dt if dt else 0.0)
            run_loss = []
        if stop["signal"]:
            checkpoint(done)
            append_event(job_dir, "interrupted", step=done, signal=stop["signal"])
            raise Interrupted(f"stopped by {stop['signal']} at iteration {done}; checkpoint written")
        if done % every == 0 and done < total:
            checkpoint(done)

    save({"model": model.state_dict(), "config": cfg.to_dict(), "target": spec["target"],
          "target_name": spec.get("target_name"), "iterations": total, "seed": seed}, job_dir / MODEL)
    append_event(job_dir, "checkpoint", step=total, path=MODEL, final=True)
    return {"status": "completed", "checkpoint": MODEL, "iterations": total,
            "seconds": round(time.perf_counter() - t0, 1)}
