"""What the session screen shows, read from SQLite in one go by a worker thread.

A Snapshot is plain data, so the UI thread never touches SQLite (its
connections are bound to the thread that opened them) and one refresh is one
consistent picture of the session.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from remote.dispatch import Dispatcher
from sessions import jobs, journal
from sessions.jobfiles import STDERR, tail
from sessions.summary import latest_metrics
from sessions.workspace import Session, open_session

LOSS_POINTS = 120   # the sparkline is at most a few dozen cells wide
LOG_LINES = 200
LISTED = 100        # most recent messages/notes/jobs shown


@dataclass(frozen=True)
class Snapshot:
    rounds: list[dict]                 # n, target, crops, and the latest train/predict/evaluate job rows
    jobs: list[dict]                   # newest first
    evaluation: dict | None            # {"job", "round", "metrics": {name: value}} of the latest evaluation
    loss: list[float]                  # binned loss curve of the latest training job
    loss_job: str | None
    messages: list[dict]
    notes: list[dict]
    log_job: str | None = None         # job whose stderr tail is in `log`
    log: str = ""
    warning: str | None = None         # e.g. the executor could not be queried; tables may be stale


def refresh(root: Path, selected_job: str | None, executors: dict | None = None, poll: bool = True) -> Snapshot:
    """Poll the executors (when `poll`), ingest job events, then read everything the screen shows.

    `executors` is the screen's long-lived executor cache, so an SSH connection is opened once,
    not on every refresh.
    """
    session = open_session(root)
    try:
        warning, remote_log = None, None
        try:
            if poll:
                d = Dispatcher(session, executors=executors)
                d.refresh()
                if d.errors:
                    warning = "; ".join(f"{k}: {v}" for k, v in d.errors.items())
                if selected_job:  # a remote job's log lives over there: fetch its tail on the poll
                    job = jobs.get(session, selected_job)
                    if job["executor"] != "local" and job["external_id"]:
                        remote_log = d.log_tail(selected_job, LOG_LINES)
        except Exception as e:  # a scheduler hiccup must not blank the screen
            warning = f"job status not refreshed: {e}"
        return read(session, selected_job, warning, remote_log)
    finally:
        session.close()


def read(session: Session, selected_job: str | None, warning: str | None = None,
         remote_log: str | None = None) -> Snapshot:
    db = session.db
    job_rows = list(db["jobs"].rows_where(order_by="rowid desc", limit=LISTED))
    latest: dict[tuple[int, str], dict] = {}
    for job in reversed(job_rows):
        latest[(job["round"], job["kind"])] = job
    crops = dict(db.execute("select round, count(*) from crops group by round").fetchall())
    rounds = [{**r, "crops": crops.get(r["n"], 0),
               **{k: latest.get((r["n"], k)) for k in ("train", "predict", "evaluate")}}
              for r in db["rounds"].rows_where(order_by="n desc")]
    evaluation = None
    ev = next(db["jobs"].rows_where("kind = 'evaluate' and state = 'COMPLETED'", order_by="rowid desc", limit=1), None)
    if ev:
        evaluation = {"job": ev["id"], "round": ev["round"], "metrics": latest_metrics(session, ev["id"])}
    train = next(db["jobs"].rows_where("kind = 'train'", order_by="rowid desc", limit=1), None)
    log_job = next((j for j in job_rows if j["id"] == selected_job), job_rows[0] if job_rows else None)
    if log_job is None:
        log = ""
    elif remote_log is not None and log_job["id"] == selected_job:
        log = remote_log
    else:
        log = log_tail(session.root, log_job)
    return Snapshot(
        rounds=rounds, jobs=job_rows, evaluation=evaluation,
        loss=loss_curve(session, train["id"]) if train else [], loss_job=train["id"] if train else None,
        messages=journal.messages(session, limit=LISTED), notes=journal.notes(session, limit=LISTED),
        log_job=log_job["id"] if log_job else None, log=log,
        warning=warning,
    )


def loss_curve(session: Session, job_id: str) -> list[float]:
    """Mean loss in at most LOSS_POINTS bins of steps, binned in SQL so long runs stay cheap."""
    n, last = session.db.execute("select count(*), max(step) from metrics where job = ? and name = 'loss'",
                                 [job_id]).fetchone()
    if not n:
        return []
    width = max(1, -(-(last + 1) // LOSS_POINTS))
    rows = session.db.execute("select avg(value) from metrics where job = ? and name = 'loss' "
                              "group by step / ? order by step / ?", [job_id, width, width]).fetchall()
    return [r[0] for r in rows]


def log_tail(root: Path, job: dict) -> str:
    return tail(Path(root) / job["dir"] / STDERR, LOG_LINES)


def is_active(job: dict) -> bool:
    return job["state"] in jobs.ACTIVE
