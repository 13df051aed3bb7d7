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

Preprocessing (remote/preprocess.py) is resolved here, once, on the volume,
and stored in model.pt, so prediction and preview apply exactly what training
saw. Validation: the slabs `PatchSampler` held apart score the model at
`validation_steps` ("metric" events val_iou and val_dice at p ≥ 0.5, the curve
the TUI plots beside the loss, and the best threshold's), as often as a tenth of
the run's compute allows, the last time after the final step. model.pt holds
the weights the spec's `choose` names: "best" (the default), those that scored
best at their best threshold (ties: the later); "final", the last step's. Either
way the threshold the slabs chose for them is folded into the head's bias
(`calibrated`: the nets trained here over-predict, and the slabs' threshold
carries to the held-out regions, docs/benchmarks.md); its "chosen" says which
rule, step, scores and threshold. On a GPU, batches are made in a
background thread (`Batches`), in pinned memory, while the model trains; on a
CPU in line (`InLine`).
"""

from __future__ import annotations

import math
import queue
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from remote.checkpoints import CHECKPOINT, MODEL, load_model, save
from remote.model import LAYOUT, UNet3D, UNetConfig, pick_device
from remote.preprocess import resolve, wrap
from remote.sampling import PatchSampler
from sessions.jobfiles import append_event
from sessions.train_options import TTA, check_tta
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


def make_batch(sampler: PatchSampler, rng: np.random.Generator, batch: int, pin: bool = False):
    """(x, y, mask, the sampler's RNG state after it): the state is what a checkpoint after this batch must
    store for a resumed run to draw the same next batch."""
    samples = [sampler.sample() for _ in range(batch)]
    x, y, m = (torch.from_numpy(np.stack([s[i] for s in samples])[:, None]) for i in range(3))
    if pin:
        x, y, m = x.pin_memory(), y.pin_memory(), m.pin_memory()
    return x, y, m, rng.bit_generator.state  # a fresh dict each time it is read


class InLine:
    """Batches made when asked, in the training thread: on a CPU a background thread beside torch's own
    threads oversubscribes the cores and measured 1.8× slower per iteration (2 cores, vnc-mito)."""

    def __init__(self, sampler: PatchSampler, rng: np.random.Generator, batch: int):
        self.args = (sampler, rng, batch)

    def next(self):
        return make_batch(*self.args)

    def close(self) -> None:
        pass


class Batches:
    """Batches made ahead in one background thread, in order, in pinned memory: the GPU never waits for
    the CPU's sampling and augmentation."""

    def __init__(self, sampler: PatchSampler, rng: np.random.Generator, batch: int, count: int, depth: int = 3):
        self.q: queue.Queue = queue.Queue(depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._fill, args=(sampler, rng, batch, count), daemon=True)
        self.thread.start()

    def _fill(self, sampler, rng, batch, count):
        try:
            for _ in range(count):
                item = make_batch(sampler, rng, batch, pin=True)
                while not self.stop.is_set():
                    try:
                        self.q.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if self.stop.is_set():
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the training loop, which raises it
            self.q.put(e)

    def next(self):
        item = self.q.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


VALIDATION_SHARE = 0.1    # of a run's compute that scoring the slabs may take
FORWARD_COST = 0.7        # a voxel through the net in eval mode ÷ a voxel of a training step (CPU, measured
                          # 0.6–0.75 on vnc-mito: big blocks forward are slower per voxel than their third)


def validation_cost(model, regions, batch: int, patch) -> float:
    """One score of the slabs, in training iterations' worth: the halo-padded inputs it computes (a thin
    slab of a large-context net computes several times its own voxels, once per test-time flip) against a
    step's patches."""
    from remote.blocks import input_shape
    from remote.predict import block_halo

    div, halo = model.cfg.divisor, block_halo(model)
    voxels = sum(math.prod(input_shape(v.box.shape, halo, div)) for v in regions)
    return FORWARD_COST * len(TTA[model.tta]) * voxels / (batch * math.prod(patch))


def validation_steps(total: int, cost: float, every: int | None = None, most: int = 6) -> list[int]:
    """After which iterations the slabs are scored: `n` evenly spaced steps ending at `total`, as many as keep
    their cost (`cost` iterations each) within VALIDATION_SHARE of the run, at least 2 (the choice needs a
    rival to the final weights) and at most `most`. Deterministic (no timing), so a seed's run chooses the
    same checkpoint every time. `every` (the spec's validate_every) asks for a fixed spacing instead."""
    if every:
        return sorted({*range(int(every), total + 1, int(every)), total})
    n = max(2, min(most, int(VALIDATION_SHARE * total / max(cost, 1e-9))))
    n = min(n, total)
    return sorted({round(total * (i + 1) / n) for i in range(n)})


def averager(model, total: int, horizon: float):
    """An exponential moving average of the weights and BatchNorm statistics (torch's AveragedModel), over the
    last `horizon` of the run (decay 1 - 1/(horizon·total)); None if `horizon` is 0. With the cosine decay its
    final weights are the run's smoothed end point rather than one noisy step of it."""
    if not horizon:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    decay = 1.0 - 1.0 / max(1.0, float(horizon) * total)
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


THRESHOLDS = [round(0.1 + 0.05 * i, 2) for i in range(18)]  # 0.10 … 0.95: where the slabs may move p ≥ 0.5


def hist_scores(hist: np.ndarray, k: int) -> tuple[float, float]:
    """IoU and Dice of the target at p ≥ k/255 from a [other labelled, target] × uint8-probability histogram."""
    tp, fp = int(hist[1, k:].sum()), int(hist[0, k:].sum())
    fn = int(hist[1].sum()) - tp
    return (tp / (tp + fp + fn) if tp + fp + fn else 1.0, 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0)


def validate(model, raw, regions, target: int, device) -> dict:
    """The held-apart slabs' labelled voxels scored as prediction makes them (the same halo, on the pooling
    grid): IoU and Dice of the target at p ≥ 0.5, and the threshold of THRESHOLDS with the best IoU (ties:
    the nearest to 0.5) with that IoU. One histogram of the uint8 probabilities per class gives every
    threshold at once."""
    from remote.predict import block_halo, predict_block

    div, halo = model.cfg.divisor, block_halo(model)
    hist = np.zeros((2, 256), np.int64)  # [other labelled, target] × probability
    model.eval()
    try:
        for v in regions:
            p = predict_block(model, raw, v.box, halo, div, device)
            known, t = v.labels > 0, v.labels == target
            hist[0] += np.bincount(p[known & ~t], minlength=256)
            hist[1] += np.bincount(p[t], minlength=256)
    finally:
        model.train()
    iou, dice = hist_scores(hist, 128)
    at = {th: hist_scores(hist, round(th * 255))[0] for th in THRESHOLDS}
    best = max(THRESHOLDS, key=lambda th: (at[th], -abs(th - 0.5)))
    return {"val_iou": float(iou), "val_dice": float(dice), "val_iou_best": float(at[best]), "val_threshold": best}


def calibrated(weights: dict, threshold: float) -> dict:
    """The weights with the head's bias lowered by logit(threshold): the saved model's p ≥ 0.5 is the trained
    one's p ≥ threshold, so prediction, preview, evaluation, objects and exports all use the threshold the
    validation slabs chose without knowing of it."""
    if threshold == 0.5:
        return weights
    out = dict(weights)
    out["head.bias"] = weights["head.bias"] - math.log(threshold / (1 - threshold))
    return out


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

    src = omezarr.open_multiscale(spec["volume"]["path"])
    ck_path = job_dir / CHECKPOINT
    ck = torch.load(ck_path, map_location="cpu", weights_only=False) if ck_path.exists() else None
    # a resumed attempt keeps the percentiles its first attempt measured
    pre = ck["preprocess"] if ck and "preprocess" in ck else resolve(spec.get("preprocess"), src.levels)
    raw = wrap(src.levels[0], pre, spec["volume"]["path"])
    cfg = UNetConfig(voxel_size=tuple(spec["volume"]["voxel_size"]), **spec.get("model", {}))
    model = UNet3D(cfg).to(device, memory_format=LAYOUT)
    model.tta = check_tta(spec.get("tta", "none"))  # applied in eval mode only: the slabs score the net as prediction runs it
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if spec.get("resume_from") and ck is None:
        raise ValueError(f"spec resumes {spec['resume_from'].get('job')} but {ck_path} is missing; "
                         "resume again, or train from scratch")
    if spec.get("init_checkpoint") and ck is None:  # resuming: the checkpoint has the weights
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
                           voxel_size=spec["volume"]["voxel_size"], augment=spec.get("augment"),
                           validation=float(spec.get("validation", 0.0)))
    avg = averager(model, total, float(spec.get("average", 0.0)))
    start = 0
    best = None  # {"step", validate's scores, "model"}: the best-scoring weights so far
    if ck is not None:
        model.load_state_dict(ck["model"])
        if avg is not None:
            avg.load_state_dict(ck["average"])
        best = ck.get("best")
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

    rng_after = rng.bit_generator.state  # the sampler's state after the last batch trained on

    def checkpoint(it: int) -> None:
        save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
              "torch_rng": torch.get_rng_state(), "numpy_rng": rng_after, "iteration": it,
              "config": cfg.to_dict(), "total": total, "warmup": warmup, "preprocess": pre, "best": best,
              **({"average": avg.state_dict()} if avg is not None else {})}, ck_path)
        append_event(job_dir, "checkpoint", step=it, path=CHECKPOINT)
        keep(it)

    def keep(it: int) -> None:
        """With the spec's keep_checkpoints, the weights at `it` (and the average's) stay on disk, for the
        benchmarks' curves over a run."""
        if not spec.get("keep_checkpoints"):
            return
        for name, net in [("it", model)] + ([("avg-it", avg.module)] if avg is not None else []):
            kept = Path("checkpoints") / f"{name}{it:07d}.pt"
            (job_dir / kept).parent.mkdir(exist_ok=True)
            save({"model": net.state_dict(), "config": cfg.to_dict(), "preprocess": pre, "iteration": it},
                 job_dir / kept)
            append_event(job_dir, "checkpoint", step=it, path=str(kept), kept=True, averaged=net is not model)

    choose = spec.get("choose", "best")  # older specs have none: they were chosen this way

    def score(it: int) -> None:
        nonlocal best
        t_val = time.perf_counter()
        scored = avg.module if avg is not None else model  # the weights model.pt would keep
        s = validate(scored, raw, sampler.validation, int(spec["target"]), device)
        for name, value in s.items():
            append_event(job_dir, "metric", name=name, value=value, step=it)
        if choose == "final" or best is None or s["val_iou_best"] >= best.get("val_iou_best", best["val_iou"]):
            best = {"step": it, **s, "model": {k: v.detach().cpu().clone() for k, v in scored.state_dict().items()}}
        validation_s[0] += time.perf_counter() - t_val

    batch, every = int(spec.get("batch", 2)), int(spec.get("checkpoint_every", 100))
    val_at = set(validation_steps(total, validation_cost(model, sampler.validation, batch, sampler.patch),
                                  spec.get("validate_every"))) if sampler.validation else set()
    log_every = max(1, int(spec.get("log_every", 5)))
    validation_s = [0.0]
    if sampler.validation:
        append_event(job_dir, "validation", regions=len(sampler.validation),
                     voxels=int(sum(int((v.labels > 0).sum()) for v in sampler.validation)), steps=sorted(val_at))
    model.train()
    batches = Batches(sampler, rng, batch, total - start) if device.type == "cuda" else InLine(sampler, rng, batch)
    t0, seen, run_loss = time.perf_counter(), 0, []
    try:
        for it in range(start, total):
            xb, yb, mb, rng_after = batches.next()
            x, y, m = (b.to(device, non_blocking=True) for b in (xb, yb, mb))
            x = x.contiguous(memory_format=LAYOUT)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(x)
            loss = masked_loss(logits.float(), y, m)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if avg is not None:
                avg.update_parameters(model)
            seen += x.numel()
            done = it + 1
            run_loss.append(loss.item())
            if not math.isfinite(run_loss[-1]):  # before any checkpoint could keep the diverged weights
                raise FloatingPointError(f"the loss is {run_loss[-1]} at iteration {done}: the weights diverged "
                                         "(no model.pt written); train again with a lower --lr")
            if done % log_every == 0 or done == total:
                dt = time.perf_counter() - t0
                append_event(job_dir, "progress", step=done, total=total, loss=float(np.mean(run_loss)),
                             lr=sched.get_last_lr()[0], voxels_per_s=seen / dt if dt else 0.0)
                run_loss = []
            if done in val_at:
                score(done)
            if stop["signal"]:
                checkpoint(done)
                append_event(job_dir, "interrupted", step=done, signal=stop["signal"])
                raise Interrupted(f"stopped by {stop['signal']} at iteration {done}; checkpoint written")
            if done % every == 0 and done < total:
                checkpoint(done)
    finally:
        batches.close()
    keep(total)

    weights, chosen = model.state_dict(), {"by": "final weights (no validation slab)", "step": total}
    if best is not None:
        weights = calibrated(best["model"], best.get("val_threshold", 0.5))
        chosen = {"by": ("final weights, the validation slabs' best threshold" if choose == "final" else
                         "validation IoU at its best threshold") + " (folded into the head's bias)",
                  **{k: v for k, v in best.items() if k != "model"}}
    save({"model": weights, "config": cfg.to_dict(), "target": spec["target"], "target_name": spec.get("target_name"),
          "iterations": total, "seed": seed, "preprocess": pre, "tta": model.tta, "chosen": chosen}, job_dir / MODEL)
    append_event(job_dir, "checkpoint", step=total, path=MODEL, final=True, chosen=chosen)
    return {"status": "completed", "checkpoint": MODEL, "iterations": total, "chosen": chosen,
            "preprocess": pre, "validation_s": round(validation_s[0], 1),
            "seconds": round(time.perf_counter() - t0, 1)}
