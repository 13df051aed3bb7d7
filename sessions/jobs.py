"""Job records in the session: create a job directory, fold its events into SQLite.

The session process is the single writer of SQLite: it reads each job's
`events.jsonl` from the last byte offset it ingested, so ingesting twice is
harmless and a restarted TUI picks up exactly where it left off.
"""

from __future__ import annotations

from pathlib import Path

from sessions.errors import FibError
from sessions.jobfiles import SPEC, atomic_write_json, read_events, read_result
from sessions.timeutil import now
from sessions.workspace import Session

ACTIVE = ("PENDING", "RUNNING")
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "OUT_OF_MEMORY")


def job_dir(session: Session, job: dict) -> Path:
    return session.path(job["dir"])


def create(session: Session, round_n: int, kind: str, spec: dict, executor: str) -> dict:
    n = session.db["jobs"].count_where("round = ? and kind = ?", [round_n, kind]) + 1
    job_id = f"r{round_n}-{kind}-{n}"
    d = session.path("jobs", job_id)
    d.mkdir(parents=True, exist_ok=False)
    atomic_write_json(d / SPEC, {**spec, "kind": kind, "job_id": job_id})
    row = {
        "id": job_id, "round": round_n, "kind": kind, "executor": executor, "external_id": None,
        "state": "PENDING", "reason": None, "dir": session.rel(d), "submitted": now(), "started": None,
        "ended": None, "progress": 0.0, "message": None, "events_offset": 0, "heartbeat": None,
    }
    session.db["jobs"].insert(row)
    return row


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


def ingest(session: Session, job: dict) -> dict:
    """Fold new events into the job row, metrics and checkpoints; return the updated row."""
    with session.write() as db:
        job = dict(db["jobs"].get(job["id"]))  # the offset as of now, under the write lock
        events, offset = read_events(job_dir(session, job), job["events_offset"] or 0)
        if not events:
            return job
        upd, metrics, checkpoints = _fold(job, events)
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
