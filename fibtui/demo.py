"""`fibtui demo`: the scientist's question answered on a synthetic volume, locally, end to end.

It runs the same code paths a curator does — synth → ingest → round 1 (target
envelope): crops from the ground truth, random frozen held-out regions, train,
predict, eval → round 2 (target pore): more crops on pores, train, predict,
eval → measure: pores per nucleus on the predicted envelope, beside the
generator's truth → a message and a note — and only sizes things to finish in
minutes on a 2-core CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from fibtui.actions import Context, invoke
from fibtui.cli.rounds import follow
from fibtui.output import console, progress, stage_callback
from remote.dispatch import Dispatcher
from sessions import journal, synth
from sessions.errors import FibError
from sessions.geometry import Box, unfmt
from sessions.volumes import catalog
from sessions.workspace import DB_NAME, Session, init_session, open_session

SHAPE = (48, 192, 192)
VOXEL_NM = (12.0, 12.0, 12.0)
SEED = 7
CROP = (12, 64, 64)
HOLDOUT = (12, 64, 64)
N_HOLDOUT = 3
TARGETS = ("envelope", "pore")  # one label at a time: a round each
TRAIN = {"iterations": 400, "patch": (24, 64, 64), "batch": 2, "base": 8, "levels": 3}


CROPS = {  # round → crop shape, and (class, least share of the crop) per crop
    "envelope": (CROP, [(synth.ENVELOPE, 0.03), (synth.ENVELOPE, 0.03), (synth.MITO, 0.03), (synth.ENVELOPE, 0.03)]),
    # thinner: the volume is only 48 slices deep and already holds the held-out regions and 4 crops
    "pore": ((6, 64, 64), [(synth.PORE, 0.003), (synth.PORE, 0.003)]),
}


def _choose_crops(gt: np.ndarray, avoid: list[Box], rng: np.random.Generator, wanted,
                  shape=CROP) -> list[Box]:
    """Crops where a curator would label: on the envelope (and a mitochondrion, dark like it)
    for the envelope round, on pores for the pore round."""
    out: list[Box] = []
    for _ in range(20000):
        if len(out) == len(wanted):
            break
        off = tuple(int(rng.integers(0, s - c + 1)) for s, c in zip(gt.shape, shape))
        box = Box(off, shape)
        cls, least = wanted[len(out)]
        frac = float((gt[box.slices] == cls).mean())
        if least < frac < 0.6 and not any(box.overlaps(b) for b in avoid + out):
            out.append(box)
    if len(out) < len(wanted):
        raise FibError("demo: could not place crops on the synthetic volume (unexpected); try another --dir")
    return out


def _status_done(s: Session) -> bool:
    return any(j["kind"] == "measure" and j["state"] == "COMPLETED" for j in s.db["jobs"].rows)


def answer_lines(s: Session) -> list[str]:
    """The demo's last words: per nucleus, pores and density beside the truth."""
    from sessions import measure

    ans = measure.latest(s)
    return measure.with_truth(ans) if ans else []


