"""What the session screen shows, read from SQLite in one go by a worker thread.

A Snapshot is plain data, so the UI thread never touches SQLite (its
connections are bound to the thread that opened them) and one refresh is one
consistent picture of the session.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from remote.dispatch import Dispatcher
from sessions import interventions, jobs, journal, measure, metrics
from sessions.jobfiles import STDERR, tail
from sessions.rounds import start_of
from sessions.summary import latest_metrics
from sessions.workspace import Session, open_session

CURVE_POINTS = 200  # a plot is at most ~200 cells wide
LOG_LINES = 200
LISTED = 100        # most recent messages/notes/jobs shown


@dataclass(frozen=True)
class Snapshot:
    rounds: list[dict]                 # n, target, started_from, crops, and the latest train/predict/evaluate rows
    jobs: list[dict]                   # newest first; a stopped training carries `resumable` (its iteration)
    evaluation: dict | None            # {"job", "round", "metrics": {name: value}} of the latest evaluation
    curves: dict                       # {"loss": (steps, values), "lr": ...} of the training the loss plot shows
    curve_title: str                   # which training (and attempts) that is
    scores: list[dict]                 # held-out scores of every evaluated round (sessions.metrics.round_scores)
    warnings: list[str]                # rounds scoring lower than the one before on the same held-out regions
    messages: list[dict]
    unanswered: int                    # questions in the thread with no answer yet
    log: list[dict]                    # intervention log: automatic entries and notes, oldest first
    latest_prediction: str | None      # the latest completed prediction job (the preview follows it)
    log_job: str | None = None         # job whose stderr tail is in `log_text`
    log_text: str = ""
    warning: str | None = None         # e.g. the executor could not be queried; tables may be stale
    answer: dict | None = None         # the latest measurement (sessions.measure.latest): pores per µm² per nucleus


# val_iou_best: the held-apart slabs' IoU at their best threshold, the score that chooses the model
TRAINING_CURVES = ("loss", "lr", "val_iou_best")


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
        if job["kind"] == "train" and job["state"] not in jobs.ACTIVE and job["state"] != "COMPLETED":
            job["resumable"] = jobs.resumable(session, job)
    crops = dict(db.execute("select round, count(*) from crops group by round").fetchall())
    round_rows = [{**r, "crops": crops.get(r["n"], 0), "started_from": start_of(latest.get((r["n"], "train"))),
               **{k: latest.get((r["n"], k)) for k in ("train", "predict", "evaluate")}}
              for r in db["rounds"].rows_where(order_by="n desc")]
    evaluation = None
    ev = next(db["jobs"].rows_where("kind = 'evaluate' and state = 'COMPLETED'", order_by="rowid desc", limit=1), None)
    if ev:
        evaluation = {"job": ev["id"], "round": ev["round"], "metrics": latest_metrics(session, ev["id"])}
    selected = next((j for j in job_rows if j["id"] == selected_job), None)
    train = selected if selected and selected["kind"] == "train" else next(
        db["jobs"].rows_where("kind = 'train'", order_by="rowid desc", limit=1), None)
    attempts = jobs.lineage(session, train["id"]) if train else []
    scores = metrics.round_scores(session)
    pred = next(db["jobs"].rows_where("kind = 'predict' and state = 'COMPLETED'", order_by="rowid desc", limit=1),
                None)
    log_job = selected or (job_rows[0] if job_rows else None)
    if log_job is None:
        log = ""
    elif remote_log is not None and log_job["id"] == selected_job:
        log = remote_log
    else:
        log = log_tail(session.root, log_job)
    return Snapshot(
        rounds=round_rows, jobs=job_rows, evaluation=evaluation,
        curves=metrics.curve(session, attempts, names=TRAINING_CURVES, points=CURVE_POINTS) if attempts else {},
        curve_title=" → ".join(attempts) if attempts else "",
        scores=scores, warnings=metrics.regressions(scores),
        messages=journal.messages(session, limit=LISTED), unanswered=journal.unanswered_count(session),
        log=interventions.log(session, limit=LISTED), latest_prediction=pred["id"] if pred else None,
        log_job=log_job["id"] if log_job else None, log_text=log, warning=warning,
        answer=measure.latest(session),
    )


def log_tail(root: Path, job: dict) -> str:
    return tail(Path(root) / job["dir"] / STDERR, LOG_LINES)


def is_active(job: dict) -> bool:
    return job["state"] in jobs.ACTIVE
