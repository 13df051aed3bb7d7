"""Preprocessing and augmentation on vnc-mito: each option against the baseline, same budget, several seeds.

    python benchmarks/train_options.py --dir /tmp/fibtui-options --iterations 300 --seeds 0,1,2 \
        --variant base: --variant percentile:--preprocess=percentile --variant clahe:--preprocess=clahe \
        --variant denoise:--preprocess=denoise
    python benchmarks/train_options.py --dir /tmp/fibtui-options --report   # table + PNG from the results so far

The session is vnc_mito_round.py's (crops: the four quadrants of z 0–13; 8 held-out regions inside z 14–19).
Each run is one training (from scratch, the same iterations, patch and batch) through `rounds.train_spec` and
the training job's own code, in this process; then the held-out IoU (pooled over the regions, threshold 0.5,
as `fibtui round eval` computes it) of the model the job chose. A variant is `NAME:FLAGS`, FLAGS as
`fibtui round train` takes them (`--preprocess=clahe`, `--augment=none`), comma-free pairs joined by spaces.
Results are appended to DIR/results.jsonl (a run already there is skipped), so the experiment can be
stopped and continued; `--report` prints the markdown table (mean ± sd over seeds, and each variant's
difference to the first one on the same seeds) and writes DIR/options.png.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def parse_flags(flags: str) -> dict:
    """`--preprocess=clahe --stem=1,4,4` → {"preprocess": "clahe", "stem": [1, 4, 4]}: `train_spec`'s keywords
    (numbers stay text, it converts them; a stem is a list)."""
    out = {}
    for tok in shlex.split(flags):
        k, _, v = tok.lstrip("-").partition("=")
        k = k.replace("-", "_")
        out[k] = [int(x) for x in v.split(",")] if k == "stem" else v
    return out


def heldout_hist(session, model, raw) -> np.ndarray:
    """[other labelled, target] × uint8 probability: the model's predictions on the session's held-out
    regions, pooled (eval mode, as prediction applies it), from which `iou_at` reads any threshold."""
    import torch
    import zarr

    from remote.predict import block_halo, predict_block
    from sessions.geometry import Box, unfmt

    model.eval()
    hist = np.zeros((2, 256), np.int64)
    for r in session.db["holdout"].rows_where("labels_path is not null", order_by="id"):
        box = Box(tuple(unfmt(r["offset"])), tuple(unfmt(r["shape"])))
        lab = np.asarray(zarr.open_array(session.path(r["labels_path"]), mode="r")[:])
        p = predict_block(model, raw, box, block_halo(model), model.cfg.divisor, torch.device("cpu"))
        hist[0] += np.bincount(p[(lab > 0) & (lab != 2)], minlength=256)
        hist[1] += np.bincount(p[lab == 2], minlength=256)
    return hist


def iou_at(hist: np.ndarray, threshold: float = 0.5) -> float:
    """Pooled IoU of the target at p ≥ threshold (on the uint8 grid, as remote.train.validate reads it)."""
    from remote.train import hist_scores

    return hist_scores(hist, round(threshold * 255))[0]


def volume_of(session, preprocess):
    """The session's vnc volume through a model's preprocessing."""
    from remote.preprocess import wrap
    from sessions.volumes import omezarr

    vol = session.path("volumes", "vnc.ome.zarr")
    return wrap(omezarr.open_multiscale(vol).levels[0], preprocess, vol)


def heldout_iou(session, model_path: Path) -> float:
    """Pooled IoU of the model on the session's held-out regions at p ≥ 0.5, through its own preprocessing."""
    from remote.checkpoints import load_model

    model, ck = load_model(model_path, "cpu")
    return iou_at(heldout_hist(session, model, volume_of(session, ck.get("preprocess"))))


def curve(session, job: Path, t0: float) -> list[dict]:
    """Held-out IoU of every weight file the run kept (`keep_checkpoints`): {"step", "wall_s" (since `t0`, a
    time.time()), "iou", "averaged"} in the order written."""
    events = [json.loads(x) for x in (job / "events.jsonl").read_text().splitlines()]
    return [{"step": e["step"], "wall_s": round(e["t"] - t0, 1), "iou": round(heldout_iou(session, job / e["path"]), 4),
             "averaged": bool(e.get("averaged"))} for e in events if e.get("kept")]


