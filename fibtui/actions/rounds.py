"""The round actions: new round, crops, held-out regions, train, predict, preview job, evaluate, resume,
cancel, and the questions asked before the irreversible ones."""

from __future__ import annotations

from pathlib import Path

from fibtui.actions.base import Context, _dispatcher, log
from fibtui.actions.defaults import last_threshold
from remote import preview
from sessions import jobs, labels, rounds
from sessions.errors import FibError
from sessions.geometry import Box, fmt, fmt_range
from sessions.volumes import catalog
from sessions.workspace import Session


def new_round(session: Session, ctx: Context, *, target: str | None) -> dict:
    row = rounds.new_round(session, target)
    log(session, ctx, "round new", "round", row["n"], row["n"], {"target": row["target"]})
    return {**row, "summary": f"round {row['n']} started" + (f", target {row['target']}" if row["target"] else "")}


def add_crop(session: Session, ctx: Context, *, labels_path: Path, offset, volume: str | None,
             classes: list[str] | None, round_n: int | None) -> dict:
    rnd = rounds.get(session, round_n)
    row = labels.add_crop(session, rnd["n"], volume or catalog.default_volume(session), labels_path, offset, classes)
    log(session, ctx, "crop added", "crop", row["id"], rnd["n"],
        {"labels": str(labels_path), "offset": row["offset"], "shape": row["shape"],
         "labelled_voxels": row["labelled_voxels"]})
    return {**row, "summary": f"crop {row['id']} added to round {rnd['n']}: {row['shape']} at {row['offset']}, "
                              f"{row['labelled_voxels']} labelled voxels"}


def draw_holdout(session: Session, ctx: Context, *, size, count: int, within: Box | None, seed: int | None,
                 volume: str | None) -> dict:
    rows = labels.draw_holdout(session, volume or catalog.default_volume(session), count, size, within=within,
                               seed=seed)
    ids = [r["id"] for r in rows]
    log(session, ctx, "held-out drawn", "regions", ",".join(map(str, ids)), None,
        {"count": count, "size": ",".join(map(str, size)), "within": str(within) if within else None,
         "seed": rows[0]["seed"] if rows else seed})
    return {"regions": rows, "summary": f"{len(rows)} held-out regions drawn and frozen: "
                                        + ", ".join(f"{r['id']} at {r['offset']}" for r in rows)}


def label_holdout(session: Session, ctx: Context, *, region: int, labels_path: Path,
                  classes: list[str] | None) -> dict:
    row = labels.label_holdout(session, region, labels_path, classes)
    log(session, ctx, "held-out labelled", "region", region, None, {"labels": str(labels_path)})
    return {**row, "summary": f"held-out region {region} labelled (frozen)"}


def train(session: Session, ctx: Context, *, round_n: int | None, target: str | None, iterations: int, patch,
          batch: int | None, lr: float, base: int | None, levels: int | None, stem, seed: int, threads: int, init,
          preprocess: str | None, augment: dict, validation: float, tta: str, choose: str, executor: str,
          kernel_grid: str | None) -> dict:
    rnd = rounds.get(session, round_n)
    spec = rounds.train_spec(session, rnd, target=target, iterations=iterations, patch=patch, batch=batch, lr=lr,
                             base=base, levels=levels, seed=seed, threads=threads, init=init, preprocess=preprocess,
                             augment=augment, validation=validation, stem=stem, tta=tta, choose=choose,
                             kernel_grid=kernel_grid)
    check_patch(spec)
    job = _dispatcher(session, ctx).submit(rnd["n"], "train", spec, executor)
    rounds.set_target(session, rnd["n"], spec["target_name"])
    log(session, ctx, "job submitted", "job", job["id"], rnd["n"],
        {"kind": "train", "executor": executor, "target": spec["target_name"], "iterations": iterations,
         "patch": ",".join(map(str, spec["patch"])), "batch": spec["batch"], "lr": lr, "base": spec["model"]["base"],
         "levels": spec["model"]["levels"], "stem": ",".join(map(str, spec["model"]["stem"])),
         "kernel_grid": spec["model"]["kernel_grid"],
         "seed": seed, "from": spec.get("init_job") or "scratch", "preprocess": spec["preprocess"]["method"],
         "augment": augment_text(spec["augment"]), "validation": spec["validation"], "tta": spec["tta"],
         "choose": spec["choose"]})
    start = spec.get("init_job") or "scratch"
    return {**job, "summary": f"submitted {job['id']} on {executor}: {spec['target_name']}, {iterations} iterations, "
                              f"from {start}, preprocessing {spec['preprocess']['method']}"}


