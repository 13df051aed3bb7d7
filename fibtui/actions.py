"""Round actions: one function each, shared by the CLI subcommand, the TUI key and its palette entry.

An `Action` names its parameters once (`Param`: flag, form label, parser,
prefilled default). The CLI builds its options from them and the TUI builds
its form from them; both hand the raw text to `invoke`, which parses every
value with the same parser (so a bad value is the same one-line error in the
terminal and inside the form), fills in the same defaults, runs the action,
and writes the action's entry in the intervention log as part of doing it.
Nothing is written before every check has passed.

No Textual here: the CLI imports this without the UI.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from remote.dispatch import Dispatcher
from sessions import annotations, interventions, jobs, labels, rounds
from sessions.errors import FibError
from sessions.geometry import Box, parse_triple
from sessions.volumes import catalog
from sessions.workspace import Session


# ---------------------------------------------------------------- parsers: text -> value, FibError naming the flag
def integer(lo: int | None = None):
    def parse(text: str, flag: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise FibError(f"{flag} {text!r}: expected a whole number") from None
        if lo is not None and v < lo:
            raise FibError(f"{flag} {text!r}: must be ≥ {lo}")
        return v
    return parse


def number(gt: float | None = None, lt: float | None = None):
    def parse(text: str, flag: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise FibError(f"{flag} {text!r}: expected a number") from None
        if not math.isfinite(v) or (gt is not None and v <= gt) or (lt is not None and v >= lt):
            bounds = " and ".join(b for b in (f"> {gt:g}" if gt is not None else "",
                                              f"< {lt:g}" if lt is not None else "") if b)
            raise FibError(f"{flag} {text!r}: must be a finite number {bounds}".rstrip())
        return v
    return parse


def triple(positive: bool = True):
    def parse(text: str, flag: str):
        return parse_triple(text, flag, positive=positive)
    return parse


def text(value: str, flag: str) -> str:
    return value


def path(value: str, flag: str) -> Path:
    p = Path(value).expanduser()
    if not p.exists():
        raise FibError(f"{flag} {value}: no such file or directory")
    return p


def names(value: str, flag: str) -> list[str]:
    return [c.strip() for c in value.split(",")]


def box_range(value: str, flag: str) -> Box:
    """`z0:z1,y0:y1,x0:x1` → Box."""
    try:
        parts = [tuple(int(v) for v in p.split(":")) for p in value.split(",")]
        assert len(parts) == 3 and all(len(p) == 2 and 0 <= p[0] < p[1] for p in parts)
    except (ValueError, AssertionError):
        raise FibError(f"{flag} {value!r}: expected z0:z1,y0:y1,x0:x1 with start < stop") from None
    return Box(tuple(p[0] for p in parts), tuple(p[1] - p[0] for p in parts))


def init_source(value: str, flag: str):
    """`auto` (the target's last model), `scratch`, or a round number."""
    if value in ("auto", "scratch"):
        return value
    try:
        return integer(1)(value, flag)
    except FibError:
        raise FibError(f"{flag} {value!r}: use auto (this target's last model), scratch, or a round number") from None


# ---------------------------------------------------------------- parameters and actions
@dataclass(frozen=True)
class Param:
    name: str                      # keyword of the action's function
    flag: str                      # CLI flag; also names the input in errors
    label: str                     # the form's label
    parse: Callable[[str, str], Any] = text
    default: Any = None            # a value, or a function of (session, context values) giving one
    help: str = ""
    choices: Callable[[Session], list[str]] | None = None  # the form offers these (the CLI takes any text)
    required: bool = False

    def default_text(self, session: Session, ctx: dict) -> str:
        v = self.default(session, ctx) if callable(self.default) else self.default
        if v is None:
            return ""
        return ",".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)


@dataclass(frozen=True)
class Action:
    name: str                      # the function's name, the CLI's dispatch key
    title: str                     # the palette entry and the form's title; starts with its verb
    key: str                       # the TUI key
    help: str
    params: tuple[Param, ...]
    run: Callable[..., dict]       # run(session, ctx, **values) -> {"summary": str, ...}
    confirm: Callable[[Session, dict], str] | None = None  # the question before an irreversible action
    cli: str = ""                  # the CLI command that does the same

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)


@dataclass
class Context:
    """Who acts, from where, and the executor cache to reuse (the TUI keeps its SSH connections open)."""

    via: str = "cli"
    author: str | None = None
    executors: dict = field(default_factory=dict)
    config: str | None = None


