"""Evaluation job: voxel scores on the frozen held-out regions, and object statistics.

Scores pool TP/FP/FN over the labelled voxels of every region (the target
class against the other labelled classes; 0 = unlabelled is ignored).
Objects are 26-connected components of the thresholded prediction.
"""

from __future__ import annotations

from pathlib import Path

import cc3d
import numpy as np
import zarr

from sessions.geometry import Box
from sessions.jobfiles import append_event
from sessions.volumes import omezarr

MAX_WHOLE_VOLUME_VOXELS = 1 << 29  # beyond this, object stats need blockwise labelling (not yet)


def scores(tp: int, fp: int, fn: int) -> dict:
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    iou = tp / (tp + fp + fn) if tp + fp + fn else 0.0
    return {"precision": prec, "recall": rec, "f1": f1, "iou": iou}


def object_stats(mask: np.ndarray, voxel_size, min_voxels: int) -> dict:
    labels, n = cc3d.connected_components(mask.astype(np.uint8), connectivity=26, return_N=True)
    sizes = np.bincount(labels.ravel())[1:] if n else np.zeros(0, np.int64)
    sizes = sizes[sizes >= min_voxels]
    vox_um3 = float(np.prod(voxel_size)) * 1e-9
    vol_um3 = mask.size * vox_um3
    return {
        "count": int(sizes.size),
        "median_size_um3": float(np.median(sizes) * vox_um3) if sizes.size else 0.0,
        "mean_size_um3": float(sizes.mean() * vox_um3) if sizes.size else 0.0,
        "density_per_um3": sizes.size / vol_um3 if vol_um3 else 0.0,
        "volume_um3": vol_um3,
    }


def run(spec: dict, job_dir: Path) -> dict:
    job_dir = Path(job_dir)
    pred = omezarr.open_multiscale(spec["prediction"])
    level0 = pred.levels[0]
    thr = int(round(float(spec.get("threshold", 0.5)) * 255))
    target, vs = int(spec["target"]), tuple(spec["voxel_size"])
    min_voxels = int(spec.get("min_object_voxels", 10))
    tp = fp = fn = 0
    per_region, obj_pred, obj_true = [], 0, 0
    for i, r in enumerate(spec["regions"]):
        box = Box(tuple(r["offset"]), tuple(r["shape"]))
        lab = np.asarray(zarr.open_array(r["labels_path"], mode="r")[:])
        p = np.asarray(level0[box.slices]) >= thr
        known = lab > 0
        t = lab == target
        a, b, c = int((p & t).sum()), int((p & ~t & known).sum()), int((~p & t).sum())
        tp, fp, fn = tp + a, fp + b, fn + c
        s = scores(a, b, c)
        n_pred = object_stats(p & known, vs, min_voxels)["count"]
        n_true = object_stats(t, vs, min_voxels)["count"]
        obj_pred, obj_true = obj_pred + n_pred, obj_true + n_true
        per_region.append({"region": r["id"], **s, "objects_pred": n_pred, "objects_true": n_true})
        append_event(job_dir, "progress", step=i + 1, total=len(spec["regions"]) + 1)
    metrics = {**scores(tp, fp, fn), "objects_pred_heldout": obj_pred, "objects_true_heldout": obj_true,
               "labelled_voxels": int(tp + fp + fn)}
    whole = None
    if level0.size <= MAX_WHOLE_VOLUME_VOXELS:
        whole = object_stats(np.asarray(level0[:]) >= thr, vs, min_voxels)
        metrics.update({f"volume_{k}": v for k, v in whole.items()})
    for k, v in metrics.items():
        append_event(job_dir, "metric", name=k, value=float(v))
    append_event(job_dir, "progress", step=len(spec["regions"]) + 1, total=len(spec["regions"]) + 1)
    return {"status": "completed", "metrics": metrics, "regions": per_region, "whole_volume": whole,
            "threshold": spec.get("threshold", 0.5)}
