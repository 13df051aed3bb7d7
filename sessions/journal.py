"""The curator–scientist message thread and the curator's free-text notes.

A message has a kind (KINDS), may reply to an earlier message, and may link
to a round, a crop, a job, a held-out region and a viewer position
(`at` = {volume, axis, z, y, x, zoom}: level-0 voxels; zoom is screen pixels
per voxel, as the viewer's status line shows it). Everything is checked
before anything is written, so a bad link never leaves half a message.
"""

from __future__ import annotations

import json
import math

from sessions.errors import FibError
from sessions.timeutil import now
from sessions.workspace import Session

KINDS = ("question", "answer", "result", "decision", "deadlock", "plain")
ANSWERING = ("answer", "decision")   # a question is open until one of these replies to it
VIEW_AXES = ("xy", "xz", "yz")
AT_KEYS = ("volume", "axis", "z", "y", "x", "zoom")


def _check_links(session: Session, round_n: int | None, crop: int | None) -> None:
    if round_n is not None and not session.db["rounds"].count_where("n = ?", [round_n]):
        raise FibError(f"--round {round_n}: no such round in this session")
    if crop is not None and not session.db["crops"].count_where("id = ?", [crop]):
        raise FibError(f"--crop {crop}: no such crop in this session")


def _check_text(text: str, what: str) -> str:
    if not text or not text.strip():
        raise FibError(f"{what} is empty; say something")
    return text


def check_at(session: Session, at: dict) -> dict:
    """A viewer position, normalised: {volume, axis, z, y, x, zoom}; axis defaults to xy, zoom to 1."""
    from sessions.volumes.catalog import get_volume  # volumes pull in zarr/numpy: only when a link needs them

    if not isinstance(at, dict):
        raise FibError("--at: expected a position {volume, axis, z, y, x, zoom}")
    unknown = sorted(set(at) - set(AT_KEYS))
    if unknown:
        raise FibError(f"--at: unknown field(s) {', '.join(unknown)}; use {', '.join(AT_KEYS)}")
    if not at.get("volume"):
        raise FibError("--at needs a volume: pass --volume NAME")
    shape = get_volume(session, at["volume"])["shape"]
    axis = at.get("axis") or "xy"
    if axis not in VIEW_AXES:
        raise FibError(f"--axis {axis!r}: use one of {', '.join(VIEW_AXES)}")
    pos = []
    for name, size in zip("zyx", shape):
        v = at.get(name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v):
            raise FibError(f"--at {name}={v!r}: expected an integer voxel position Z,Y,X")
        if not 0 <= v < size:
            raise FibError(f"--at {name}={int(v)}: outside volume {at['volume']!r} of shape "
                           f"{','.join(map(str, shape))}; give 0..{size - 1}")
        pos.append(int(v))
    zoom = at.get("zoom", 1.0)
    try:
        zoom = float(zoom)
    except (TypeError, ValueError):
        raise FibError(f"--zoom {zoom!r}: expected a number > 0 (screen pixels per voxel)") from None
    if not math.isfinite(zoom) or zoom <= 0:
        raise FibError(f"--zoom {zoom}: must be a finite number > 0 (screen pixels per voxel)")
    return {"volume": at["volume"], "axis": axis, "z": pos[0], "y": pos[1], "x": pos[2], "zoom": zoom}


def add_message(session: Session, author: str, text: str, *, kind: str = "plain", reply_to: int | None = None,
                round_n: int | None = None, crop: int | None = None, job: str | None = None,
                region: int | None = None, at: dict | None = None) -> dict:
    """Add a message to the thread; every field is checked first, so a bad one writes nothing."""
    _check_text(text, "message text")
    _check_text(author, "--author")
    if kind not in KINDS:
        raise FibError(f"--kind {kind!r}: use one of {', '.join(KINDS)}")
    if reply_to is not None and not session.db["messages"].count_where("id = ?", [reply_to]):
        raise FibError(f"--reply-to {reply_to}: no such message; see `fibtui msg list`")
    if kind == "answer" and reply_to is None:
        raise FibError("--kind answer needs --reply-to ID (the question it answers); "
                       "see `fibtui msg list --unanswered`")
    _check_links(session, round_n, crop)
    if job is not None and not session.db["jobs"].count_where("id = ?", [job]):
        raise FibError(f"--job {job}: no such job in this session; see `fibtui jobs`")
    if region is not None and not session.db["holdout"].count_where("id = ?", [region]):
        raise FibError(f"--region {region}: no such held-out region; see `fibtui holdout list`")
    at = check_at(session, at) if at is not None else None
    row = {"time": now(), "author": author, "text": text, "round": round_n, "crop": crop, "kind": kind,
           "reply_to": reply_to, "job": job, "region": region,
           "at": json.dumps(at, sort_keys=True) if at else None}
    row["id"] = session.db["messages"].insert(row).last_pk
    return decode(row)


def decode(row: dict) -> dict:
    """A message row with its viewer position as a dict (None when it has none)."""
    at = row.get("at")
    return {**row, "at": json.loads(at) if isinstance(at, str) and at else None}


def add_note(session: Session, action: str, reason: str | None, author: str, round_n: int | None = None) -> dict:
    _check_text(action, "note action")
    _check_links(session, round_n, None)
    row = {"time": now(), "author": author, "action": action, "reason": reason, "round": round_n}
    row["id"] = session.db["notes"].insert(row).last_pk
    return row


def messages(session: Session, limit: int | None = None) -> list[dict]:
    """The newest `limit` messages (all by default), oldest first."""
    return [decode(r) for r in session.db["messages"].rows_where(order_by="id desc", limit=limit)][::-1]


_OPEN = ("from messages q where q.kind = 'question' and not exists "
         "(select 1 from messages r where r.reply_to = q.id and r.kind in ('answer', 'decision'))")


def unanswered(session: Session) -> list[dict]:
    """Questions no answer or decision has replied to yet, oldest first (one query, reply_to is indexed)."""
    cur = session.db.execute(f"select q.* {_OPEN} order by q.id")
    cols = [c[0] for c in cur.description]
    return [decode(dict(zip(cols, r))) for r in cur.fetchall()]


def unanswered_count(session: Session) -> int:
    return session.db.execute(f"select count(*) {_OPEN}").fetchone()[0]


def notes(session: Session, limit: int | None = None) -> list[dict]:
    return list(session.db["notes"].rows_where(order_by="id desc", limit=limit))[::-1]
