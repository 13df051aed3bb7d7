"""Labeling rounds and the job specs they produce.

A round groups the crops added during it, one training job (fine-tuned from
the latest model of the same target class when there is one; a stopped
training is resumed as a new attempt of it), one prediction and one
evaluation. Training in round n uses the crops of rounds 1..n. A spec holds
everything a job needs, with absolute paths, so the job has no hidden state.
"""

from __future__ import annotations

import json

from sessions import jobs, train_options
from sessions.errors import FibError
from sessions.geometry import fmt, unfmt
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


def set_target(session: Session, n: int, target: str) -> dict:
    """Record the class round n trains (call it once its training was submitted)."""
    check_target(session, target)
    rnd = get(session, n)
    if rnd["target"] != target:
        session.db["rounds"].update(n, {"target": target})
    return {**rnd, "target": target}


def _completed_trains(session: Session, where: str, args: list) -> list[dict]:
    return list(session.db["jobs"].rows_where(f"kind = 'train' and state = 'COMPLETED' and {where}", args,
                                              order_by="round desc, rowid desc"))


def init_job(session: Session, rnd: dict, target: str, init="auto") -> dict | None:
    """The completed training whose model this one starts from (None: scratch); see `train_spec`."""
    if init == "scratch":
        return None
    if init == "auto":
        for job in _completed_trains(session, "round <= ?", [rnd["n"]]):
            if (jobs.spec(session, job) or {}).get("target_name") == target:
                return job
        return None
    if isinstance(init, str) and init.strip().isdigit():
        init = int(init)
    if isinstance(init, bool) or not isinstance(init, int):
        raise FibError(f"--from {init!r}: use auto (this target's last model), scratch, or an earlier round's number")
    if not 1 <= init < rnd["n"]:
        earlier = f"1..{rnd['n'] - 1}" if rnd["n"] > 1 else "none (this is round 1); use scratch"
        raise FibError(f"--from {init}: not an earlier round than round {rnd['n']}; earlier rounds: {earlier}")
    found = _completed_trains(session, "round = ?", [init])
    if not found:
        raise FibError(f"--from {init}: round {init} has no completed training; pick another round, or auto or scratch")
    return found[0]