def parse(session: Session, action: Action, raw: dict[str, str | None]) -> dict:
    """Every raw text through its parser; empty or missing → the default; a missing required value → one line."""
    values: dict = {}
    for p in action.params:
        given = raw.get(p.name)
        given = given.strip() if isinstance(given, str) else given
        if given in (None, ""):
            given = p.default_text(session, values) or None
        if given is None:
            if p.required:
                raise FibError(f"{p.flag}: required ({p.help or p.label})")
            values[p.name] = None
            continue
        values[p.name] = p.parse(given, p.flag) if isinstance(given, str) else given
    return values


def invoke(session: Session, name: str, raw: dict[str, str | None], ctx: Context | None = None) -> dict:
    """Parse, check and run one action; its intervention entry is written by the action itself."""
    action = ACTIONS[name]
    return action.run(session, ctx or Context(), **parse(session, action, raw))


def log(session: Session, ctx: Context, action: str, subject: str | None, subject_id, round_n: int | None,
        params: dict) -> dict:
    return interventions.record(session, action, subject=subject, subject_id=subject_id, round_n=round_n,
                                params={k: v for k, v in params.items() if v is not None},
                                author=ctx.author, via=ctx.via)


def _dispatcher(session: Session, ctx: Context) -> Dispatcher:
    return Dispatcher(session, executors=ctx.executors)


# ---------------------------------------------------------------- defaults read from the session
def latest_round(session: Session, ctx: dict) -> int | None:
    r = rounds.current(session, required=False)
    return r["n"] if r else None


def round_target(session: Session, ctx: dict) -> str | None:
    n = ctx.get("round_n")
    r = rounds.get(session, n) if n else rounds.current(session, required=False)
    return r["target"] if r else None


def only_volume(session: Session, ctx: dict) -> str | None:
    try:
        return catalog.default_volume(session)
    except FibError:
        return None


def default_patch(session: Session, ctx: dict):
    vol = only_volume(session, ctx)
    return rounds.default_patch(catalog.get_volume(session, vol)["voxel_size"]) if vol else None


def class_names(session: Session) -> list[str]:
    return labels.known_classes(session)


def volume_names(session: Session) -> list[str]:
    return [v["name"] for v in session.db["volumes"].rows_where(order_by="name")]


def round_numbers(session: Session) -> list[str]:
    return [str(r["n"]) for r in session.db["rounds"].rows_where(order_by="n desc")]


def unlabelled_regions(session: Session) -> list[str]:
    return [str(r["id"]) for r in session.db["holdout"].rows_where("labels_path is null", order_by="id")]


def first_unlabelled_region(session: Session, ctx: dict) -> str | None:
    return next(iter(unlabelled_regions(session)), None)


def active_jobs(session: Session) -> list[str]:
    return [j["id"] for j in jobs.active(session)][::-1]


def resumable_jobs(session: Session) -> list[str]:
    rows = session.db["jobs"].rows_where("kind = 'train' and state not in ('PENDING', 'RUNNING', 'COMPLETED')",
                                         order_by="rowid desc")
    return [j["id"] for j in rows if jobs.resumable(session, j) is not None]


def first_resumable(session: Session, ctx: dict) -> str | None:
    n = ctx.get("round_n")
    for job_id in resumable_jobs(session):
        if n is None or jobs.get(session, job_id)["round"] == n:
            return job_id
    return None


def executors(session: Session) -> list[str]:
    from remote.profiles import executor_names

    try:
        return executor_names()
    except FibError:
        return ["local", "slurm"]


def last_threshold(session: Session, ctx: dict) -> float:
    row = next(session.db["jobs"].rows_where("kind = 'evaluate'", order_by="rowid desc", limit=1), None)
    return (jobs.spec(session, row) or {}).get("threshold", 0.5) if row else 0.5


ROUND = Param("round_n", "--round", "Round", integer(1), latest_round, "round number (default: the latest)",
              choices=round_numbers)
EXECUTOR = Param("executor", "--executor", "Executor", text, "local",
                 "where the job runs: local, slurm[:PROFILE] or ssh:PROFILE (profiles in fibtui.toml)",
                 choices=executors)
VOLUME = Param("volume", "--volume", "Volume", text, only_volume, "volume name (default: the session's only one)",
               choices=volume_names)