def check_patch(spec: dict) -> None:
    """A patch the U-Net cannot take (not a multiple of its pooling) is one line here, not a failed job."""
    from remote.model import UNetConfig  # torch: only when a training is submitted

    div = UNetConfig(voxel_size=tuple(spec["volume"]["voxel_size"]), **spec["model"]).divisor
    patch = spec["patch"]
    if any(p % d for p, d in zip(patch, div)):
        near = [max(d, round(p / d) * d) for p, d in zip(patch, div)]
        raise FibError(f"--patch {fmt(patch)}: each extent must be a multiple of {fmt(div)} (the U-Net's pooling, "
                       f"stem included); try --patch {fmt(near)}")


def augment_text(aug: dict) -> str:
    """The augmentation as the curator would type it: the kinds that are on, with their strengths."""
    on = [f"{k}={v:g}" for k, v in aug.items() if v]
    return ",".join(on) or "none"


def predict(session: Session, ctx: Context, *, round_n: int | None, block, threads: int, executor: str) -> dict:
    rnd = rounds.get(session, round_n)
    spec = rounds.predict_spec(session, rnd, block=block, threads=threads)
    job = _dispatcher(session, ctx).submit(rnd["n"], "predict", spec, executor)
    log(session, ctx, "job submitted", "job", job["id"], rnd["n"],
        {"kind": "predict", "executor": executor, "block": ",".join(map(str, block)) if block else None,
         "model": spec["train_job"]})
    return {**job, "summary": f"submitted {job['id']} on {executor} (model of {spec['train_job']})"}


def preview_job_spec(session: Session, v: dict) -> tuple[dict, dict]:
    """(round, spec) of the preview job the parsed values `v` ask for: every check, nothing written (the
    viewer runs this before it asks whether to submit)."""
    rnd = rounds.get(session, v["round_n"])
    spec = preview.job_spec(session, v["region"], v["model"], round_n=rnd["n"],
                            volume=v["volume"] or catalog.default_volume(session), block=v["block"],
                            threads=v["threads"])
    return rnd, spec


def preview_job(session: Session, ctx: Context, *, round_n: int | None, region: Box, model: str | None,
                volume: str | None, block, threads: int, executor: str) -> dict:
    """A region too large to preview in process, predicted as a small job of kind `preview` (never the
    round's prediction: that is kind `predict`)."""
    rnd, spec = preview_job_spec(session, {"round_n": round_n, "region": region, "model": model, "volume": volume,
                                           "block": block, "threads": threads})
    job = _dispatcher(session, ctx).submit(rnd["n"], "preview", spec, executor)
    log(session, ctx, "job submitted", "job", job["id"], rnd["n"],
        {"kind": "preview", "executor": executor, "region": fmt_range(region), "volume": spec["volume"]["name"],
         "block": ",".join(map(str, block)) if block else None, "model": spec["model_label"]})
    return {**job, "model": spec["model_label"],
            "summary": f"submitted preview {job['id']} on {executor}: {region.size:,} voxels at {region} "
                       f"(model {spec['model_label']})"}