def train_spec(session: Session, rnd: dict, *, target: str | None, iterations: int, patch=None,
               batch: int | None = None,
               lr: float = 1e-3, base: int | None = None, levels: int | None = None, seed: int = 0,
               threads: int = 0, checkpoint_every: int = 100, init="auto", preprocess: str | None = None,
               augment: str | dict | None = None, validation: float | None = None, stem=None,
               average: float | None = None, tta: str | None = None, choose: str | None = None,
               kernel_grid: str | None = None) -> dict:
    """The spec of round `rnd`'s training. No side effects: the caller submits it, then `set_target`.

    `init`: where the weights start —
    - "auto": the model of the latest completed training of the same target class, in this round (a
      second training after proofreading fine-tunes the first) or an earlier one (fine-tuning follows
      the target: rounds A, B, A → round 3 starts from round 1's model); scratch if none;
    - "scratch": random weights;
    - N (int or digits): round N's latest completed training (N an earlier round).
    The spec records "init_checkpoint" (the model file, or None) and "init_job" (its job id, or None).

    `patch`, `batch` None: the init training's when fine-tuning (the same cost per iteration as the
    model it continues), else `default_patch` / `default_batch` of the voxel size.

    `preprocess` (a method of sessions/train_options.py) None: the init training's when fine-tuning (a model
    sees what it was trained on), else the default; another than the init training's is refused.
    `augment`: a preset / "kind=strength" text (`parse_augment`) or a parsed dict; None the default.
    `validation`: the fraction of each crop held apart to choose the checkpoint (None: the default, 0: none).
    `average`: the span of the weights' moving average, a fraction of the run (None: the default, 0: none).
    `choose`: which weights model.pt keeps, "final" or "best" on the slabs (None: the default).
    `tta`: the test-time flips the model is validated and applied with (None: the default, also when
    fine-tuning: they are not in the weights).

    Architecture: fine-tuning keeps the init model's. `base`/`levels`/`stem`/`kernel_grid` None take it (from
    scratch: train_options' DEFAULT_BASE, DEFAULT_LEVELS and DEFAULT_KERNEL_GRID, and `default_stem` of the
    voxel size; a spec written before kernel grids existed was planned on the stem's grid); given and
    different from the init model's, or a volume of another voxel size, they are refused here (FibError)
    rather than failing in the job: pass the init model's values, or init="scratch".
    """
    target = target or rnd["target"]
    if target is None:
        raise FibError(f"round {rnd['n']} has no target class: pass --target CLASS (one label at a time)")
    target_value = check_target(session, target)
    crops = list(session.db["crops"].rows_where("round <= ?", [rnd["n"]], order_by="id"))
    if not crops:
        raise FibError(f"round {rnd['n']} has no labelled crops yet; add one with `fibtui crop add`")
    names = {c["volume"] for c in crops}
    if len(names) > 1:
        raise FibError(f"crops span several volumes ({', '.join(sorted(names))}); one volume per round for now")
    vol = catalog.get_volume(session, names.pop())
    prev = init_job(session, rnd, target, init)
    init_path = None
    kernel_grid = train_options.check_kernel_grid(kernel_grid)
    if prev is None:
        base = train_options.DEFAULT_BASE if base is None else base
        levels = train_options.DEFAULT_LEVELS if levels is None else levels
        stem = default_stem(vol["voxel_size"]) if stem is None else stem
        kernel_grid = kernel_grid or train_options.DEFAULT_KERNEL_GRID
        pre = train_options.preprocess_record(preprocess)
    else:
        res = jobs.result(session, prev) or {}
        init_path = jobs.job_dir(session, prev) / res.get("checkpoint", "model.pt")
        if not init_path.is_file():
            raise FibError(f"the model of {prev['id']} ({init_path}) is missing; pass --from scratch or another round")
        pspec = jobs.spec(session, prev) or {}
        # older specs: no stem, no kernel grid (the plan was drawn on the stem's grid)
        arch = {"base": 16, "levels": 4, "stem": [1, 1, 1], "kernel_grid": "stem", **pspec.get("model", {})}
        base, levels = arch["base"] if base is None else base, arch["levels"] if levels is None else levels
        stem = arch["stem"] if stem is None else stem
        kernel_grid = kernel_grid or arch["kernel_grid"]
        if ((int(base), int(levels), [int(v) for v in stem], kernel_grid)
                != (arch["base"], arch["levels"], list(arch["stem"]), arch["kernel_grid"])):
            raise FibError(f"base {base}, levels {levels}, stem {fmt(stem)}, kernel grid {kernel_grid}: {prev['id']}, "
                           f"the model this training starts from, has base {arch['base']}, levels {arch['levels']}, "
                           f"stem {fmt(arch['stem'])}, kernel grid {arch['kernel_grid']}; pass those, or --from scratch")
        pvs = (pspec.get("volume") or {}).get("voxel_size")
        if pvs is not None and [float(v) for v in pvs] != [float(v) for v in vol["voxel_size"]]:
            raise FibError(f"{prev['id']}, the model this training starts from, was trained at voxel size "
                           f"{tuple(pvs)}, volume {vol['name']!r} has {tuple(vol['voxel_size'])}; pass --from scratch")
        pre = pspec.get("preprocess") or train_options.preprocess_record("none")
        if preprocess is not None and preprocess != pre["method"]:
            raise FibError(f"--preprocess {preprocess}: {prev['id']}, the model this training starts from, was "
                           f"trained on {pre['method']}; pass --preprocess {pre['method']}, or --from scratch")
    return {
        "volume": volume_spec(session, vol),
        "crops": [{"id": c["id"], "path": str(session.path(c["path"])), "offset": list(unfmt(c["offset"]))} for c in crops],
        "target": target_value, "target_name": target, "iterations": int(iterations),
        "batch": int(batch if batch is not None else train_batch(session, prev, vol["voxel_size"])),
        "patch": list(patch or train_patch(session, prev, vol["voxel_size"])), "lr": float(lr), "seed": int(seed),
        "model": {"base": int(base), "levels": int(levels), "stem": [int(v) for v in stem], "kernel_grid": kernel_grid},
        "init_checkpoint": str(init_path) if init_path else None, "init_job": prev["id"] if prev else None,
        "preprocess": pre,
        "augment": augment if isinstance(augment, dict) else train_options.parse_augment(augment),
        "validation": train_options.check_validation(
            train_options.DEFAULT_VALIDATION if validation is None else validation),
        "average": train_options.DEFAULT_AVERAGE if average is None else float(average),
        "tta": train_options.check_tta(tta), "choose": train_options.check_choose(choose),
        "threads": int(threads), "checkpoint_every": int(checkpoint_every), "device": "auto", "code": code_version(),
    }