# ---------------------------------------------------------------- the actions
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
          batch: int, lr: float, base: int | None, levels: int | None, seed: int, threads: int, init,
          executor: str) -> dict:
    rnd = rounds.get(session, round_n)
    spec = rounds.train_spec(session, rnd, target=target, iterations=iterations, patch=patch, batch=batch, lr=lr,
                             base=base, levels=levels, seed=seed, threads=threads, init=init)
    job = _dispatcher(session, ctx).submit(rnd["n"], "train", spec, executor)
    rounds.set_target(session, rnd["n"], spec["target_name"])
    log(session, ctx, "job submitted", "job", job["id"], rnd["n"],
        {"kind": "train", "executor": executor, "target": spec["target_name"], "iterations": iterations,
         "patch": ",".join(map(str, spec["patch"])), "batch": batch, "lr": lr, "base": spec["model"]["base"],
         "levels": spec["model"]["levels"],
         "seed": seed, "from": spec.get("init_job") or "scratch"})
    start = spec.get("init_job") or "scratch"
    return {**job, "summary": f"submitted {job['id']} on {executor}: {spec['target_name']}, {iterations} iterations, "
                              f"from {start}"}


def predict(session: Session, ctx: Context, *, round_n: int | None, block, threads: int, executor: str) -> dict:
    rnd = rounds.get(session, round_n)
    spec = rounds.predict_spec(session, rnd, block=block, threads=threads)
    job = _dispatcher(session, ctx).submit(rnd["n"], "predict", spec, executor)
    log(session, ctx, "job submitted", "job", job["id"], rnd["n"],
        {"kind": "predict", "executor": executor, "block": ",".join(map(str, block)) if block else None,
         "model": spec["train_job"]})
    return {**job, "summary": f"submitted {job['id']} on {executor} (model of {spec['train_job']})"}


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


def commit_crop(session: Session, ctx: Context, *, round_n: int | None) -> dict:
    """The viewer's painted crop box (its autosave in the session) → a crop of the round, through
    `add_crop`'s checks; one "crop painted" entry, one entry per proofreading decision in it."""
    ann = annotations.Annotation.load(session.root)
    if ann is None or ann.empty:
        raise FibError("nothing painted to commit: paint in a crop box in the viewer first")
    rnd = rounds.get(session, round_n)
    arr = ann.dense()
    if not arr.any():
        raise FibError(f"crop box {ann.box} is empty: every voxel is unlabelled; paint some voxels first")
    row = labels.add_crop_array(session, rnd["n"], ann.volume, arr, ann.box.offset,
                                source=annotations.source_tag(ann), what=f"painted crop box {ann.box}")
    counts = {int(v): int((arr == v).sum()) for v in np.unique(arr) if v}
    log(session, ctx, "crop painted", "crop", row["id"], rnd["n"],
        {"offset": row["offset"], "shape": row["shape"], "labelled_voxels": row["labelled_voxels"],
         "classes": ",".join(f"{k}:{n}" for k, n in counts.items()), "decisions": len(ann.decisions)})
    for d in ann.decisions:
        log(session, ctx, annotations.DECISIONS[d["decision"]], "object", d.get("object"), rnd["n"],
            {"crop": row["id"], "voxels": d["voxels"], "class": d.get("class"), "at": d.get("at")})
    annotations.discard(session.root)
    return {**row, "summary": f"crop {row['id']} committed to round {rnd['n']}: {row['shape']} at {row['offset']}, "
                              f"{row['labelled_voxels']} labelled voxels, {len(ann.decisions)} object decisions"}


def measure(session: Session, ctx: Context, *, pores: str | None, pores_labels: Path | None, envelope: str | None,
            envelope_labels: Path | None, threshold: float, high: float | None, block, executor: str) -> dict:
    spec = rounds.measure_spec(session, pores=pores, pores_labels=pores_labels, envelope=envelope,
                               envelope_labels=envelope_labels, threshold=threshold, high=high, block=block)
    n = rounds.current(session)["n"]  # a measure job belongs to the latest round, like its inputs
    job = _dispatcher(session, ctx).submit(n, "measure", spec, executor)
    prov = spec["provenance"]
    what = {role: (p.get("labels") or f"{p['target']} ({p['predict_job']})") for role, p in prov.items()}
    log(session, ctx, "job submitted", "job", job["id"], n,
        {"kind": "measure", "executor": executor, "pores": what["pores"], "envelope": what["envelope"],
         "threshold": threshold, "high": high})
    return {**job, "summary": f"submitted {job['id']} on {executor}: pores from {what['pores']} on the envelope "
                              f"from {what['envelope']}"}


