"""`fibtui demo`: one full labeling round on a synthetic volume, locally, end to end.

It runs the same code paths a curator does — synth → ingest → round → crops
from the ground truth → random frozen held-out regions → train → predict →
eval → a message and a note — and only sizes things to finish in minutes on
a 2-core CPU.
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
TARGET = "mito"
TRAIN = {"iterations": 400, "patch": (24, 64, 64), "batch": 2, "base": 8, "levels": 3}


def _choose_crops(gt: np.ndarray, avoid: list[Box], rng: np.random.Generator) -> list[Box]:
    """Crops where a curator would label: on mitochondria, and on the dark nuclear
    envelope, the structure most easily mistaken for them."""
    out: list[Box] = []
    wanted = [synth.MITO, synth.MITO, synth.ENVELOPE, synth.ENVELOPE]
    for _ in range(20000):
        if len(out) == len(wanted):
            break
        off = tuple(int(rng.integers(0, s - c + 1)) for s, c in zip(gt.shape, CROP))
        box = Box(off, CROP)
        frac = float((gt[box.slices] == wanted[len(out)]).mean())
        if 0.03 < frac < 0.6 and not any(box.overlaps(b) for b in avoid + out):
            out.append(box)
    if len(out) < len(wanted):
        raise FibError("demo: could not place crops on the synthetic volume (unexpected); try another --dir")
    return out


def _status_done(s: Session) -> bool:
    return any(j["kind"] == "evaluate" and j["state"] == "COMPLETED" for j in s.db["jobs"].rows)


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

    say(f"[bold]1/6[/] synthetic FIB-SEM volume {SHAPE} @ {VOXEL_NM[0]:g} nm (seed {SEED})")
    scene = synth.make_scene(SHAPE, SEED, voxel_size=VOXEL_NM)
    raw_tif, gt_tif = root / "synthetic.tif", root / "synthetic.labels.tif"
    with progress(not quiet) as p:
        cb = stage_callback(p)
        synth.write_tiff(scene, raw_tif, gt_tif, progress=lambda d, t: cb("synth", d, t))
        say("[bold]2/6[/] session + ingest into OME-Zarr")
        s = init_session(session_dir)
        vol = catalog.ingest(s, raw_tif, name="synthetic", voxel_size=VOXEL_NM, progress=cb)["name"]
    gt = tifffile.imread(gt_tif)
    classes = list(synth.CLASS_NAMES)

    say("[bold]3/6[/] round 1: held-out regions drawn at random and frozen, crops from the ground truth")
    # Every step goes through the same actions a curator's keys and commands call, so the demo
    # session's intervention log reads like a curator's.
    ctx = Context(via="demo", author="demo")
    rnd = invoke(s, "new_round", {}, ctx)
    regions = invoke(s, "draw_holdout", {"count": N_HOLDOUT, "size": HOLDOUT, "seed": SEED, "volume": vol},
                     ctx)["regions"]
    for r in regions:
        box = Box(unfmt(r["offset"]), unfmt(r["shape"]))
        path = root / f"holdout-{r['id']}.tif"
        tifffile.imwrite(path, gt[box.slices] + 1)  # dense truth: every voxel labelled (class = gt + 1)
        invoke(s, "label_holdout", {"region": r["id"], "labels_path": path, "classes": classes}, ctx)
    rng = np.random.default_rng(SEED)
    avoid = [Box(unfmt(r["offset"]), unfmt(r["shape"])) for r in regions]
    for i, box in enumerate(_choose_crops(gt, avoid, rng)):
        path = root / f"crop-{i + 1}.tif"
        tifffile.imwrite(path, gt[box.slices] + 1)
        invoke(s, "add_crop", {"labels_path": path, "offset": box.offset, "volume": vol, "classes": classes}, ctx)
    journal.add_note(s, f"added 4 crops of {CROP}: two on mitochondria, two on the nuclear envelope",
                     "the envelope is dark like mitochondria; label it as a negative early", "demo", rnd["n"])

    d = Dispatcher(s)
    train_kw = {**TRAIN, "iterations": iterations or TRAIN["iterations"]}
    for step, name, raw in (
        ("4/6", "train", {"target": TARGET, **train_kw}),
        ("5/6", "predict", {}),
        ("6/6", "evaluate", {}),
    ):
        say(f"[bold]{step}[/] {name} (local job; Ctrl-C detaches, the job keeps running)")
        job = follow(d, invoke(s, name, raw, ctx), quiet=quiet)
        if job["state"] != "COMPLETED":
            raise FibError(f"demo: {job['id']} {job['state']}: {job['reason']} (see {s.path(job['dir'], 'stderr.log')})")
    journal.add_message(s, "scientist", "Are the false negatives on the right-hand side from the shading? "
                        "Please check the held-out regions there.", kind="question", round_n=rnd["n"])
    return s
