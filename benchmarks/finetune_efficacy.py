"""Does fine-tuning pay? Round 2 fine-tuned from round 1 against round 2 from scratch, on vnc-mito.

    python benchmarks/finetune_efficacy.py --dir /tmp/fibtui-finetune [--r1-iterations 600]
        [--scratch-iterations 600] [--finetune-iterations 300] [--finetune-lr 1e-3,3e-4]

Round 1 trains from scratch on half the crops (the two left quadrants of z 0–13); round 2 adds the
other two. Round 2 is then trained (a) from scratch on all four crops and (b) fine-tuned from round 1's
model on all four, once per learning rate given. Every run keeps the weights of each checkpoint; each
is scored on the 8 held-out regions (pooled IoU at 0.5, the model's own preprocessing), against the
wall time of the run up to that checkpoint. Prints the table and the question's answer: the time
fine-tuning takes to reach the scratch model's final IoU, as a fraction of the scratch run's time
(goal ≤ 0.20), and writes DIR/finetune.png. Runs use the training job's own code in this process, with
the defaults a user gets (`rounds.train_spec`), and the same patch and batch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from train_options import curve, heldout_iou  # noqa: E402
from vnc_mito_round import QUADRANTS, add_crops, build_session, fib  # noqa: E402


def train_curve(session_dir: Path, round_n: int, job: Path, iterations: int, args, init: Path | None = None,
                lr: float = 1e-3) -> dict:
    """Train (in this process), then score every kept checkpoint and the final model on the held-out regions."""
    from remote import train
    from sessions import rounds
    from sessions.workspace import open_session

    s = open_session(session_dir)
    try:
        spec = rounds.train_spec(s, rounds.get(s, round_n), target="mito", iterations=iterations, lr=lr,
                                 patch=tuple(int(v) for v in args.patch.split(",")) if args.patch else None,
                                 batch=args.batch,
                                 seed=args.seed, threads=args.threads, init="scratch")
        if init is not None:  # round 1's model, as `--from auto` would pick it for a job of the session
            spec["init_checkpoint"] = str(init)
        spec.update(keep_checkpoints=True, checkpoint_every=args.every)
        job.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        res = train.run(spec, job)
        kept = curve(s, job, t0)
        # the weights a user would have got by stopping there: the average's, where the run keeps one
        averaged = any(p["averaged"] for p in kept)
        points = [p for p in kept if p["averaged"] == averaged]
        events = [json.loads(x) for x in (job / "events.jsonl").read_text().splitlines()]
        final = next(e for e in events if e.get("final"))
        points.append({"step": iterations, "wall_s": round(final["t"] - t0, 1),
                       "iou": round(heldout_iou(s, job / res["checkpoint"]), 4), "final": True})
    finally:
        s.close()
    return {"model": str(job / res["checkpoint"]), "points": points, "chosen": res["chosen"], "patch": spec["patch"],
            "batch": spec["batch"], "architecture": spec["model"]}


def time_to(points: list[dict], iou: float) -> float | None:
    return next((p["wall_s"] for p in points if p["iou"] >= iou), None)


def figure(runs: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, r in runs.items():
        ax.plot([p["wall_s"] / 60 for p in r["points"]], [p["iou"] for p in r["points"]], marker="o", ms=3, label=name)
    ax.axhline(runs["scratch"]["points"][-1]["iou"], color="grey", lw=0.8, ls="--", label="scratch, final")
    ax.set_xlabel("training wall time (min)")
    ax.set_ylabel("held-out IoU")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/fibtui-finetune"))
    ap.add_argument("--r1-iterations", type=int, default=600)
    ap.add_argument("--scratch-iterations", type=int, default=600)
    ap.add_argument("--finetune-iterations", type=int, default=300)
    ap.add_argument("--finetune-lr", default="1e-3,3e-4", help="peak learning rates of the fine-tunes")
    ap.add_argument("--every", type=int, default=50, help="iterations between scored checkpoints")
    ap.add_argument("--patch", default=None, help="Z,Y,X (default: the one a user gets, from the voxel size)")
    ap.add_argument("--batch", type=int, default=None, help="default: the CLI's (from the voxel size)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.dir.exists():
        sys.exit(f"{args.dir} exists; remove it or pass --dir")
    s, labels = build_session(args.dir, quadrants=QUADRANTS[:2])
    r1 = train_curve(s, 1, args.dir / "runs" / "r1", args.r1_iterations, args)
    fib("round", "new", "--session", s)
    add_crops(args.dir, s, labels, QUADRANTS[2:])
    runs = {"scratch": train_curve(s, 2, args.dir / "runs" / "r2-scratch", args.scratch_iterations, args)}
    for lr in (float(v) for v in args.finetune_lr.split(",")):
        runs[f"fine-tune lr {lr:g}"] = train_curve(s, 2, args.dir / "runs" / f"r2-finetune-{lr:g}",
                                                   args.finetune_iterations, args, init=Path(r1["model"]), lr=lr)
    goal = runs["scratch"]["points"][-1]["iou"]
    t_scratch = runs["scratch"]["points"][-1]["wall_s"]
    print(f"round 1 (half the crops, {args.r1_iterations} it): held-out IoU {r1['points'][-1]['iou']:.3f} "
          f"in {r1['points'][-1]['wall_s']:.0f} s")
    print("| round 2 run | iterations | final IoU | wall (s) | time to the scratch final IoU | ÷ scratch time |")
    print("|---|---|---|---|---|---|")
    summary = {"round1": r1, "runs": runs, "scratch_final_iou": goal, "scratch_wall_s": t_scratch,
               "args": {k: str(v) for k, v in vars(args).items()}}
    for name, r in runs.items():
        t = time_to(r["points"], goal)
        last = r["points"][-1]
        ratio = f"{t / t_scratch:.2f}" if t is not None else "not reached"
        summary[f"ratio {name}"] = t / t_scratch if t is not None else None
        print(f"| {name} | {last['step']} | {last['iou']:.3f} | {last['wall_s']:.0f} | "
              f"{f'{t:.0f} s' if t is not None else 'not reached'} | {ratio} |")
    figure(runs, args.dir / "finetune.png", f"vnc-mito round 2: fine-tune from round 1 vs scratch "
                                             f"(patch {','.join(map(str, r1['patch']))}, batch {r1['batch']})")
    (args.dir / "finetune.json").write_text(json.dumps(summary, indent=1))
    print(f"figure: {args.dir / 'finetune.png'}; points: {args.dir / 'finetune.json'}")


if __name__ == "__main__":
    main()
