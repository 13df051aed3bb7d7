"""A simulated curator: k crops per round for 3 rounds, labels from the ground truth, per strategy.

Where to label next (issue 10) and which intervention point pays (issue 13),
measured the way a curator works: every step goes through fibtui's own
actions and real local jobs (train, predict, evaluate), only the labels come
from the ground truth instead of a person. Strategies:

- `random`, `uncertainty`, `disagreement`: `fibtui suggest --method …` picks the
  k boxes of each round. Round 1 has no prediction, so every method starts
  with `random` (same seed, same boxes); `disagreement` needs two predictions
  and uses `uncertainty` in round 2. Rounds 2 and 3 fine-tune from the last.
- `errors`: a curator who proofreads the last prediction in the viewer: the k
  boxes (of 40·k free candidates) where it is most wrong against the truth.
  An oracle for "correct after each round", the best that proofreading can do.
- `upfront`: "label more up front": all 3·k random boxes in round 1 and one
  training of 3× the iterations (the same compute as three rounds).

Held-out regions are drawn at random per seed (the same for every strategy of
that seed), before any crop. One JSON line per (dataset, strategy, seed) goes
to `results.jsonl` in --dir, so an interrupted run resumes where it stopped;
`--report` prints the tables.

    python benchmarks/simulated_curator.py --dataset synthetic --seeds 3
    python benchmarks/simulated_curator.py --dataset vnc-mito --seeds 2
    python benchmarks/simulated_curator.py --report
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fibtui.actions import Context, invoke  # noqa: E402
from remote.dispatch import Dispatcher  # noqa: E402
from sessions import synth  # noqa: E402
from sessions.geometry import Box, unfmt  # noqa: E402
from sessions.metrics import round_scores  # noqa: E402
from sessions.suggest import suggest  # noqa: E402
from sessions.volumes import catalog  # noqa: E402
from sessions.workspace import init_session  # noqa: E402

VNC = Path(__file__).resolve().parents[2] / "shared" / "data" / "vnc-mito"
STRATEGIES = ("random", "uncertainty", "disagreement", "errors", "upfront")
DATASETS = {
    # target, crop shape, held-out (count, shape, within), training settings per round
    "synthetic": {"target": "envelope", "crop": (12, 64, 64), "holdout": (3, (12, 64, 64), None),
                  "train": {"patch": (12, 64, 64), "batch": 2, "base": 8, "levels": 3}},
    "vnc-mito": {"target": "mito", "crop": (4, 128, 128), "holdout": (4, (6, 128, 128), Box((14, 0, 0), (6, 512, 512))),
                 "train": {"patch": (4, 128, 128), "batch": 2, "base": 8, "levels": 3}},
}


def prepare(dataset: str, cache: Path) -> tuple[Path, np.ndarray, tuple, list[str]]:
    """The raw TIFF, the ground-truth classes (0 = first class), the voxel size and the class names."""
    cache.mkdir(parents=True, exist_ok=True)
    raw = cache / f"{dataset}.tif"
    if dataset == "synthetic":
        scene = synth.make_scene((48, 192, 192), 7, voxel_size=(12.0, 12.0, 12.0))
        gt_path = cache / "synthetic.labels.tif"
        if not raw.exists():
            synth.write_tiff(scene, raw, gt_path)
        return raw, tifffile.imread(gt_path), (12.0, 12.0, 12.0), list(synth.CLASS_NAMES)
    if not VNC.exists():
        sys.exit(f"{VNC} not found: the vnc-mito dataset needs ../shared/data/vnc-mito")
    gt = (tifffile.imread(VNC / "labels.tif")[:, :512, :512] > 0).astype(np.uint8)
    if not raw.exists():
        tifffile.imwrite(raw, tifffile.imread(VNC / "raw.tif")[:, :512, :512])
    return raw, gt, (50.0, 4.6, 4.6), ["background", "mito"]


def _errors_boxes(session, volume: str, gt_target: np.ndarray, size, k: int, seed: int) -> list[Box]:
    """The k free boxes where the newest prediction disagrees most with the truth (the proofreading oracle)."""
    from sessions.suggest import predictions, taken_boxes

    pred = np.asarray(predictions(session, volume, 1)[0][1].levels[0][:]) >= 128
    wrong = pred != gt_target
    rng = np.random.default_rng(seed)
    taken = taken_boxes(session, volume)
    shape = wrong.shape
    cands = []
    for _ in range(40 * k):
        b = Box(tuple(int(rng.integers(0, n - s + 1)) for n, s in zip(shape, size)), tuple(size))
        if not any(b.overlaps(t) for t in taken):
            cands.append((int(wrong[b.slices].sum()), b))
    out: list[Box] = []
    for _, b in sorted(cands, key=lambda t: -t[0]):
        if len(out) < k and not any(b.overlaps(o) for o in out):
            out.append(b)
    return out


def run_one(dataset: str, strategy: str, seed: int, *, k: int, rounds: int, iterations: int, root: Path,
            cache: Path, threads: int = 0) -> dict:
    cfg = DATASETS[dataset]
    raw, gt, voxel, classes = prepare(dataset, cache)
    target_id = classes.index(cfg["target"])
    work = root / f"{dataset}-{strategy}-{seed}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    s = init_session(work / "session")
    vol = catalog.ingest(s, raw, name=dataset, voxel_size=voxel)["name"]
    ctx = Context(via="benchmark", author="simulated curator")
    d = Dispatcher(s)

    def run_job(name: str, raw_params: dict) -> dict:
        job = d.wait(invoke(s, name, raw_params, ctx)["id"], lambda j: None)
        if job["state"] != "COMPLETED":
            raise SystemExit(f"{job['id']} {job['state']}: {job['reason']} (see {s.path(job['dir'], 'stderr.log')})")
        return job

    n_hold, hold_shape, within = cfg["holdout"]
    invoke(s, "new_round", {"target": cfg["target"]}, ctx)
    for r in invoke(s, "draw_holdout", {"count": n_hold, "size": hold_shape, "seed": seed, "volume": vol,
                                        "within": within}, ctx)["regions"]:
        box = Box(unfmt(r["offset"]), unfmt(r["shape"]))
        path = work / f"holdout-{r['id']}.tif"
        tifffile.imwrite(path, gt[box.slices] + 1)
        invoke(s, "label_holdout", {"region": r["id"], "labels_path": path, "classes": classes}, ctx)

    n_rounds, per_round, its = (1, k * rounds, iterations * rounds) if strategy == "upfront" else (rounds, k, iterations)
    out_rounds, labelled = [], 0
    for rn in range(1, n_rounds + 1):
        if rn > 1:
            invoke(s, "new_round", {"target": cfg["target"]}, ctx)
        used = strategy
        if strategy in ("upfront", "random") or rn == 1:
            used = "random"
        elif strategy == "disagreement" and rn == 2:
            used = "uncertainty"
        if used == "errors":
            boxes = _errors_boxes(s, vol, gt == target_id, cfg["crop"], per_round, seed * 1000 + rn)
        else:
            boxes = [Box(tuple(p["offset"]), tuple(p["shape"]))
                     for p in suggest(s, vol, method=used, count=per_round, size=cfg["crop"], seed=seed * 1000 + rn)]
        for i, box in enumerate(boxes):
            path = work / f"crop-r{rn}-{i}.tif"
            tifffile.imwrite(path, gt[box.slices] + 1)
            invoke(s, "add_crop", {"labels_path": path, "offset": box.offset, "volume": vol, "classes": classes}, ctx)
            labelled += box.size
        t0 = time.perf_counter()
        train = run_job("train", {"target": cfg["target"], "iterations": its, "seed": seed, "threads": threads,
                                  **cfg["train"]})
        pred = run_job("predict", {"threads": threads})
        run_job("evaluate", {})
        score = [x for x in round_scores(s) if x["round"] == rn][0]
        fg = float(np.mean([(gt[b.slices] == target_id).mean() for b in boxes]))
        out_rounds.append({"round": rn, "method": used, "boxes": len(boxes), "labelled_voxels": labelled,
                           "target_share_of_new_crops": round(fg, 4), "iou": score["iou"], "f1": score["f1"],
                           "train_s": round(train["elapsed_s"] or 0, 1), "predict_s": round(pred["elapsed_s"] or 0, 1),
                           "wall_s": round(time.perf_counter() - t0, 1)})
        print(f"  {dataset} {strategy} seed {seed} round {rn} ({used}): IoU {score['iou']:.3f}, "
              f"{labelled:,} labelled voxels", flush=True)
    gpu_h = sum((j["gpu_hours"] or 0) for j in s.db["jobs"].rows_where("kind in ('train', 'predict')"))
    s.close()
    return {"dataset": dataset, "strategy": strategy, "seed": seed, "k": k, "iterations_per_round": iterations,
            "rounds": out_rounds,
            "gpu_hours": round(gpu_h, 4), "date": time.strftime("%Y-%m-%d")}


def report(path: Path) -> None:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
    if not rows:
        sys.exit(f"{path}: no results yet")
    for dataset in DATASETS:
        mine = [r for r in rows if r["dataset"] == dataset]
        if not mine:
            continue
        seeds = sorted({r["seed"] for r in mine})
        print(f"\n### {dataset} (k = {mine[0]['k']} crops per round, {mine[0]['iterations_per_round']} iterations "
              f"per round, seeds {', '.join(map(str, seeds))})\n")
        print("| strategy | seeds | rounds | labelled voxels | GPU-hours | wall, all rounds (min) | held-out IoU round 1 "
              "| round 2 | round 3 | target share of the new crops |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for strat in STRATEGIES:
            runs = [r for r in mine if r["strategy"] == strat]
            if not runs:
                continue
            cells = []
            for rn in range(1, 4):
                ious = [r["rounds"][rn - 1]["iou"] for r in runs if len(r["rounds"]) >= rn]
                cells.append(_mean_sd(ious) if ious else "–")
            share = [x["target_share_of_new_crops"] for r in runs for x in r["rounds"]]
            labelled = statistics.mean(r["rounds"][-1]["labelled_voxels"] for r in runs)
            wall = statistics.mean(sum(x["wall_s"] for x in r["rounds"]) for r in runs) / 60
            print(f"| {strat} | {len(runs)} | {len(runs[0]['rounds'])} | {labelled:,.0f} "
                  f"| {statistics.mean(r['gpu_hours'] for r in runs):.2f} | {wall:.1f} | {' | '.join(cells)} "
                  f"| {statistics.mean(share):.3f} |")


def _mean_sd(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=tuple(DATASETS), default="synthetic")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--seeds", type=int, default=3, help="seeds 1..N")
    ap.add_argument("--k", type=int, default=2, help="crops per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=300, help="training iterations per round")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads per job (0: all); 1 to run two side by side")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/fibtui-curator-bench"))
    ap.add_argument("--report", action="store_true", help="print the tables of the results so far and stop")
    args = ap.parse_args()
    results = args.dir / "results.jsonl"
    if args.report:
        return report(results)
    strategies = [x for x in args.strategies.split(",") if x]
    bad = [x for x in strategies if x not in STRATEGIES]
    if bad:
        sys.exit(f"--strategies: unknown {', '.join(bad)}; choose from {', '.join(STRATEGIES)}")
    args.dir.mkdir(parents=True, exist_ok=True)
    done = set()
    if results.exists():
        done = {(r["dataset"], r["strategy"], r["seed"]) for r in map(json.loads, results.read_text().splitlines())}
    for seed in range(1, args.seeds + 1):
        for strat in strategies:
            if (args.dataset, strat, seed) in done:
                continue
            row = run_one(args.dataset, strat, seed, k=args.k, rounds=args.rounds, iterations=args.iterations,
                          root=args.dir / "runs", cache=args.dir / "data", threads=args.threads)
            with open(results, "a") as f:
                f.write(json.dumps(row) + "\n")
            shutil.rmtree(args.dir / "runs" / f"{args.dataset}-{strat}-{seed}")
    report(results)


if __name__ == "__main__":
    main()
