"""One JSON-able picture of a session: what `status --json`, the demo and the TUI show."""

from __future__ import annotations

import json

from sessions import journal
from sessions.rounds import start_of
from sessions.workspace import Session


def latest_metrics(session: Session, job_id: str) -> dict:
    rows = session.db.execute(
        "select name, value from metrics where job = ? and id in (select max(id) from metrics where job = ? group by name)",
        [job_id, job_id]).fetchall()
    return {name: value for name, value in rows}


def summarize(session: Session) -> dict:
    db = session.db
    rounds = []
    for r in db["rounds"].rows_where(order_by="n"):
        jobs = list(db["jobs"].rows_where("round = ?", [r["n"]], order_by="submitted, rowid"))
        ev = next((j for j in reversed(jobs) if j["kind"] == "evaluate" and j["state"] == "COMPLETED"), None)
        rounds.append({
            "n": r["n"], "target": r["target"], "parent": r["parent"],
            "started_from": start_of(next((j for j in reversed(jobs) if j["kind"] == "train"), None)),
            "crops": db["crops"].count_where("round = ?", [r["n"]]),
            "jobs": [{k: j[k] for k in ("id", "kind", "executor", "state", "reason", "progress", "message",
                                         "submitted", "started", "ended", "resumes", "init_from")} for j in jobs],
            "metrics": latest_metrics(session, ev["id"]) if ev else {},
        })
    return {
        "session": str(session.root),
        "volumes": [{**{k: v[k] for k in ("name", "shape", "voxel_size", "levels", "source", "source_format",
                                          "source_dtype", "source_checksum")},
                     "conversion": json.loads(v["conversion"]) if v["conversion"] else None}
                    for v in db["volumes"].rows],
        "rounds": rounds,
        "holdout": {"drawn": db["holdout"].count, "labelled": db["holdout"].count_where("labels_path is not null")},
        "messages": journal.messages(session, limit=20),
        "notes": journal.notes(session, limit=20),
    }
