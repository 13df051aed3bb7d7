"""What the scientist's report shows, read from the session as plain data (no HTML, no plotting here).

`collect(session)` returns one dict: the question and the current answer, every round with its
jobs (wall time, GPU-hours), held-out scores, loss curve and provenance chain, and the message
thread and interventions on one time axis (sessions.timeline).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sessions import interventions, journal, jobs, metrics, timeline
from sessions.workspace import Session

MEASURE_HINTS = ("pore", "per_um2", "envelope_area")  # measurement names the pore issue may record


def sha256_file(path: Path, limit: int | None = None) -> str | None:
    """sha256 of a file (None when missing, or when it is larger than `limit` bytes)."""
    try:
        if limit is not None and path.stat().st_size > limit:
            return None
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except OSError:
        return None


def _question(session: Session, msgs: list[dict]) -> dict | None:
    q = session.meta("question")
    if q:
        return {"text": q, "author": None, "time": None}
    first = next((m for m in msgs if m["kind"] == "question"), None) or (msgs[0] if msgs else None)
    return {"text": first["text"], "author": first["author"], "time": first["time"]} if first else None


def _measurements(result: dict | None, latest: dict) -> dict:
    """Pore counts/densities when the evaluation measured them; else {} (the report says "not measured yet")."""
    out = {}
    for src in ((result or {}).get("measurements") or {}, (result or {}).get("metrics") or {}, latest):
        for k, v in src.items():
            if any(h in k for h in MEASURE_HINTS) and k not in out:
                out[k] = v
    return out


def _pore_readout(session: Session) -> dict | None:
    """The latest pore measurement (a completed measure job: pores, envelope area, density per nucleus),
    with one sentence per nucleus (beside the generator's truth when known); None when not measured."""
    try:
        from sessions import measure
    except ImportError:  # pragma: no cover - the measurement module is optional for the report
        return None
    try:
        ans = measure.latest(session)
        if ans is None:
            return None
        return {"job": ans["job"], "round": ans["round"], "readout": ans["readout"],
                "sentences": measure.with_truth(ans), "truth": bool(ans.get("truth"))}
    except Exception:  # noqa: BLE001 - a readout of an older format: the report still renders, without it
        return None


def _round(session: Session, r: dict, volumes: dict) -> dict:
    rows = list(session.db["jobs"].rows_where("round = ?", [r["n"]], order_by="submitted, rowid"))
    job_list = []
    for j in rows:
        job_list.append({k: j[k] for k in ("id", "kind", "executor", "state", "submitted", "started", "ended",
                                           "elapsed_s", "gpus", "gpu_hours", "resumes", "init_from")})
    done = {kind: next((j for j in reversed(rows) if j["kind"] == kind and j["state"] == "COMPLETED"), None)
            for kind in ("train", "predict", "evaluate")}
    train, pred, ev = done["train"], done["predict"], done["evaluate"]
    train_spec = jobs.spec(session, train) if train else None
    pred_spec = jobs.spec(session, pred) if pred else None
    ev_spec = jobs.spec(session, ev) if ev else None
    ev_result = jobs.result(session, ev) if ev else None
    pred_result = jobs.result(session, pred) if pred else None
    last_train = next((j for j in reversed(rows) if j["kind"] == "train"), None)
    loss = {}
    if last_train:
        loss = metrics.curve(session, jobs.lineage(session, last_train["id"]), names=("loss", "lr"), points=300)
    crops = list(session.db["crops"].rows_where("round = ?", [r["n"]], order_by="id"))
    used = [c["id"] for c in (train_spec or {}).get("crops", [])]  # what the training read: this and earlier rounds'
    chain_crops = [c for c in session.db["crops"].rows_where(order_by="id") if c["id"] in used] if used else crops
    model_path = session.path(train["dir"], "model.pt") if train else None
    vol = volumes.get((train_spec or {}).get("volume", {}).get("name")) if train_spec else None
    chain = {
        "raw": {"volume": vol["name"], "checksum": vol["source_checksum"], "source": vol["source"]} if vol else None,
        "crops": [{"id": c["id"], "round": c["round"], "sha256": c["sha256"], "offset": c["offset"],
                   "shape": c["shape"], "labelled_voxels": c["labelled_voxels"]} for c in chain_crops],
        "train": {"job": train["id"], "seed": train_spec.get("seed"), "iterations": train_spec.get("iterations"),
                  "lr": train_spec.get("lr"), "model": train_spec.get("model"), "patch": train_spec.get("patch"),
                  "init_job": train_spec.get("init_job"), "code": train_spec.get("code")} if train_spec else None,
        "checkpoint": {"path": session.rel(model_path), "sha256": sha256_file(model_path)}
        if model_path and model_path.exists() else None,
        "prediction": {"job": pred["id"], "output": f"{pred['dir']}/{(pred_result or {}).get('output', '')}",
                       "checkpoint": Path(pred_spec["checkpoint"]).name if pred_spec else None} if pred else None,
        "scores": {"job": ev["id"], "threshold": (ev_spec or {}).get("threshold"),
                   "regions": [x["id"] for x in (ev_spec or {}).get("regions", [])],
                   **{k: (ev_result or {}).get("metrics", {}).get(k) for k in metrics.SCORES}} if ev else None,
    }
    return {"n": r["n"], "target": r["target"], "created": r["created"], "jobs": job_list, "loss": loss,
            "crops": len(crops), "chain": chain, "evaluation": ev_result, "evaluate_spec": ev_spec,
            "prediction_dir": session.rel(session.path(pred["dir"], (pred_result or {}).get("output") or
                                                       "prediction.ome.zarr")) if pred else None,
            "wall_s": sum(j["elapsed_s"] or 0 for j in rows), "gpu_hours": sum(j["gpu_hours"] or 0 for j in rows)}


def collect(session: Session) -> dict:
    volumes = {v["name"]: v for v in session.db["volumes"].rows}
    msgs = journal.messages(session)
    rounds = [_round(session, r, volumes) for r in session.db["rounds"].rows_where(order_by="n")]
    scores = metrics.round_scores(session)
    latest_ev = next((r for r in reversed(rounds) if r["evaluation"]), None)
    latest_metrics = (latest_ev["evaluation"] or {}).get("metrics", {}) if latest_ev else {}
    answer = None
    if latest_ev:
        whole = latest_ev["evaluation"].get("whole_volume") or {}
        answer = {"round": latest_ev["n"], "target": latest_ev["target"] or
                  (latest_ev["evaluate_spec"] or {}).get("target_name"),
                  "scores": {k: latest_metrics.get(k) for k in metrics.SCORES},
                  "objects": whole, "measurements": _measurements(latest_ev["evaluation"], latest_metrics)}
    pores = _pore_readout(session)
    if pores is not None:
        answer = answer or {"round": pores["round"], "target": None, "scores": {}, "objects": {}, "measurements": {}}
        answer["pores"] = pores
    return {
        "session": session.root.name, "created": session.meta("created"),
        "classes": json.loads(session.meta("classes") or "[]"),
        "volumes": [{k: v[k] for k in ("name", "shape", "voxel_size", "source", "source_checksum")}
                    for v in volumes.values()],
        "question": _question(session, msgs), "answer": answer,
        "rounds": rounds, "scores": scores, "regressions": metrics.regressions(scores),
        "messages": msgs, "interventions": interventions.log(session),
        "timeline": timeline.build(session)["events"],
        "holdout": list(session.db["holdout"].rows_where(order_by="id")),
    }
