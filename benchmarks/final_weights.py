"""Which weights should a round keep? On a finished `vnc_mito_round.py` run (its session, 2000 iterations or
any run with a checkpoint.pt before its end):

    python benchmarks/final_weights.py --session D/session [--bn-batches 200]

1. `choose best` against `choose final`: the run's last checkpoint.pt is resumed to the end in a new job
   directory with the spec's `choose` set to "final". A resumed run ends on the weights the run had, bit
   for bit (tests/test_train_resume.py), so this is the final-weights model the same run would have kept.
   Both model.pt are scored on the held-out regions at p ≥ 0.5 (their folded threshold), as `fibtui round
   eval` pools them.
2. Two ways to steady the final weights, not in the job (measured first): precise BatchNorm (the running
   statistics recomputed over N training batches with the weights fixed, momentum None) and the mean of
   the last checkpoint's and the final weights, with precise BN. Each is scored by the run's own
   validation slabs (the same slabs: the sampler is drawn with the run's seed), which choose its
   threshold, and then on the held-out regions there and at p ≥ 0.5.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from train_options import heldout_hist, heldout_iou, iou_at, volume_of  # noqa: E402


def precise_bn(net, sampler, batch: int, n: int, seed: int = 99) -> None:
    """BatchNorm's running statistics recomputed as the plain mean over `n` batches (the weights fixed)."""
    import torch

    from remote.model import LAYOUT
    from remote.train import make_batch

    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative mean, not an exponential one
    rng = np.random.default_rng(seed)
    sampler.rng = rng
    net.train()
    with torch.no_grad():
        for _ in range(n):
            net(make_batch(sampler, rng, batch)[0].contiguous(memory_format=LAYOUT))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    net.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--session", type=Path, required=True, help="a vnc_mito_round.py session (DIR/session)")
    ap.add_argument("--job", default="r1-train-1")
    ap.add_argument("--bn-batches", type=int, default=200)
    args = ap.parse_args()

    import torch

    from remote import train
    from remote.allocator import keep_freed_memory
    from remote.checkpoints import load_model
    from remote.sampling import PatchSampler
    from sessions.workspace import open_session

    keep_freed_memory()  # as a job does (remote/run.py)
    job = args.session / "jobs" / args.job
    resumed = args.session.parent / f"{args.job}-final"
    if resumed.exists():
        sys.exit(f"{resumed} exists; remove it first")
    spec = json.loads((job / "spec.json").read_text())
    last = torch.load(job / train.CHECKPOINT, map_location="cpu", weights_only=False)
    resumed.mkdir()
    shutil.copy(job / train.CHECKPOINT, resumed / train.CHECKPOINT)
    res = train.run({**spec, "choose": "final"}, resumed)
    s = open_session(args.session)
    try:
        kept = json.loads((job / "result.json").read_text())["chosen"]
        out = {"job": args.job, "iterations": spec["iterations"], "seed": spec["seed"],
               "best": {"step": kept["step"], "val_threshold": kept["val_threshold"],
                        "heldout_iou": round(heldout_iou(s, job / train.MODEL), 4)},
               "final": {"step": res["chosen"]["step"], "val_threshold": res["chosen"]["val_threshold"],
                         "heldout_iou": round(heldout_iou(s, resumed / train.MODEL), 4)}}
        net, ck = load_model(resumed / train.MODEL, "cpu")
        t = ck["chosen"]["val_threshold"]
        final = net.state_dict()
        final["head.bias"] = final["head.bias"] + math.log(t / (1 - t))  # back to the trained net's bias
        raw = volume_of(s, ck.get("preprocess"))
        sampler = PatchSampler(raw, spec["crops"], spec["target"], spec["patch"], np.random.default_rng(spec["seed"]),
                               voxel_size=spec["volume"]["voxel_size"], augment=spec.get("augment"),
                               validation=float(spec.get("validation", 0.0)))  # drawn as the run drew its slabs
        mean = {k: (v + last["model"][k]) / 2 if v.is_floating_point() else v for k, v in final.items()}
        for name, weights, steady in (("final as trained", final, False), ("final + precise BN", final, True),
                                      (f"mean of steps {last['iteration']} and {spec['iterations']} + precise BN",
                                       mean, True)):
            net.load_state_dict(weights)
            if steady:
                precise_bn(net, sampler, int(spec["batch"]), args.bn_batches)
            v = train.validate(net, raw, sampler.validation, int(spec["target"]), torch.device("cpu"))
            hist = heldout_hist(s, net, raw)
            out[name] = {"val_iou_best": round(v["val_iou_best"], 4), "val_threshold": v["val_threshold"],
                         "heldout_iou": round(iou_at(hist, v["val_threshold"]), 4),
                         "heldout_iou_at_0.5": round(iou_at(hist), 4)}
    finally:
        s.close()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
