"""Labeling rounds and the job specs they produce.

A round groups the crops added during it, one training job (fine-tuned from
the previous round's model when there is one), one prediction and one
evaluation. Training in round n uses the crops of rounds 1..n. A spec holds
everything a job needs, with absolute paths, so the job has no hidden state.
"""

from __future__ import annotations

import json

from sessions import jobs
from sessions.errors import FibError
from sessions.geometry import unfmt
from sessions.provenance import code_version
from sessions.timeutil import now
from sessions.volumes import catalog
from sessions.workspace import Session


def new_round(session: Session, target: str | None = None) -> dict:
    last = current(session, required=False)
    n = (last["n"] + 1) if last else 1
    if target is None and last:
        target = last["target"]
    if target is not None and session.meta("classes") is not None:
        check_target(session, target)  # no classes yet: checked when the round trains
    row = {"n": n, "created": now(), "target": target, "parent": last["n"] if last else None, "status": "open"}
    session.db["rounds"].insert(row)
    return row


def current(session: Session, required: bool = True) -> dict | None:
    row = next(session.db["rounds"].rows_where(order_by="n desc", limit=1), None)
    if row is None and required:
        raise FibError("this session has no round yet; start one with `fibtui round new`")
    return row


def get(session: Session, n: int | None) -> dict:
    if n is None:
        return current(session)
    row = next(session.db["rounds"].rows_where("n = ?", [n]), None)
    if row is None:
        raise FibError(f"round {n} does not exist; see `fibtui status`")
    return row


def check_target(session: Session, target: str) -> int:
    classes = json.loads(session.meta("classes") or "[]")
    if target not in classes:
        known = ", ".join(classes) if classes else "none yet (add a crop with --classes first)"
        raise FibError(f"target class {target!r} is not one of this session's classes: {known}")
    return classes.index(target) + 1


def _completed(session: Session, round_n: int, kind: str, what: str) -> dict:
    job = jobs.latest(session, round_n, kind)
    if job is None or job["state"] != "COMPLETED":
        state = job["state"] if job else "not run"
        raise FibError(f"round {round_n} has no completed {kind} job ({state}); run `fibtui round {what}` first")
    return job


def train_spec(session: Session, rnd: dict, *, target: str | None, iterations: int, patch=None, batch: int = 2,
               lr: float = 1e-3, base: int = 16, levels: int = 4, seed: int = 0, threads: int = 0,
               checkpoint_every: int = 100) -> dict:
    target = target or rnd["target"]
    if target is None:
        raise FibError(f"round {rnd['n']} has no target class: pass --target CLASS (one label at a time)")
    target_value = check_target(session, target)
    if rnd["target"] != target:
        session.db["rounds"].update(rnd["n"], {"target": target})
    crops = list(session.db["crops"].rows_where("round <= ?", [rnd["n"]], order_by="id"))
    if not crops:
        raise FibError(f"round {rnd['n']} has no labelled crops yet; add one with `fibtui crop add`")
    names = {c["volume"] for c in crops}
    if len(names) > 1:
        raise FibError(f"crops span several volumes ({', '.join(sorted(names))}); one volume per round for now")
    vol = catalog.get_volume(session, names.pop())
    init = None
    if rnd["parent"]:
        prev = jobs.latest(session, rnd["parent"], "train")
        if prev and prev["state"] == "COMPLETED":
            res = jobs.result(session, prev)
            init = str(jobs.job_dir(session, prev) / res["checkpoint"])
    return {
        "volume": {"name": vol["name"], "path": str(session.path(vol["path"])), "voxel_size": list(vol["voxel_size"])},
        "crops": [{"id": c["id"], "path": str(session.path(c["path"])), "offset": list(unfmt(c["offset"]))} for c in crops],
        "target": target_value, "target_name": target, "iterations": int(iterations), "batch": int(batch),
        "patch": list(patch or default_patch(vol["voxel_size"])), "lr": float(lr), "seed": int(seed),
        "model": {"base": int(base), "levels": int(levels)}, "init_checkpoint": init, "threads": int(threads),
        "checkpoint_every": int(checkpoint_every), "device": "auto", "code": code_version(),
    }


def default_patch(voxel_size) -> tuple[int, int, int]:
    """About the same physical extent per axis, capped for CPU memory/time."""
    z, y, _ = voxel_size
    if z > 2 * y:
        return (4, 192, 192)
    return (32, 96, 96)


def predict_spec(session: Session, rnd: dict, *, block=None, threads: int = 0) -> dict:
    train = _completed(session, rnd["n"], "train", "train")
    res = jobs.result(session, train)
    spec = json.loads((jobs.job_dir(session, train) / "spec.json").read_text())
    out = {"volume": spec["volume"], "checkpoint": str(jobs.job_dir(session, train) / res["checkpoint"]),
           "train_job": train["id"], "threads": int(threads), "device": "auto", "code": code_version()}
    if block:
        out["block"] = list(block)
    return out


def eval_spec(session: Session, rnd: dict, *, threshold: float = 0.5) -> dict:
    pred = _completed(session, rnd["n"], "predict", "predict")
    res = jobs.result(session, pred)
    spec = json.loads((jobs.job_dir(session, pred) / "spec.json").read_text())
    vol = spec["volume"]["name"]
    regions = list(session.db["holdout"].rows_where("volume = ? and labels_path is not null", [vol], order_by="id"))
    if not regions:
        drawn = session.db["holdout"].count_where("volume = ?", [vol])
        hint = ("label them with `fibtui holdout label`" if drawn else
                "draw them with `fibtui holdout draw`, then label them with `fibtui holdout label`")
        raise FibError(f"volume {vol!r} has no labelled held-out regions to evaluate on; {hint}")
    if not 0 < threshold < 1:
        raise FibError(f"--threshold {threshold}: must be between 0 and 1")
    train_spec_ = json.loads((session.path("jobs", spec["train_job"], "spec.json")).read_text())
    return {
        "prediction": str(jobs.job_dir(session, pred) / res["output"]), "predict_job": pred["id"],
        "voxel_size": spec["volume"]["voxel_size"], "target": train_spec_["target"],
        "target_name": train_spec_["target_name"], "threshold": threshold,
        "regions": [{"id": r["id"], "offset": list(unfmt(r["offset"])), "shape": list(unfmt(r["shape"])),
                     "labels_path": str(session.path(r["labels_path"]))} for r in regions],
        "code": code_version(),
    }