def import_labels(session: Session, ctx: Context, *, source: Path, offset, volume: str | None,
                  classes: list[str] | None, round_n: int | None) -> dict:
    """Crops from napari (TIFF, zarr, OME-Zarr labels/) or Paintera/N5; a full-volume label image becomes
    one crop per group of labelled islands. All are checked before any is written."""
    from sessions.volumes import labels_io

    rnd = rounds.get(session, round_n)
    volume = volume or catalog.default_volume(session)
    arr, meta_offset, kind = labels_io.read_any(source)
    vol_shape = tuple(catalog.get_volume(session, volume)["shape"])
    if offset is None and meta_offset is None and arr.shape == vol_shape:
        boxes = labels_io.split_crops(arr)
        if not boxes:
            raise FibError(f"{source}: every voxel is 0 (unlabelled); nothing to import")
        parts = [(b.offset, arr[b.slices]) for b in boxes]
    else:
        at = offset if offset is not None else meta_offset
        if at is None:
            raise FibError(f"--offset: required — {source} ({kind}, shape {','.join(map(str, arr.shape))}) is "
                           f"smaller than the volume ({','.join(map(str, vol_shape))}) and says nowhere where it lies")
        parts = [(tuple(at), arr)]
    for off, part in parts:  # every check first (outside, held-out overlap, classes, empty): all or nothing
        labels.check_crop_array(session, volume, part, off, classes, what=f"{source}")
    rows = []
    for off, part in parts:
        row = labels.add_crop_array(session, rnd["n"], volume, part, off, classes, source=f"{kind}:{source}",
                                    what=str(source))
        log(session, ctx, "crop imported", "crop", row["id"], rnd["n"],
            {"source": str(source), "format": kind, "offset": row["offset"], "shape": row["shape"],
             "labelled_voxels": row["labelled_voxels"]})
        rows.append(row)
    return {"crops": rows, "summary": f"{len(rows)} crop{'s' * (len(rows) != 1)} imported from {kind} into round "
                                      f"{rnd['n']}: " + ", ".join(f"{r['id']} {r['shape']} at {r['offset']}"
                                                                  for r in rows)}


def export_labels(session: Session, ctx: Context, *, volume: str | None, what: list[str]) -> dict:
    """Crops, held-out labels and the latest prediction as NGFF label images in the volume's OME-Zarr."""
    import zarr as _zarr

    from sessions.volumes import labels_io
    from sessions.volumes.slices import latest_prediction

    volume = volume or catalog.default_volume(session)
    unknown = set(what) - {"crops", "holdout", "prediction"}
    if unknown:
        raise FibError(f"--what {','.join(what)}: choose from crops, holdout, prediction")
    ms = catalog.open_volume(session, volume)
    image, classes, done = catalog.volume_dir(session, volume), labels.known_classes(session), []
    pred = latest_prediction(session, volume) if "prediction" in what else None
    if "prediction" in what and pred is None:
        raise FibError(f"--what prediction: volume {volume!r} has no completed prediction yet")
    for kind, table, col in (("crops", "crops", "path"), ("holdout", "holdout", "labels_path")):
        if kind in what:
            rows = [r for r in session.db[table].rows_where("volume = ?", [volume], order_by="id") if r[col]]
            blocks = [(labels._box(r), _zarr.open_array(str(session.path(r[col])), mode="r")[:]) for r in rows]
            done.append(str(labels_io.export(image, kind, ms, classes, blocks)))
    if pred is not None:
        done.append(str(labels_io.export_prediction(image, "prediction", ms, pred)))
    log(session, ctx, "labels exported", "volume", volume, None, {"what": ",".join(what), "to": ",".join(done)})
    return {"paths": done, "summary": "exported " + ", ".join(done)}


# The questions asked before irreversible actions. Each first runs the action's own checks (nothing
# written), so the form shows a refusal before it asks anything.
def _confirm_cancel_round(session: Session, v: dict) -> str:
    n = rounds.get(session, v["round_n"])["n"]
    running = [j["id"] for j in jobs.active(session) if j["round"] == n]
    return (f"Cancel round {n}? Its running jobs stop: {', '.join(running) or 'none'}.\n"
            "Their files and checkpoints stay; a cancelled training can be resumed.")