def run_demo(root: Path, iterations: int | None = None, quiet: bool = False) -> Session:
    root = Path(root).expanduser().resolve()
    session_dir = root / "session"
    if (session_dir / DB_NAME).exists():
        s = open_session(session_dir)
        if _status_done(s):
            if not quiet:
                console.print(f"demo session already complete at {session_dir}; showing it "
                              f"(remove {root} to run it again)")
            return s
        raise FibError(f"{root}: holds an unfinished demo session; remove it or pass another --dir")
    if root.exists() and any(root.iterdir()):
        raise FibError(f"{root}: exists and is not empty; pass another --dir")
    root.mkdir(parents=True, exist_ok=True)
    say = (lambda *a: None) if quiet else console.print

    say(f"[bold]1/7[/] synthetic FIB-SEM volume {SHAPE} @ {VOXEL_NM[0]:g} nm (seed {SEED})")
    scene = synth.make_scene(SHAPE, SEED, voxel_size=VOXEL_NM)
    raw_tif, gt_tif = root / "synthetic.tif", root / "synthetic.labels.tif"
    with progress(not quiet) as p:
        cb = stage_callback(p)
        synth.write_tiff(scene, raw_tif, gt_tif, progress=lambda d, t: cb("synth", d, t))
        say("[bold]2/7[/] session + ingest into OME-Zarr")
        s = init_session(session_dir)
        vol = catalog.ingest(s, raw_tif, name="synthetic", voxel_size=VOXEL_NM, progress=cb)["name"]
    gt = tifffile.imread(gt_tif)
    classes = list(synth.CLASS_NAMES)

    say("[bold]3/7[/] round 1 (envelope): held-out regions drawn at random and frozen, crops from the ground truth")
    # Every step goes through the same actions a curator's keys and commands call, so the demo
    # session's intervention log reads like a curator's.
    ctx = Context(via="demo", author="demo")
    rnd = invoke(s, "new_round", {"target": None}, ctx)
    regions = invoke(s, "draw_holdout", {"count": N_HOLDOUT, "size": HOLDOUT, "seed": SEED, "volume": vol},
                     ctx)["regions"]
    for r in regions:
        box = Box(unfmt(r["offset"]), unfmt(r["shape"]))
        path = root / f"holdout-{r['id']}.tif"
        tifffile.imwrite(path, gt[box.slices] + 1)  # dense truth: every voxel labelled (class = gt + 1)
        invoke(s, "label_holdout", {"region": r["id"], "labels_path": path, "classes": classes}, ctx)
    rng = np.random.default_rng(SEED)
    avoid = [Box(unfmt(r["offset"]), unfmt(r["shape"])) for r in regions]
    d = Dispatcher(s)
    train_kw = {**TRAIN, "iterations": iterations or TRAIN["iterations"]}
    step = 3
    for k, target in enumerate(TARGETS):
        if k:
            rnd = invoke(s, "new_round", {"target": target}, ctx)
            say(f"[bold]{step}/7[/] round {rnd['n']} ({target}): crops on pores")
        boxes = _choose_crops(gt, avoid, rng, CROPS[target][1], CROPS[target][0])
        avoid += boxes
        for box in boxes:
            path = root / f"crop-{len(list(root.glob('crop-*.tif'))) + 1}.tif"
            tifffile.imwrite(path, gt[box.slices] + 1)
            invoke(s, "add_crop", {"labels_path": path, "offset": box.offset, "volume": vol, "classes": classes},
                   ctx)
        if k == 0:
            journal.add_note(s, f"added 4 crops of {CROP}: three on the nuclear envelope, one on a mitochondrion",
                             "mitochondria are dark like the envelope; label one as a negative early", "demo",
                             rnd["n"])
        step += 1
        for name, raw in (("train", {"target": target, **train_kw}), ("predict", {}), ("evaluate", {})):
            say(f"[bold]{step}/7[/] round {rnd['n']} ({target}): {name} (local job; Ctrl-C detaches, the job keeps running)")
            job = follow(d, invoke(s, name, raw, ctx), quiet=quiet)
            if job["state"] != "COMPLETED":
                raise FibError(f"demo: {job['id']} {job['state']}: {job['reason']} "
                               f"(see {s.path(job['dir'], 'stderr.log')})")
        step += 1
    say("[bold]7/7[/] measure: pores per nucleus on the predicted envelope")
    job = follow(d, invoke(s, "measure", {"pores": "pore", "envelope": "envelope"}, ctx), quiet=quiet)
    if job["state"] != "COMPLETED":
        raise FibError(f"demo: {job['id']} {job['state']}: {job['reason']} (see {s.path(job['dir'], 'stderr.log')})")
    journal.add_message(s, "scientist", "Are the false negatives on the right-hand side from the shading? "
                        "Please check the held-out regions there.", kind="question", round_n=rnd["n"])
    return s
