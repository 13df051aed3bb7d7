"""The automatic intervention log: one structured row per curator action.

Every round action (new round, crop added, held-out drawn or labelled, job
submitted, cancelled, resumed...) records itself here as part of doing it, so
the log is complete by construction, not by discipline. Free-text notes
(`journal.add_note`) stay beside it; a reason can be attached to any entry
afterwards. Both are what `fibtui note list` and the session screen show.
"""

from __future__ import annotations

import json
import os

from sessions.errors import FibError
from sessions.timeutil import now
from sessions.workspace import Session


def current_user() -> str:
    """Who is acting: the login name, as the cluster knows it."""
    return os.environ.get("USER") or os.environ.get("LOGNAME") or "curator"


def record(session: Session, action: str, *, subject: str | None = None, subject_id=None, round_n: int | None = None,
           params: dict | None = None, author: str | None = None, via: str = "cli") -> dict:
    """Append an entry: `action` (e.g. "job submitted"), on `subject` `subject_id` (e.g. "job", "r2-train-1")."""
    row = {"time": now(), "author": author or current_user(), "action": action, "subject": subject,
           "subject_id": None if subject_id is None else str(subject_id), "round": round_n,
           "params": json.dumps(params, sort_keys=True, default=str) if params else None, "reason": None,
           "via": via}
    row["id"] = session.db["interventions"].insert(row).last_pk
    return decode(row)


def attach_reason(session: Session, entry_id: int, reason: str) -> dict:
    """Say afterwards why an automatic entry was done (replaces an earlier reason)."""
    if not reason or not reason.strip():
        raise FibError("the reason is empty; say why it was done")
    if not session.db["interventions"].count_where("id = ?", [entry_id]):
        raise FibError(f"intervention {entry_id} does not exist; see `fibtui note list`")
    session.db["interventions"].update(entry_id, {"reason": reason.strip()})
    return decode(session.db["interventions"].get(entry_id))


def decode(row: dict) -> dict:
    return {**row, "params": json.loads(row["params"]) if row.get("params") else {}}


def entries(session: Session, limit: int | None = None) -> list[dict]:
    """The newest `limit` entries, oldest first."""
    return [decode(r) for r in session.db["interventions"].rows_where(order_by="id desc", limit=limit)][::-1]


def summary(entry: dict) -> str:
    """One line: the action, its subject and its parameters."""
    subject = f" {entry['subject']} {entry['subject_id']}" if entry.get("subject_id") else ""
    params = ", ".join(f"{k}={v}" for k, v in entry["params"].items() if v not in (None, "", []))
    return f"{entry['action']}{subject}" + (f" ({params})" if params else "")


def log(session: Session, limit: int | None = None) -> list[dict]:
    """Automatic entries and free-text notes on one list, oldest first: {type, id, time, author, text, reason, round}."""
    autos = [{"type": "auto", "id": e["id"], "time": e["time"], "author": e["author"], "text": summary(e),
              "action": e["action"], "subject": e["subject"], "subject_id": e["subject_id"], "params": e["params"],
              "reason": e["reason"], "round": e["round"], "via": e["via"]} for e in entries(session, limit)]
    notes = [{"type": "note", "id": n["id"], "time": n["time"], "author": n["author"], "text": n["action"],
              "reason": n["reason"], "round": n["round"]}
             for n in session.db["notes"].rows_where(order_by="id desc", limit=limit)]
    both = sorted(autos + notes, key=lambda r: (r["time"], r["type"] == "note", r["id"]))
    return both[-limit:] if limit else both