def _confirm_cancel_job(session: Session, v: dict) -> str:
    j = jobs.get(session, v["job"])
    if j["state"] not in jobs.ACTIVE:
        raise FibError(f"job {j['id']} is already {j['state']}; nothing to cancel")
    return f"Cancel job {j['id']} ({j['state']} on {j['executor']})?\nIts process is stopped; its files and checkpoints stay."


def _confirm_draw(session: Session, v: dict) -> str:
    volume = v["volume"] or catalog.default_volume(session)
    labels.draw_holdout(session, volume, v["count"], v["size"], within=v["within"], seed=v["seed"], dry_run=True)
    return (f"Draw {v['count']} held-out regions of {','.join(map(str, v['size']))} at random in {volume}?\n"
            "They are frozen once drawn: no re-draw, and no crop may overlap them.")


def _confirm_label(session: Session, v: dict) -> str:
    labels.check_holdout_labels(session, v["region"], v["labels_path"], v["classes"])
    return f"Attach {v['labels_path']} to held-out region {v['region']}?\nHeld-out labels are frozen once attached."


ACTIONS: dict[str, Action] = {a.name: a for a in (
    Action("new_round", "New round", "N", "Start the next labeling round (crops added from now on belong to it)",
           (Param("target", "--target", "Target class", text, round_target, "the class this round trains",
                  choices=class_names),), new_round, cli="fibtui round new"),
    Action("add_crop", "Add crop", "a", "Add a labelled crop (TIFF or zarr from napari, Paintera...) to a round",
           (Param("labels_path", "--labels", "Labels file", path, None, "label array .tif or .zarr, Z,Y,X",
                  required=True),
            Param("offset", "--offset", "Offset Z,Y,X", triple(positive=False), None,
                  "position of the crop's first voxel in the volume", required=True),
            VOLUME,
            Param("classes", "--classes", "Classes", names, None, "names of labels 1..n (first crop only)"),
            ROUND), add_crop, cli="fibtui crop add"),
    Action("draw_holdout", "Draw held-out regions", "h", "Draw evaluation regions at random, once; then frozen",
           (Param("size", "--size", "Size Z,Y,X", triple(), None, "region shape", required=True),
            Param("count", "--count", "Count", integer(1), 4, "number of regions"),
            Param("within", "--within", "Within", box_range, None, "restrict to z0:z1,y0:y1,x0:x1"),
            Param("seed", "--seed", "Seed", integer(0), None, "seed (default: random, recorded)"),
            VOLUME), draw_holdout, confirm=_confirm_draw, cli="fibtui holdout draw"),
    Action("label_holdout", "Label held-out region", "H", "Attach labels to a held-out region (once; then frozen)",
           (Param("region", "--region", "Region", integer(1), first_unlabelled_region, "held-out region id",
                  choices=unlabelled_regions, required=True),
            Param("labels_path", "--labels", "Labels file", path, None, "label array of the region's shape",
                  required=True),
            Param("classes", "--classes", "Classes", names, None, "names of labels 1..n (if none yet)")),
           label_holdout, confirm=_confirm_label, cli="fibtui holdout label"),
    Action("train", "Train", "t", "Train or fine-tune the round's model (from this target's last model)",
           (ROUND,
            Param("target", "--target", "Target class", text, round_target, "class to train (default: the round's)",
                  choices=class_names),
            Param("iterations", "--iterations", "Iterations", integer(1), 600, "training iterations"),
            Param("patch", "--patch", "Patch Z,Y,X", triple(), default_patch, "patch shape (default from the voxel size)"),
            Param("batch", "--batch", "Batch", integer(1), 2, "patches per step"),
            Param("lr", "--lr", "Learning rate", number(gt=0), 1e-3, "peak learning rate (cosine decay)"),
            Param("base", "--base", "Base channels", integer(1), None,
                  "U-Net channels at the first level (default: the starting model's, else 16)"),
            Param("levels", "--levels", "Levels", integer(1), None,
                  "U-Net levels (default: the starting model's, else 4)"),
            Param("seed", "--seed", "Seed", integer(0), 0, "random seed"),
            Param("threads", "--threads", "CPU threads", integer(0), 0, "CPU threads (0: all)"),
            Param("init", "--from", "Start from", init_source, "auto",
                  "auto (this target's last model), scratch, or a round number",
                  choices=lambda s: ["auto", "scratch", *round_numbers(s)]),
            EXECUTOR), train, cli="fibtui round train"),
    Action("predict", "Predict", "p", "Predict the whole volume blockwise with the round's model",
           (ROUND,
            Param("block", "--block", "Block Z,Y,X", triple(), None, "block shape (default 32,256,256)"),
            Param("threads", "--threads", "CPU threads", integer(0), 0, "CPU threads (0: all)"),
            EXECUTOR), predict, cli="fibtui round predict"),
    Action("evaluate", "Evaluate", "e", "Score the round's prediction on the held-out regions",
           (ROUND,
            Param("threshold", "--threshold", "Threshold", number(gt=0, lt=1), last_threshold,
                  "probability threshold"),
            EXECUTOR), evaluate, cli="fibtui round eval"),
    Action("measure", "Measure pores", "M", "Count the pores per nucleus and their density per µm² of envelope",
           (Param("pores", "--pores", "Pore target", text, None,
                  "class whose latest prediction gives the pores (default: pore)", choices=class_names),
            Param("pores_labels", "--pores-labels", "Pore labels", path, None,
                  "labels of the whole volume instead of a prediction"),
            Param("envelope", "--envelope", "Envelope target", text, None,
                  "class whose latest prediction gives the envelope (default: envelope)", choices=class_names),
            Param("envelope_labels", "--envelope-labels", "Envelope labels", path, None,
                  "labels of the whole volume instead of a prediction"),
            Param("threshold", "--threshold", "Threshold", number(gt=0, lt=1), 0.5, "probability threshold"),
            Param("high", "--high", "Hysteresis high", number(gt=0, lt=1), None,
                  "keep only pores reaching this probability (hysteresis; default: off)"),
            Param("block", "--block", "Block Z,Y,X", triple(), None, "block shape (default 64,256,256)"),
            EXECUTOR), measure, cli="fibtui measure"),
    Action("resume", "Resume training", "u", "Continue a stopped training from its checkpoint, as a new attempt",
           (Param("round_n", "--round", "Round", integer(1), None, "look for the training in this round only",
                  choices=round_numbers),
            Param("job", "--job", "Training job", text, first_resumable, "the stopped training (default: the "
                  "latest resumable one)", choices=resumable_jobs),
            Param("iterations", "--iterations", "Iterations", integer(1), None, "total iterations (default: as before)"),
            Param("executor", "--executor", "Executor", text, None, "where it runs (default: where it ran)",
                  choices=executors)), resume, cli="fibtui round train --resume"),
    Action("cancel_round", "Cancel round", "X", "Cancel every running job of a round", (ROUND,), cancel_round,
           confirm=_confirm_cancel_round, cli="fibtui round cancel"),
    Action("cancel_job", "Cancel job", "c", "Stop a running job (its checkpoints stay)",
           (Param("job", "--job", "Job", text, None, "job id", choices=active_jobs, required=True),),
           cancel_job, confirm=_confirm_cancel_job, cli="fibtui jobs cancel"),
    Action("commit_crop", "Commit crop", "C", "Store the viewer's painted crop box as a crop of the round "
           "(unpainted voxels unlabelled), with its proofreading decisions", (ROUND,), commit_crop),
    Action("import_labels", "Import labels", "I", "Add crops from napari (TIFF, zarr, OME-Zarr labels/) or "
           "Paintera/N5; a full-volume label image becomes one crop per labelled group",
           (Param("source", "--from", "Labels", path, None, "TIFF, zarr, OME-Zarr (labels/) or N5 dataset",
                  required=True),
            Param("offset", "--offset", "Offset Z,Y,X", triple(positive=False), None,
                  "where a crop's first voxel lies (default: from the file, or cut from a full-volume image)"),
            VOLUME,
            Param("classes", "--classes", "Classes", names, None, "names of labels 1..n (first crop only)"),
            ROUND), import_labels, cli="fibtui labels import"),
    Action("export_labels", "Export labels", "E", "Write crops, held-out labels and the prediction as OME-Zarr "
           "labels/ beside the image (napari opens them over the raw volume)",
           (VOLUME,
            Param("what", "--what", "What", names, "crops,holdout,prediction", "any of crops, holdout, prediction")),
           export_labels, cli="fibtui labels export"),
)}