def resume_spec(session: Session, job_id: str, *, iterations: int | None = None) -> tuple[int, dict]:
    """(round, spec) of a new attempt that continues the stopped training `job_id` from its checkpoint.

    The old spec, with `iterations` (default: as before; more allowed, never fewer) and
    "resume_from": {"job", "iteration"}. The caller copies the old checkpoint.pt into the new job
    directory (remote.dispatch.Dispatcher.resume does)."""
    job = jobs.get(session, job_id)
    at, why = jobs.resume_check(session, job)
    if at is None:
        raise FibError(why)
    spec = jobs.spec(session, job)
    if spec is None:
        raise FibError(f"job {job_id}: its spec.json ({jobs.job_dir(session, job)}) is missing; train again instead")
    old = int(spec["iterations"])
    if iterations is not None:
        if isinstance(iterations, bool) or not isinstance(iterations, int):
            raise FibError(f"--iterations {iterations!r}: a whole number of iterations, {old} or more")
        if iterations < old:
            raise FibError(f"--iterations {iterations}: fewer than the {old} job {job_id} was started with; "
                           f"pass {old} or more")
    for k in ("kind", "job_id"):
        spec.pop(k, None)
    return job["round"], {**spec, "iterations": int(iterations if iterations is not None else old),
                          "resume_from": {"job": job_id, "iteration": at}, "code": code_version()}


def started_from(session: Session, round_n: int) -> str | None:
    """What the round's latest training started from: "scratch", the job id of its init model, or None (none)."""
    return start_of(jobs.latest(session, round_n, "train"))


def start_of(train: dict | None) -> str | None:
    """What a training job started from: "scratch" or the job whose model it fine-tunes (None: no training)."""
    if train is None:
        return None
    return train.get("init_from") or "scratch"


def train_patch(session: Session, prev: dict | None, voxel_size) -> tuple[int, int, int]:
    """A training's default patch: that of the training it fine-tunes, else the voxel size's default."""
    patch = started_with(session, prev, "patch")
    return tuple(int(v) for v in patch) if patch else default_patch(voxel_size)


def started_with(session: Session, prev: dict | None, key: str):
    """The value of `key` in the spec of the training `prev` a fine-tune continues (None: scratch, or none)."""
    return (jobs.spec(session, prev) or {}).get(key) if prev else None


STEM_BELOW_NM = 6.0  # axes with finer voxels are pooled before the U-Net's levels (see remote/model.py)


def default_stem(voxel_size) -> tuple[int, int, int]:
    """Pooling on the axes finer than STEM_BELOW_NM: there a voxel is far smaller than any structure a round
    segments (mitochondria, a pore 100 nm across), so the levels run on a coarser grid, at a fraction of the
    work and with more context, and the full-resolution input still reaches the output. ×4 in-plane on an
    anisotropic (ssTEM-like) volume: on 4.6 nm vnc-mito it beat ×2 (held-out IoU 0.796 ± 0.019 → 0.847 ±
    0.009, docs/benchmarks.md, "A 4× stem with the kernel plan on the input's voxels"); ×2 on the fine axes of an
    isotropic one, where a 4× stem in 3D would pool 64 voxels into one and is not measured."""
    vs = [float(v) for v in voxel_size]
    factor = 4 if vs[0] > 2 * min(vs[1:]) else 2
    return tuple(factor if v < STEM_BELOW_NM else 1 for v in vs)


def train_batch(session: Session, prev: dict | None, voxel_size) -> int:
    """A training's default batch: that of the training it fine-tunes, else the voxel size's default."""
    batch = started_with(session, prev, "batch")
    return int(batch) if batch else default_batch(voxel_size)


def default_batch(voxel_size) -> int:
    """Patches per step: 4 where the default stem pools in-plane by 4 (that net's step on four patches costs less
    than the ×2 net's on two, 0.33 against 0.47 s on 2 cores, and BatchNorm sees twice the content), else 2."""
    return 4 if max(default_stem(voxel_size)) >= 4 else 2


def default_patch(voxel_size) -> tuple[int, int, int]:
    """About the same physical extent per axis, capped for CPU memory/time; a multiple of the default net's
    pooling. Anisotropic: 4×256×256 with the in-plane stem of voxels finer than STEM_BELOW_NM (measured
    against 4×192×192 at the same compute, docs/benchmarks.md), else 4×192×192."""
    z, y, _ = voxel_size
    if z > 2 * y:
        return (4, 256, 256) if float(y) < STEM_BELOW_NM else (4, 192, 192)
    return (32, 96, 96)


