"""Time from SIGUSR1 (Slurm's pre-preemption warning) to a complete checkpoint on disk.

The handler only sets a flag; the training loop finishes the iteration in
flight, then writes the full state atomically. So the latency is at most one
iteration plus one save: this prints both, side by side in one run, and their
ratio (latency ÷ (iteration + save) ≤ 1 means nothing else is in the way).

    python benchmarks/usr1_checkpoint.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tifffile

from sessions import jobfiles, labels, rounds, synth
from sessions.volumes import catalog
from sessions.workspace import init_session


def make_job(tmp: Path, iterations: int) -> Path:
    scene = synth.make_scene((48, 192, 192), 3, voxel_size=(12, 12, 12))
    synth.write_tiff(scene, tmp / "v.tif", tmp / "gt.tif")
    s = init_session(tmp / "s")
    catalog.ingest(s, tmp / "v.tif", voxel_size=(12, 12, 12))
    rnd = rounds.new_round(s)
    gt = tifffile.imread(tmp / "gt.tif")
    tifffile.imwrite(tmp / "c.tif", gt[8:40, 32:160, 32:160] + 1)
    labels.add_crop(s, rnd["n"], "v", tmp / "c.tif", (8, 32, 32), list(synth.CLASS_NAMES))
    spec = rounds.train_spec(s, rnd, target="mito", iterations=iterations, patch=(24, 64, 64), base=16, levels=4,
                             checkpoint_every=10_000)
    d = tmp / "job"
    d.mkdir()
    jobfiles.atomic_write_json(d / "spec.json", {**spec, "kind": "train", "log_every": 1})
    return d


def one(tmp: Path) -> dict:
    d = make_job(tmp, iterations=10_000)
    proc = subprocess.Popen([sys.executable, "-m", "remote.run", str(d)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while len([e for e in jobfiles.read_events(d)[0] if e["type"] == "progress"]) < 6:
        time.sleep(0.01)
    t_signal = time.time()
    proc.send_signal(signal.SIGUSR1)
    proc.wait(timeout=300)
    ev = jobfiles.read_events(d)[0]
    ck = next(e for e in ev if e["type"] == "checkpoint")
    prog = [e["t"] for e in ev if e["type"] == "progress"]
    it_s = statistics.median(b - a for a, b in zip(prog[1:], prog[2:]))
    # the save alone, measured on the checkpoint just written
    import torch
    from remote.checkpoints import save
    state = torch.load(d / "checkpoint.pt", weights_only=False)
    t0 = time.perf_counter()
    save(state, d / "again.pt")
    save_s = time.perf_counter() - t0
    latency = ck["t"] - t_signal
    return {"latency_s": latency, "iteration_s": it_s, "save_s": save_s,
            "checkpoint_mb": (d / "checkpoint.pt").stat().st_size / 1e6, "ratio": latency / (it_s + save_s)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(one(Path(tmp)))
    for r in runs:
        print(json.dumps({k: round(v, 3) for k, v in r.items()}))
    med = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
    print("median", json.dumps(med))
    print(f"USR1 → checkpoint on disk: {med['latency_s']:.2f} s = {med['ratio']:.2f} × (one iteration "
          f"{med['iteration_s']:.2f} s + one save {med['save_s']:.2f} s); checkpoint {med['checkpoint_mb']:.1f} MB")


if __name__ == "__main__":
    main()
