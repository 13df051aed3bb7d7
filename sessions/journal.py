"""The curator–scientist message thread and the curator's intervention log."""

from __future__ import annotations

from sessions.errors import FibError
from sessions.timeutil import now
from sessions.workspace import Session


def _check_links(session: Session, round_n: int | None, crop: int | None) -> None:
    if round_n is not None and not session.db["rounds"].count_where("n = ?", [round_n]):
        raise FibError(f"--round {round_n}: no such round in this session")
    if crop is not None and not session.db["crops"].count_where("id = ?", [crop]):
        raise FibError(f"--crop {crop}: no such crop in this session")


def _check_text(text: str, what: str) -> str:
    if not text or not text.strip():
        raise FibError(f"{what} is empty; say something")
    return text


def add_message(session: Session, author: str, text: str, round_n: int | None = None, crop: int | None = None) -> dict:
    _check_text(text, "message text")
    _check_text(author, "--author")
    _check_links(session, round_n, crop)
    row = {"time": now(), "author": author, "text": text, "round": round_n, "crop": crop}
    row["id"] = session.db["messages"].insert(row).last_pk
    return row


def add_note(session: Session, action: str, reason: str | None, author: str, round_n: int | None = None) -> dict:
    _check_text(action, "note action")
    _check_links(session, round_n, None)
    row = {"time": now(), "author": author, "action": action, "reason": reason, "round": round_n}
    row["id"] = session.db["notes"].insert(row).last_pk
    return row


def messages(session: Session, limit: int | None = None) -> list[dict]:
    return list(session.db["messages"].rows_where(order_by="id desc", limit=limit))[::-1]


def notes(session: Session, limit: int | None = None) -> list[dict]:
    return list(session.db["notes"].rows_where(order_by="id desc", limit=limit))[::-1]
