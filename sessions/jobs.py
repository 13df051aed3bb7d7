"""Job records in the session: create a job directory, fold its events into SQLite.

The session process is the single writer of SQLite: it reads each job's
`events.jsonl` from the last byte offset it ingested, so ingesting twice is
harmless and a restarted TUI picks up exactly where it left off.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sessions.errors import FibError
from sessions.jobfiles import EVENTS, SPEC, atomic_write_json, read_events, read_json, read_result
from sessions.timeutil import now
from sessions.workspace import Session

# A job run as a Slurm job array (remote/job_array.py): array.json says how many tasks and blocks (and passes
# over them); each task keeps its own ledger under tasks/<i>/ (so no two tasks write one file): a prediction's
# lists its blocks in blocks.done, a measure's is one npz per labelled block, <pass>/<block>.npz.
ARRAY, TASKS, LEDGER = "array.json", "tasks", "blocks.done"
BLOCK_FILES = "*/*.npz"
ARRAY_KINDS = frozenset({"predict", "measure"})  # the kinds that can run as an array (remote/job_array.py HOOKS)

ACTIVE = ("PENDING", "RUNNING")
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "OUT_OF_MEMORY")
STOPPED = tuple(s for s in TERMINAL if s != "COMPLETED")  # ended, but not after its last iteration
CHECKPOINT = "checkpoint.pt"  # a training's full state (remote/checkpoints.py writes it): what a resume needs


def array_info(d: Path) -> dict | None:
    """{tasks, blocks} of a job array's directory, or None for a plain job."""
    try:
        return read_json(Path(d) / ARRAY)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None


def blocks_done(d: Path) -> int:
    """Blocks finished so far over every task's ledger (progress of an array job)."""
    n = sum(1 for _ in Path(d).glob(f"{TASKS}/*/{BLOCK_FILES}"))
    for led in Path(d).glob(f"{TASKS}/*/{LEDGER}"):
        try:
            n += sum(1 for ln in led.read_text().split() if ln)
        except OSError:
            continue
    return n


def job_dir(session: Session, job: dict) -> Path:
    return session.path(job["dir"])


def create(session: Session, round_n: int, kind: str, spec: dict, executor: str, *, resumes: str | None = None,
           init_from: str | None = None) -> dict:
    """A new job: its directory with spec.json, and its row (PENDING).

    `resumes`: the job this one continues (a new attempt of the same training).
    `init_from`: the job whose model a training starts from; for a train spec it
    defaults to spec["init_job"] (None: from scratch)."""
    if init_from is None and kind == "train":
        init_from = spec.get("init_job")
    n = session.db["jobs"].count_where("round = ? and kind = ?", [round_n, kind]) + 1
    while session.path("jobs", f"r{round_n}-{kind}-{n}").exists():  # left by a killed submitter
        n += 1
    job_id = f"r{round_n}-{kind}-{n}"
    d = session.path("jobs", job_id)
    d.mkdir(parents=True, exist_ok=False)
    atomic_write_json(d / SPEC, {**spec, "kind": kind, "job_id": job_id})
    row = {
        "id": job_id, "round": round_n, "kind": kind, "executor": executor, "external_id": None,
        "state": "PENDING", "reason": None, "dir": session.rel(d), "submitted": now(), "started": None,
        "ended": None, "progress": 0.0, "message": None, "events_offset": 0, "heartbeat": None,
        "elapsed_s": None, "gpus": None, "gpu_hours": None, "elapsed_prev_s": None, "gpu_hours_prev": None,
        "resumes": resumes, "init_from": init_from,
    }
    session.db["jobs"].insert(row)
    return row


def unsubmitted(session: Session, older_than_s: float) -> tuple[list[dict], list[Path]]:
    """What a submitter killed mid-submission (SIGKILL, a dropped SSH session) can leave behind.

    (rows of PENDING jobs that never got an executor id, submitted more than `older_than_s` ago;
    job directories with no row, as old, in which no job ever started). Recent ones are left alone:
    another fibtui may be submitting them right now."""
    cutoff = datetime.now(timezone.utc) - timedelta(seconds=older_than_s)
    rows = [r for r in session.db["jobs"].rows_where("state = 'PENDING' and external_id is null")
            if datetime.fromisoformat(r["submitted"]) < cutoff]
    # Every refresh calls this: compare names first (one directory listing), so only a directory without
    # a row costs a stat, however many jobs the session holds (a network filesystem makes stats dear).
    known = {Path(r[0]).name for r in session.db.execute("select dir from jobs")}
    root = session.path("jobs")
    names = sorted(set(os.listdir(root)) - known) if root.is_dir() else []
    stray = [d for d in (root / n for n in names)
             if d.is_dir() and not (d / EVENTS).exists()
             and datetime.fromtimestamp(d.stat().st_mtime, timezone.utc) < cutoff]
    return rows, stray