def volume_spec(session: Session, vol: dict) -> dict:
    """A volume (its catalog row) as a spec names it: absolute path and voxel size, the job has no session."""
    return {"name": vol["name"], "path": str(session.path(vol["path"])), "voxel_size": list(vol["voxel_size"])}


def inference_spec(volume: dict, checkpoint, *, block=None, threads: int = 0) -> dict:
    """What a job applying a model reads (a prediction, and a preview job with its region added)."""
    out = {"volume": volume, "checkpoint": str(checkpoint), "threads": int(threads), "device": "auto",
           "code": code_version()}
    if block:
        out["block"] = list(block)
    return out


def predict_spec(session: Session, rnd: dict, *, block=None, threads: int = 0) -> dict:
    """The round's prediction: its completed training's model on the volume it was trained on."""
    train = _completed(session, rnd["n"], "train", "train")
    res = jobs.result(session, train)
    spec = json.loads((jobs.job_dir(session, train) / "spec.json").read_text())
    return {**inference_spec(spec["volume"], jobs.job_dir(session, train) / res["checkpoint"], block=block,
                             threads=threads), "train_job": train["id"]}


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


# ---------------------------------------------------------------- the measure job (pores per µm² of envelope)
SCAN_VOXELS = 1 << 28  # bad-input scans read level 0 up to this size, a coarser level beyond


def latest_prediction(session: Session, target: str) -> tuple[dict, dict, dict]:
    """(predict job, its spec, its training's spec) of the latest completed prediction of `target`."""
    for job in session.db["jobs"].rows_where("kind = 'predict' and state = 'COMPLETED'", order_by="rowid desc"):
        spec = jobs.spec(session, job) or {}
        tpath = session.path("jobs", spec.get("train_job", "-"), "spec.json")
        tspec = json.loads(tpath.read_text()) if tpath.is_file() else {}
        if tspec.get("target_name") == target:
            return job, spec, tspec
    trained = any((jobs.spec(session, j) or {}).get("target_name") == target
                  for j in session.db["jobs"].rows_where("kind = 'train' and state = 'COMPLETED'"))
    if trained:
        raise FibError(f"target {target!r} has a trained model but no completed prediction; run `fibtui round predict`")
    raise FibError(f"target {target!r} was never trained in this session; train a round with --target {target} "
                   "(or pass labels instead)")


def _label_values(session: Session, path, names: list[str]) -> list[int]:
    """Label values of `names` in a labels file: its generator truth.json's numbering when one lies
    beside it (`X.labels.tif` → `X.truth.json`), else the session's (class k → k + 1)."""
    from pathlib import Path

    p = Path(path)
    stem = p.name.split(".")[0]
    truth = p.with_name(stem + ".truth.json")
    if truth.is_file():
        classes = json.loads(truth.read_text()).get("classes", {})
        if all(n in classes for n in names):
            return [int(classes[n]) for n in names]
    return [check_target(session, n) for n in names]