def run_one(session_dir: Path, out_dir: Path, name: str, flags: str, seed: int, args) -> dict:
    from remote import train
    from sessions import rounds
    from sessions.workspace import open_session

    s = open_session(session_dir)
    try:
        opts = parse_flags(flags)
        spec = rounds.train_spec(s, rounds.get(s, 1), target="mito", iterations=args.iterations,
                                 patch=tuple(int(v) for v in args.patch.split(",")) if args.patch else None,
                                 batch=args.batch, seed=seed,
                                 threads=args.threads, init="scratch", **opts)
        if args.every:
            spec.update(keep_checkpoints=True, checkpoint_every=args.every)
        job = out_dir / f"{name}-s{seed}"
        job.mkdir(parents=True, exist_ok=True)
        t0, t0_epoch = time.perf_counter(), time.time()
        res = train.run(spec, job)
        wall = time.perf_counter() - t0
        iou = heldout_iou(s, job / res["checkpoint"])
        points = curve(s, job, t0_epoch) if args.every else []
    finally:
        s.close()
    return {"variant": name, "flags": flags, "seed": seed, "iterations": args.iterations, "patch": spec["patch"], "model": spec["model"],
            "batch": spec["batch"], "threads": args.threads, "train_wall_s": round(wall, 1), "heldout_iou": round(iou, 4),
            "chosen": res["chosen"], "preprocess": res["preprocess"]["method"], "augment": spec["augment"],
            "validation": spec["validation"], "average": spec.get("average", 0.0),
            **({"curve": points} if points else {})}


def report(out_dir: Path) -> None:
    rows = [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines() if line.strip()]
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["variant"], []).append(r)
    # the first variant is the baseline; each other's difference to it on the same seeds (same initial weights
    # and patches), whose spread is far smaller than the seeds' own
    baseline = next(iter(by))
    first = {r["seed"]: r["heldout_iou"] for r in by[baseline]}
    print(f"| variant | flags | seeds | held-out IoU (mean ± sd) | per seed | Δ vs {baseline}, same seeds "
          f"(mean ± sd) | train wall (s, mean) |")
    print("|---|---|---|---|---|---|---|")
    names, means, sds = [], [], []
    for name, rs in by.items():
        v = [r["heldout_iou"] for r in rs]
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        names.append(name), means.append(statistics.mean(v)), sds.append(sd)
        d = [r["heldout_iou"] - first[r["seed"]] for r in rs if r["seed"] in first]
        delta = "—" if name == baseline or not d else \
            f"{statistics.mean(d):+.3f} ± {statistics.stdev(d) if len(d) > 1 else 0.0:.3f} ({len(d)})"
        print(f"| {name} | `{rs[0]['flags'] or '(defaults)'}` | {len(v)} | **{statistics.mean(v):.3f} ± {sd:.3f}** | "
              f"{', '.join(f'{x:.3f}' for x in v)} | {delta} | "
              f"{statistics.mean(r['train_wall_s'] for r in rs):.0f} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 3.2))
    ax.bar(names, means, yerr=sds, capsize=4, color="#4c72b0")
    for i, name in enumerate(names):
        ax.scatter([i] * len(by[name]), [r["heldout_iou"] for r in by[name]], color="k", s=10, zorder=3)
    ax.set_ylabel("held-out IoU")
    ax.set_ylim(max(0.0, min(means) - 0.15), min(1.0, max(means) + 0.08))
    r0 = rows[0]
    ax.set_title(f"vnc-mito, {r0['iterations']} iterations, patch {r0['patch']}, batch {r0['batch']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "options.png", dpi=120)
    print(f"\nfigure: {out_dir / 'options.png'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/fibtui-options"))
    ap.add_argument("--variant", action="append", default=[], help="NAME:FLAGS (repeatable)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--patch", default=None, help="Z,Y,X (default: the one a user gets, from the voxel size)")
    ap.add_argument("--batch", type=int, default=None, help="default: the CLI's (from the voxel size)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per run (0: all)")
    ap.add_argument("--every", type=int, default=0,
                    help="keep the weights (and the average's) every N iterations and score each on the held-out "
                         "regions: the curve in the results (0: only the chosen model)")
    ap.add_argument("--report", action="store_true", help="print the table of DIR/results.jsonl and write the PNG")
    args = ap.parse_args()
    if args.report:
        return report(args.dir)
    from vnc_mito_round import build_session

    session = args.dir / "session"
    if not session.exists():
        build_session(args.dir)
    results = args.dir / "results.jsonl"
    done = {(json.loads(x)["variant"], json.loads(x)["seed"]) for x in results.read_text().splitlines()} \
        if results.exists() else set()
    for seed in (int(v) for v in args.seeds.split(",")):
        for v in args.variant or ["base:"]:
            name, _, flags = v.partition(":")
            if (name, seed) in done:
                continue
            row = run_one(session, args.dir / "runs", name, flags, seed, args)
            print(json.dumps(row), flush=True)
            with open(results, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
