"""One CPU labeling round on the real ssTEM data (../shared/data/vnc-mito), end to end.

Crops from z 0–13 only; held-out regions drawn at random inside z 14–19 and
labelled from the reference labels; the round is run through the real CLI
(local executor). Prints the held-out IoU/F1 and, to compare with the
guide's anchors, the pooled IoU over all of z 14–19 at threshold 0.5.

    python benchmarks/vnc_mito_round.py [--dir /tmp/vnc-bench] [--seed S] [--iterations N]

Without --iterations (or --batch), the round trains with `fibtui round train`'s defaults: what a user gets.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import tifffile

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "vnc-mito"
VOXEL = "50,4.6,4.6"  # nm (z, y, x), from the data's README


def fib(*args) -> str:
    out = subprocess.run([sys.executable, "-m", "fibtui", *map(str, args)], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"fibtui {' '.join(map(str, args))} failed:\n{out.stderr}")
    return out.stdout


QUADRANTS = [(0, 0), (0, 512), (512, 0), (512, 512)]


def build_session(root: Path, quadrants=QUADRANTS) -> tuple[Path, object]:
    """The benchmark's session under `root`: vnc ingested, 8 held-out regions inside z 14–19 labelled from the
    reference, and one crop per quadrant of the training slices z 0–13 (`quadrants`: which). Returns (session,
    the reference labels)."""
    if not DATA.exists():
        sys.exit(f"{DATA} not found: this benchmark needs the shared vnc-mito data")
    root.mkdir(parents=True, exist_ok=True)
    s = root / "session"
    labels = tifffile.imread(DATA / "labels.tif")
    fib("init", s)
    fib("ingest", DATA / "raw.tif", "--session", s, "--voxel-size", VOXEL, "--name", "vnc")
    fib("round", "new", "--session", s)
    # held-out: 8 random 6×192×192 regions inside the test slices z 14–19, labelled from the reference
    regions = json.loads(fib("holdout", "draw", "--session", s, "--count", "8", "--size", "6,192,192",
                             "--within", "14:20,0:1024,0:1024", "--seed", "2026", "--json"))
    for r in regions:
        o = [int(v) for v in r["offset"].split(",")]
        path = root / f"holdout-{r['id']}.tif"
        tifffile.imwrite(path, labels[o[0]:o[0] + 6, o[1]:o[1] + 192, o[2]:o[2] + 192] + 1)
        fib("holdout", "label", "--session", s, "--region", r["id"], "--labels", path, "--classes", "background,mito")
    add_crops(root, s, labels, quadrants)
    return s, labels


def add_crops(root: Path, s: Path, labels, quadrants) -> None:
    """Crops of z 0–13 at the given 512×512 quadrants, to the session's current round."""
    for y, x in quadrants:
        path = root / f"crop-{y}-{x}.tif"
        tifffile.imwrite(path, labels[0:14, y:y + 512, x:x + 512] + 1)
        fib("crop", "add", "--session", s, "--labels", path, "--offset", f"0,{y},{x}", "--classes", "background,mito")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/fibtui-vnc-bench"))
    ap.add_argument("--iterations", type=int, default=None, help="default: the CLI's")
    ap.add_argument("--batch", type=int, default=None, help="default: the CLI's")
    ap.add_argument("--patch", default=None, help="Z,Y,X (default: the one a user gets, from the voxel size)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-args", default="", help="more `fibtui round train` flags, e.g. '--preprocess clahe'")
    args = ap.parse_args()
    if args.dir.exists():
        sys.exit(f"{args.dir} exists; remove it or pass --dir")
    s, labels = build_session(args.dir)
    t0 = time.perf_counter()
    given = {"--iterations": args.iterations, "--batch": args.batch, "--patch": args.patch}
    fib("round", "train", "--session", s, "--target", "mito", "--seed", args.seed,
        *[v for k, x in given.items() if x is not None for v in (k, x)], *args.train_args.split())
    t_train = time.perf_counter() - t0
    fib("round", "predict", "--session", s)
    t_pred = time.perf_counter() - t0 - t_train
    fib("round", "eval", "--session", s)
    status = json.loads(fib("status", "--session", s, "--json"))
    m = status["rounds"][0]["metrics"]
    spec = json.loads((s / "jobs" / "r1-train-1" / "spec.json").read_text())
    from sessions.volumes import omezarr
    pred = omezarr.open_multiscale(s / "jobs" / "r1-predict-1" / "prediction.ome.zarr").levels[0][14:20] >= 128
    truth = labels[14:20] == 1
    iou_test = float((pred & truth).sum() / (pred | truth).sum())
    print(json.dumps({
        "iterations": spec["iterations"], "batch": spec["batch"], "patch": spec["patch"], "model": spec["model"],
        "seed": args.seed,
        "train_args": args.train_args,
        "train_wall_s": round(t_train, 1), "predict_wall_s": round(t_pred, 1),
        "heldout_iou": round(m["iou"], 4), "heldout_f1": round(m["f1"], 4),
        "test_range_iou_z14_19": round(iou_test, 4), "session": str(s),
    }, indent=1))


if __name__ == "__main__":
    main()