def evaluate(session: Session, ctx: Context, *, round_n: int | None, threshold: float, executor: str) -> dict:
    rnd = rounds.get(session, round_n)
    before = last_threshold(session, {})
    spec = rounds.eval_spec(session, rnd, threshold=threshold)
    job = _dispatcher(session, ctx).submit(rnd["n"], "evaluate", spec, executor)
    if session.db["jobs"].count_where("kind = 'evaluate'") > 1 and threshold != before:
        log(session, ctx, "threshold changed", "job", job["id"], rnd["n"], {"from": before, "to": threshold})
    log(session, ctx, "job submitted", "job", job["id"], rnd["n"],
        {"kind": "evaluate", "executor": executor, "threshold": threshold, "prediction": spec["predict_job"],
         "regions": ",".join(str(r["id"]) for r in spec["regions"])})
    return {**job, "summary": f"submitted {job['id']} on {executor} (threshold {threshold:g}, "
                              f"{len(spec['regions'])} held-out regions)"}


def resume(session: Session, ctx: Context, *, round_n: int | None, job: str | None, iterations: int | None,
           executor: str | None) -> dict:
    if job is None:
        where = f" in round {round_n}" if round_n else ""
        raise FibError(f"no training{where} can be resumed: only a training that ended before its last "
                       "iteration and left a checkpoint can (see `fibtui jobs`)")
    old = jobs.get(session, job)
    new = _dispatcher(session, ctx).resume(job, iterations=iterations, executor=executor or old["executor"])
    spec = jobs.spec(session, new) or {}
    log(session, ctx, "training resumed", "job", new["id"], new["round"],
        {"resumes": job, "executor": new["executor"], "iterations": spec.get("iterations"),
         "from_iteration": (spec.get("resume_from") or {}).get("iteration")})
    return {**new, "summary": f"{new['id']} resumes {job} from iteration "
                              f"{(spec.get('resume_from') or {}).get('iteration')} on {new['executor']}"}


def cancel_round(session: Session, ctx: Context, *, round_n: int | None) -> dict:
    rnd = rounds.get(session, round_n)
    done = _dispatcher(session, ctx).cancel_round(rnd["n"])
    log(session, ctx, "round cancelled", "round", rnd["n"], rnd["n"], {"jobs": ",".join(j["id"] for j in done)})
    return {"round": rnd["n"], "jobs": done,
            "summary": f"round {rnd['n']}: " + (", ".join(f"{j['id']} {j['state']}" for j in done)
                                                or "no running jobs")}


def cancel_job(session: Session, ctx: Context, *, job: str | None) -> dict:
    if job is None:
        raise FibError("no job to cancel: pass a job id (see `fibtui jobs`)")
    row = _dispatcher(session, ctx).cancel(job)
    log(session, ctx, "job cancelled", "job", job, row["round"], {"kind": row["kind"], "executor": row["executor"]})
    return {**row, "summary": f"{job} {row['state']}"}




# The questions asked before irreversible actions. Each first runs the action's own checks (nothing
# written), so the form shows a refusal before it asks anything.
def confirm_cancel_round(session: Session, v: dict) -> str:
    n = rounds.get(session, v["round_n"])["n"]
    running = [j["id"] for j in jobs.active(session) if j["round"] == n]
    return (f"Cancel round {n}? Its running jobs stop: {', '.join(running) or 'none'}.\n"
            "Their files and checkpoints stay; a cancelled training can be resumed.")


def confirm_cancel_job(session: Session, v: dict) -> str:
    j = jobs.get(session, v["job"])
    if j["state"] not in jobs.ACTIVE:
        raise FibError(f"job {j['id']} is already {j['state']}; nothing to cancel")
    return f"Cancel job {j['id']} ({j['state']} on {j['executor']})?\nIts process is stopped; its files and checkpoints stay."


def confirm_draw(session: Session, v: dict) -> str:
    volume = v["volume"] or catalog.default_volume(session)
    labels.draw_holdout(session, volume, v["count"], v["size"], within=v["within"], seed=v["seed"], dry_run=True)
    return (f"Draw {v['count']} held-out regions of {','.join(map(str, v['size']))} at random in {volume}?\n"
            "They are frozen once drawn: no re-draw, and no crop may overlap them.")


def confirm_label(session: Session, v: dict) -> str:
    labels.check_holdout_labels(session, v["region"], v["labels_path"], v["classes"])
    return f"Attach {v['labels_path']} to held-out region {v['region']}?\nHeld-out labels are frozen once attached."
