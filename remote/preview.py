"""Quick preview: a model applied to the region in view, in process, bounded, in seconds.

The model is the current round's (its newest completed training, else the
newest one of an earlier round), any completed training of the session (by
job id), or an exported model file (`model.pt`, as `fibtui round train`
writes it). The region is bounded (default ≤ 2 M voxels) and torch runs on
a few CPU threads, because the viewer runs on a login node; the halo is the
network's receptive field, as in blockwise prediction, so the preview equals
what the whole-volume prediction job would write there. A larger region goes
to the executor as a small preview job (`job_spec`: kind `preview`, the
prediction's runner restricted to the blocks overlapping the region; never
taken for the round's prediction, which is kind `predict`).

The preview job's spec is built here rather than in sessions/ because it
names its model through `find_model`, and sessions/ never imports remote/.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sessions import jobs, rounds
from sessions.errors import FibError
from sessions.geometry import Box, fmt_range
from sessions.volumes import catalog
from sessions.workspace import Session

MAX_VOXELS = 2_000_000
THREADS = 2
_LOCK = threading.Lock()
_MODELS: dict[tuple[str, float], object] = {}


@dataclass(frozen=True)
class ModelRef:
    path: Path
    label: str        # what the overlay says: which model
    job: str | None = None  # the training that wrote it (None: a model file)


def find_model(session: Session, which: str | None = None, round_n: int | None = None) -> ModelRef:
    """`which`: None (the round's model), a training job id, or a model file."""
    if which and Path(which).expanduser().is_file():
        p = Path(which).expanduser().resolve()  # a job runs in its own directory: no relative path
        return ModelRef(p, f"file {p.name}")
    if which:
        job = next(session.db["jobs"].rows_where("id = ?", [which]), None)
        if job is None or job["kind"] != "train" or job["state"] != "COMPLETED":
            raise FibError(f"--model {which}: neither a model file nor a completed training of this session "
                           "(see `fibtui jobs`)")
    else:
        where, args = ("round <= ?", [round_n]) if round_n else ("1", [])
        job = next(session.db["jobs"].rows_where(f"kind = 'train' and state = 'COMPLETED' and {where}", args,
                                                 order_by="round desc, rowid desc", limit=1), None)
        if job is None:
            raise FibError("no model to preview yet: train one first (t on the session screen, or "
                           "`fibtui round train`), or give an exported model file")
    res = jobs.result(session, job) or {}
    if not res.get("checkpoint"):
        raise FibError(f"training {job['id']} left no model file; run it again")
    path = jobs.job_dir(session, job) / res["checkpoint"]
    if not path.is_file():
        raise FibError(f"the model file of {job['id']} ({path}) is missing; train again, or pass another --model")
    return ModelRef(path, f"{job['id']} (round {job['round']})", job["id"])


def check_region(box: Box, shape, volume: str) -> None:
    """A preview region must hold voxels and lie inside the volume: one line saying which way it is wrong."""
    if box.size == 0:
        raise FibError(f"--region {fmt_range(box)}: empty; give z0:z1,y0:y1,x0:x1 with start < stop")
    if not box.inside(tuple(shape)):
        whole = fmt_range(Box((0, 0, 0), tuple(shape)))
        raise FibError(f"--region {fmt_range(box)}: outside volume {volume!r} ({whole}); give a region inside it")


def job_spec(session: Session, box: Box, which: str | None, *, round_n: int | None, volume: str, block=None,
             threads: int = 0) -> dict:
    """The spec of a preview job: `volume`'s blocks overlapping `box`, with the model `which` names
    (see `find_model`). Every check first; nothing is written."""
    vol = catalog.get_volume(session, volume)
    check_region(box, vol["shape"], volume)
    ref = find_model(session, which, round_n)
    return {**rounds.inference_spec(rounds.volume_spec(session, vol), ref.path, block=block, threads=threads),
            "region": {"offset": list(box.offset), "shape": list(box.shape)}, "model_label": ref.label,
            "train_job": ref.job}


def _model(path: Path):
    from remote.checkpoints import load_model

    key = (str(path), path.stat().st_mtime)
    if key not in _MODELS:
        model, ck = load_model(path, "cpu")
        model.eval()
        _MODELS.clear()
        _MODELS[key] = (model, ck.get("preprocess"))
    return _MODELS[key]


def preview(model_path: Path, raw, box: Box, *, volume_path=None, threads: int = THREADS,
            max_voxels: int = MAX_VOXELS) -> dict:
    """Probabilities (uint8, p×255) of `box` of level-0 array `raw` (of the OME-Zarr at `volume_path`), through
    the model's own preprocessing; {"prob", "seconds", "threads"}."""
    if box.size > max_voxels:
        raise FibError(f"the region in view has {box.size:,} voxels, over the preview bound of {max_voxels:,}: "
                       "zoom in, or predict the volume as a job (p on the session screen)")
    import torch

    from remote.predict import predict_block, receptive_radius
    from remote.preprocess import wrap

    with _LOCK:  # one preview at a time in this process; torch threads are per process
        t0 = time.perf_counter()
        torch.set_num_threads(max(1, int(threads)))
        model, record = _model(Path(model_path))
        prob = predict_block(model, wrap(raw, record, volume_path), box, receptive_radius(model), model.cfg.divisor, torch.device("cpu"))
        return {"prob": np.asarray(prob), "seconds": time.perf_counter() - t0, "threads": threads}
