"""The curator-scientist thread and the intervention log."""

from __future__ import annotations

import os

import click

from fibtui.cli import cli
from fibtui.cli.common import json_option, open_dir, session_option
from fibtui.output import console, emit_json


@cli.group()
def msg() -> None:
    """The curator–scientist message thread."""


@msg.command("add")
@session_option
@click.argument("text")
@click.option("--author", default=lambda: os.environ.get("USER", "curator"), show_default="$USER")
@click.option("--round", "round_n", type=int, help="Link the message to a round.")
@click.option("--crop", type=int, help="Link the message to a crop.")
@json_option
def msg_add(session_dir, text, author, round_n, crop, as_json) -> None:
    """Add a message to the thread."""
    from sessions import journal

    row = journal.add_message(open_dir(session_dir), author, text, round_n, crop)
    emit_json(row) if as_json else console.print(f"message {row['id']} added")


@msg.command("list")
@session_option
@json_option
def msg_list(session_dir, as_json) -> None:
    """Show the thread."""
    from sessions import journal

    rows = journal.messages(open_dir(session_dir))
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        link = " ".join(x for x in (f"round {r['round']}" if r["round"] else "", f"crop {r['crop']}" if r["crop"] else "") if x)
        console.print(f"[dim]{r['time']}[/] [bold]{r['author']}[/]{' (' + link + ')' if link else ''}: {r['text']}")


@cli.group()
def note() -> None:
    """The curator's intervention log: what was done and why."""


@note.command("add")
@session_option
@click.argument("action")
@click.option("--why", "reason", help="Why it was done.")
@click.option("--author", default=lambda: os.environ.get("USER", "curator"), show_default="$USER")
@click.option("--round", "round_n", type=int, help="Link the note to a round.")
@json_option
def note_add(session_dir, action, reason, author, round_n, as_json) -> None:
    """Record an intervention."""
    from sessions import journal

    row = journal.add_note(open_dir(session_dir), action, reason, author, round_n)
    emit_json(row) if as_json else console.print(f"note {row['id']} added")


@note.command("list")
@session_option
@json_option
def note_list(session_dir, as_json) -> None:
    """Show the intervention log."""
    from sessions import journal

    rows = journal.notes(open_dir(session_dir))
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        console.print(f"[dim]{r['time']}[/] [bold]{r['author']}[/]: {r['action']}"
                      + (f" — {r['reason']}" if r["reason"] else ""))