def started_id(session: Session, job: dict) -> str | None:
    """The executor id a job's own `started` event names: its PID (local) or SLURM_JOB_ID (Slurm)."""
    events, _ = read_events(job_dir(session, job))
    for ev in events:
        if ev.get("type") == "started":
            if job["executor"] == "local" and ev.get("pid"):
                return str(ev["pid"])
            if job["executor"].startswith("slurm") and ev.get("slurm_job_id"):
                return str(ev["slurm_job_id"])
    return None


def get(session: Session, job_id: str) -> dict:
    row = next(session.db["jobs"].rows_where("id = ?", [job_id]), None)
    if row is None:
        raise FibError(f"job {job_id!r} not in this session; see `fibtui status`")
    return row


def active(session: Session) -> list[dict]:
    return list(session.db["jobs"].rows_where("state in ('PENDING', 'RUNNING')", order_by="submitted"))


def latest(session: Session, round_n: int, kind: str) -> dict | None:
    return next(session.db["jobs"].rows_where("round = ? and kind = ?", [round_n, kind],
                                              order_by="rowid desc", limit=1), None)


def spec(session: Session, job: dict) -> dict | None:
    """The job's spec.json (None when its directory is gone or the file unreadable)."""
    try:
        return read_json(job_dir(session, job) / SPEC)
    except (OSError, ValueError):
        return None


def resume_check(session: Session, job: dict) -> tuple[int | None, str | None]:
    """(iteration a new attempt can resume from, None) or (None, why not: one line that says what to do).

    Folds events the job wrote after it was settled first (a cancelled training
    writes its last checkpoint on its way out, after `cancel` recorded it)."""
    job_id = job["id"]
    if job["kind"] != "train":
        return None, f"job {job_id} is a {job['kind']} job; only a training can be resumed"
    if job["state"] in ACTIVE:
        return None, f"job {job_id} is still {job['state']}; cancel it first, or let it finish"
    if job["state"] == "COMPLETED":
        return None, (f"job {job_id} completed all its iterations; nothing to resume "
                      "(train again to fine-tune from its model)")
    later = next(session.db["jobs"].rows_where("resumes = ?", [job_id], order_by="rowid", limit=1), None)
    if later is not None:
        return None, f"job {job_id} was already resumed by {later['id']}; resume that one instead"
    events = job_dir(session, job) / EVENTS
    try:
        if events.stat().st_size > (job["events_offset"] or 0):
            job = ingest(session, job)
    except (FileNotFoundError, NotADirectoryError):
        pass
    row = session.db.execute("select max(iteration) from checkpoints where job = ? and (path = ? or path like ?)",
                             [job_id, CHECKPOINT, f"%/{CHECKPOINT}"]).fetchone()
    if row is None or row[0] is None:
        every = (spec(session, job) or {}).get("checkpoint_every", "?")
        return None, (f"job {job_id} ({job['state']}) stopped before its first checkpoint "
                      f"(every {every} iterations); train again instead")
    return int(row[0]), None


def resumable(session: Session, job: dict) -> int | None:
    """The iteration a stopped training can be resumed from, or None.

    A train job that ended before its last iteration (a terminal state other than
    COMPLETED), has a full checkpoint (checkpoint.pt in the checkpoints table) and
    that no later attempt resumes yet."""
    return resume_check(session, job)[0]


def lineage(session: Session, job_id: str) -> list[str]:
    """The attempts of one training, oldest first: back along `resumes`, then forward to the last attempt."""
    chain, seen = [], set()
    current: str | None = job_id
    while current and current not in seen:  # back to the first attempt
        seen.add(current)
        chain.append(current)
        row = session.db.execute("select resumes from jobs where id = ?", [current]).fetchone()
        current = row[0] if row else None
    chain.reverse()
    current = job_id
    while True:  # forward: the attempt that resumes this one (one by construction; the first if several)
        row = session.db.execute("select id from jobs where resumes = ? order by rowid limit 1", [current]).fetchone()
        if row is None or row[0] in seen:
            return chain
        current = row[0]
        seen.add(current)
        chain.append(current)