def _any_voxel(arr, test, what: str) -> bool:
    step = max(1, int(SCAN_VOXELS // max(1, arr.shape[1] * arr.shape[2])))
    import numpy as np

    for z in range(0, arr.shape[0], step):
        if np.any(test(np.asarray(arr[z:z + step]))):
            return True
    return False


def _open_labels(session: Session, path, what: str, vol: dict):
    from sessions.measure import open_volume

    try:
        arr = open_volume(str(path))
    except Exception as e:  # noqa: BLE001 - any unreadable file is one line
        raise FibError(f"{what} {path}: cannot be read as a label volume ({type(e).__name__}); give a TIFF or zarr") from None
    if tuple(arr.shape) != tuple(vol["shape"]):
        raise FibError(f"{what} {path}: shape {tuple(arr.shape)} differs from volume {vol['name']!r} "
                       f"{tuple(vol['shape'])}; give labels of the whole volume")
    return arr


def _prediction(session: Session, target: str, threshold: float, vol: dict | None):
    from sessions.measure import open_volume
    from sessions.volumes import omezarr

    job, spec, tspec = latest_prediction(session, target)
    path = str(jobs.job_dir(session, job) / (jobs.result(session, job) or {}).get("output", "prediction.ome.zarr"))
    ms = omezarr.open_multiscale(path)
    lvl = next((a for a in ms.levels if a.size <= SCAN_VOXELS), ms.levels[-1])
    thr = int(round(threshold * 255)) if lvl is ms.levels[0] else max(1, int(round(threshold * 255)) // 4)
    if not _any_voxel(lvl, lambda b: b >= thr, target):
        raise FibError(f"the prediction of {target!r} ({job['id']}) is empty at threshold {threshold:g}: train "
                       "more rounds on it, or lower --threshold")
    info = {"path": path, "shape": list(open_volume(path).shape), "voxel_size": list(spec["volume"]["voxel_size"]),
            "provenance": {"target": target, "predict_job": job["id"], "train_job": spec.get("train_job"),
                           "round": job["round"], "init_job": tspec.get("init_job"),
                           "crops": [c["id"] for c in tspec.get("crops", [])]}}
    return info


def measure_spec(session: Session, *, pores: str | None = None, pores_labels=None, envelope: str | None = None,
                 envelope_labels=None, threshold: float = 0.5, high: float | None = None, block=None,
                 min_pore_voxels: int | None = None, volume: str | None = None, split: bool = False,
                 array_tasks: int | None = None) -> dict:
    """The spec of a measure job: pores (a target's latest prediction, or labels) on the envelope
    (likewise); every check before anything is written.

    `split`: split touching pores (remote.objects.split_settings, recorded in the spec).
    `array_tasks`: on Slurm, the label pass as a job array of this many tasks (as a prediction's;
    default: the profile's `array_tasks`)."""
    if pores_labels is None and pores is None:
        pores = "pore"
    if envelope_labels is None and envelope is None:
        envelope = "envelope"
    if not 0 < threshold < 1:
        raise FibError(f"--threshold {threshold}: must be between 0 and 1")
    vol = catalog.get_volume(session, volume or catalog.default_volume(session))
    parts, prov, shapes = {}, {}, []
    pore_pred = None
    if pores_labels is None:
        pore_pred = _prediction(session, pores, threshold, vol)
    for role, target, lab in (("pores", pores, pores_labels), ("envelope", envelope, envelope_labels)):
        if lab is not None:
            names = ["pore"] if role == "pores" else ["envelope", "pore"]
            arr = _open_labels(session, lab, f"--{role}-labels", vol)
            values = _label_values(session, lab, names)
            if role == "envelope" and not _any_voxel(arr, lambda b: __import__("numpy").isin(b, values), lab):
                raise FibError(f"--envelope-labels {lab}: no envelope voxels (values {values}), so no nucleus to "
                               "measure; give labels with the nuclear envelope")
            parts[role] = {"paths": [str(lab)], "kind": "labels", "classes": values}
            prov[role] = {"labels": str(lab), "values": values}
            shapes.append((f"--{role}-labels {lab}", tuple(arr.shape), tuple(vol["voxel_size"])))
        else:
            pr = pore_pred if role == "pores" else _prediction(session, target, threshold, vol)
            paths = [pr["path"]] + ([pore_pred["path"]] if role == "envelope" and pore_pred else [])
            parts[role] = {"paths": paths, "kind": "prob", "threshold": threshold}
            prov[role] = pr["provenance"]
            shapes.append((f"the prediction of {target!r}", tuple(pr["shape"]), tuple(pr["voxel_size"])))
    (n0, s0, v0), (n1, s1, v1) = shapes
    if s0 != s1 or [float(v) for v in v0] != [float(v) for v in v1]:
        raise FibError(f"{n0} ({s0} @ {v0} nm) and {n1} ({s1} @ {v1} nm) differ in shape or voxel size; "
                       "measure pores and envelope of the same volume")
    vs = [float(v) for v in v0]
    pore_vox = min_pore_voxels if min_pore_voxels is not None else (
        1 if pores_labels is not None else max(1, int(0.1 * 3.1416 * 55.0 ** 2 * 46.0 / float(__import__("numpy").prod(vs)))))
    parts["pores"]["min_voxels"] = int(pore_vox)
    if high is not None:
        parts["pores"]["high"] = float(high)
    if split:
        from sessions.measure import split_settings

        parts["pores"]["split"] = split_settings()
    return {"voxel_size": vs, "shape": list(s0), "block": list(block or (64, 256, 256)), **parts,
            "provenance": prov, "code": code_version(), **({"array_tasks": int(array_tasks)} if array_tasks else {})}
