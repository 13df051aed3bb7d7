"""Evaluation job: voxel scores on the frozen held-out regions, and object statistics.

Scores pool TP/FP/FN over the labelled voxels of every region (the target
class against the other labelled classes; 0 = unlabelled is ignored).
Objects are 26-connected components of the thresholded prediction.

Object-level scores: predicted and true objects of each region are matched one to one
(Hungarian assignment) by **centroid distance**, a match when the predicted centroid lies
within the true object's equivalent-sphere radius (at least 2 voxels). Overlap (IoU > 0.5)
is the usual rule for large objects, but pores are 9–15 voxels across: a one-voxel shift or
a slightly thin prediction drops their IoU under 0.5 while the pore is plainly found. The
radius rule scales the tolerance with the object, so it serves mitochondria as well.
Counts: object precision/recall/F1 pooled over regions, and the count error
(predicted − true) / true.
"""

from __future__ import annotations

from pathlib import Path

import cc3d
import numpy as np
import zarr

from sessions.geometry import Box
from sessions.jobfiles import append_event
from sessions.volumes import omezarr

MAX_WHOLE_VOLUME_VOXELS = 1 << 29  # beyond this, whole-volume object stats are labelled blockwise


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


def _objects(mask: np.ndarray, min_voxels: int) -> tuple[np.ndarray, np.ndarray]:
    """(centroids (n, 3) in voxels, voxel counts) of the 26-connected objects of at least `min_voxels`."""
    labels, n = cc3d.connected_components(mask.astype(np.uint8), connectivity=26, return_N=True)
    if not n:
        return np.zeros((0, 3)), np.zeros(0, np.int64)
    st = cc3d.statistics(labels)
    cnt = np.asarray(st["voxel_counts"][1:])
    cen = np.asarray(st["centroids"][1:], float).reshape(-1, 3)
    keep = cnt >= min_voxels
    return cen[keep], cnt[keep]


def match_objects(pred_c, true_c, true_n, voxel_size) -> int:
    """Matched pairs (one to one) by centroid distance within each true object's equivalent radius."""
    if not len(pred_c) or not len(true_c):
        return 0
    from scipy.optimize import linear_sum_assignment

    vs = np.asarray(voxel_size, float)
    d = np.linalg.norm((pred_c[:, None, :] - true_c[None, :, :]) * vs, axis=2)
    radius = np.maximum((3 * true_n * float(np.prod(vs)) / (4 * np.pi)) ** (1 / 3), 2 * vs.max())
    ok = d <= radius[None, :]
    cost = np.where(ok, d, 1e12)
    r, c = linear_sum_assignment(cost)
    return int(ok[r, c].sum())


def object_scores(matched: int, n_pred: int, n_true: int) -> dict:
    p = matched / n_pred if n_pred else 0.0
    r = matched / n_true if n_true else 0.0
    return {"object_precision": p, "object_recall": r, "object_f1": 2 * p * r / (p + r) if p + r else 0.0,
            "count_error": (n_pred - n_true) / n_true if n_true else 0.0}


def blockwise_object_stats(level0, thr: int, voxel_size, min_voxels: int, work: Path) -> dict:
    """`object_stats` for a volume of any size: blockwise labelling (remote.objects), memory per block."""
    import shutil

    from remote.objects import label_volume, threshold_mask

    table, _ = label_volume(level0, work, voxel_size, block=(64, 512, 512), mask_fn=threshold_mask(thr / 255),
                            prob=False, min_voxels=min_voxels)
    shutil.rmtree(work, ignore_errors=True)
    sizes = table["voxels"]
    vox_um3 = float(np.prod(voxel_size)) * 1e-9
    vol_um3 = float(np.prod(level0.shape)) * vox_um3
    return {"count": int(sizes.size), "median_size_um3": float(np.median(sizes) * vox_um3) if sizes.size else 0.0,
            "mean_size_um3": float(sizes.mean() * vox_um3) if sizes.size else 0.0,
            "density_per_um3": sizes.size / vol_um3 if vol_um3 else 0.0, "volume_um3": vol_um3}


def run(spec: dict, job_dir: Path) -> dict:
    job_dir = Path(job_dir)
    pred = omezarr.open_multiscale(spec["prediction"])
    level0 = pred.levels[0]
    thr = int(round(float(spec.get("threshold", 0.5)) * 255))
    target, vs = int(spec["target"]), tuple(spec["voxel_size"])
    min_voxels = int(spec.get("min_object_voxels", 10))
    tp = fp = fn = 0
    per_region, obj_pred, obj_true, obj_matched = [], 0, 0, 0
    for i, r in enumerate(spec["regions"]):
        box = Box(tuple(r["offset"]), tuple(r["shape"]))
        lab = np.asarray(zarr.open_array(r["labels_path"], mode="r")[:])
        p = np.asarray(level0[box.slices]) >= thr
        known = lab > 0
        t = lab == target
        a, b, c = int((p & t).sum()), int((p & ~t & known).sum()), int((~p & t).sum())
        tp, fp, fn = tp + a, fp + b, fn + c
        s = scores(a, b, c)
        pc, _ = _objects(p & known, min_voxels)
        tc, tn = _objects(t, min_voxels)
        n_pred, n_true = len(pc), len(tc)
        matched = match_objects(pc, tc, tn, vs)
        obj_pred, obj_true, obj_matched = obj_pred + n_pred, obj_true + n_true, obj_matched + matched
        per_region.append({"region": r["id"], **s, "objects_pred": n_pred, "objects_true": n_true,
                           "objects_matched": matched, **object_scores(matched, n_pred, n_true)})
        append_event(job_dir, "progress", step=i + 1, total=len(spec["regions"]) + 1)
    metrics = {**scores(tp, fp, fn), "objects_pred_heldout": obj_pred, "objects_true_heldout": obj_true,
               "objects_matched_heldout": obj_matched, **object_scores(obj_matched, obj_pred, obj_true),
               "labelled_voxels": int(tp + fp + fn)}
    if level0.size <= MAX_WHOLE_VOLUME_VOXELS:
        whole = object_stats(np.asarray(level0[:]) >= thr, vs, min_voxels)
    else:
        whole = blockwise_object_stats(level0, thr, vs, min_voxels, job_dir / "objects-work")
    metrics.update({f"volume_{k}": v for k, v in whole.items()})
    for k, v in metrics.items():
        append_event(job_dir, "metric", name=k, value=float(v))
    append_event(job_dir, "progress", step=len(spec["regions"]) + 1, total=len(spec["regions"]) + 1)
    return {"status": "completed", "metrics": metrics, "regions": per_region, "whole_volume": whole,
            "threshold": spec.get("threshold", 0.5)}