def ingest(session: Session, job: dict) -> dict:
    """Fold new events into the job row, metrics and checkpoints; return the updated row.

    A job run as an array reports progress through its tasks' ledgers: blocks done over all
    tasks / (blocks in the volume × passes over them). It never goes back: the measure's final
    step removes its ledgers once it has used them."""
    with session.write() as db:
        job = dict(db["jobs"].get(job["id"]))  # the offset as of now, under the write lock
        d = job_dir(session, job)
        events, offset = read_events(d, job["events_offset"] or 0)
        upd: dict = {}
        info = array_info(d) if job["kind"] in ARRAY_KINDS else None
        if info and job["state"] in ACTIVE:
            done, total = blocks_done(d), max(1, int(info.get("blocks") or 1) * int(info.get("passes") or 1))
            prog = min(1.0, done / total)
            if prog > (job["progress"] or 0.0):
                upd = {"progress": prog, "message": f"{done}/{total} blocks, {info.get('tasks')} array tasks"}
        if not events:
            if upd:
                db["jobs"].update(job["id"], upd)
            return {**job, **upd}
        fold, metrics, checkpoints = _fold(job, events)
        upd = {**fold, **upd}
        upd["events_offset"] = offset
        db["jobs"].update(job["id"], upd)
        db["metrics"].insert_all({"job": job["id"], "round": job["round"], **m} for m in metrics)
        db["checkpoints"].insert_all(checkpoints)
    return {**job, **upd}


def _fold(job: dict, events: list[dict]) -> tuple[dict, list[dict], list[dict]]:
    upd: dict = {}
    metrics, checkpoints = [], []
    for ev in events:
        t = ev.get("type")
        stamp = ev.get("t")
        if t == "started":
            upd.setdefault("started", now())
            if job["state"] == "PENDING":
                upd["state"] = "RUNNING"
        elif t == "heartbeat":
            upd["heartbeat"] = now()
        elif t == "progress":
            total = ev.get("total") or 1
            upd["progress"] = min(1.0, ev.get("step", 0) / total)
            if "loss" in ev:
                upd["message"] = f"it {ev['step']}/{total} loss {ev['loss']:.4f}"
                metrics.append({"name": "loss", "value": ev["loss"], "step": ev["step"], "time": stamp})
                if "lr" in ev:
                    metrics.append({"name": "lr", "value": ev["lr"], "step": ev["step"], "time": stamp})
            else:
                upd["message"] = f"{ev.get('step')}/{total}"
        elif t == "metric":
            metrics.append({"name": ev["name"], "value": ev["value"], "step": ev.get("step", 0), "time": stamp})
        elif t == "checkpoint":
            checkpoints.append({"job": job["id"], "round": job["round"], "path": str(Path(job["dir"]) / ev["path"]),
                                "iteration": ev.get("step"), "sha256": None, "created": now()})
        elif t == "interrupted":
            upd["message"] = f"interrupted by {ev.get('signal')} at it {ev.get('step')}; checkpoint saved"
    return upd, metrics, checkpoints


def record_usage(session: Session, job: dict, elapsed_s: float | None, gpus: int | None,
                 gpu_hours: float | None = None) -> dict:
    """Store what the executor reports: elapsed seconds and GPUs of the current run, GPU-hours = GPUs × elapsed.

    Slurm restarts a requeued job's clock at 0: when the elapsed time goes down, the
    run before is banked in elapsed_prev_s / gpu_hours_prev and the totals add up."""
    if elapsed_s is None and gpus is None:
        return job
    if gpu_hours is None and elapsed_s is not None and gpus is not None:
        gpu_hours = gpus * elapsed_s / 3600.0
    prev_e, prev_g = job.get("elapsed_prev_s") or 0.0, job.get("gpu_hours_prev") or 0.0
    cur_e = (job.get("elapsed_s") or 0.0) - prev_e
    cur_g = (job.get("gpu_hours") or 0.0) - prev_g
    upd: dict = {}
    if elapsed_s is not None and elapsed_s + 1.0 < cur_e:  # a new run started (requeue): bank the last one
        prev_e, prev_g = prev_e + cur_e, prev_g + cur_g
        upd.update(elapsed_prev_s=prev_e, gpu_hours_prev=prev_g)
    if elapsed_s is not None:
        upd["elapsed_s"] = prev_e + elapsed_s
    if gpus is not None:
        upd["gpus"] = gpus
    if gpu_hours is not None:
        upd["gpu_hours"] = prev_g + gpu_hours
    if all(job.get(k) == v for k, v in upd.items()):
        return job
    session.db["jobs"].update(job["id"], upd)
    return {**job, **upd}


def finish(session: Session, job: dict, state: str, reason: str | None = None) -> dict:
    upd = {"state": state, "reason": reason, "ended": now()}
    if state == "COMPLETED":
        upd["progress"] = 1.0
    session.db["jobs"].update(job["id"], upd)
    return {**job, **upd}


def result(session: Session, job: dict) -> dict | None:
    return read_result(job_dir(session, job))


def metrics(session: Session, job_id: str, name: str | None = None) -> list[dict]:
    where, args = "job = ?", [job_id]
    if name:
        where, args = where + " and name = ?", args + [name]
    return list(session.db["metrics"].rows_where(where, args, order_by="step, id"))
