"""The curator-scientist thread, the intervention log and the session's timeline."""

from __future__ import annotations

import csv
import json
import os
import sys

import click
from rich.markup import escape
from rich.text import Text

from fibtui.cli import cli
from fibtui.cli.common import json_option, open_dir, session_option
from fibtui.output import console, emit_json, table
from sessions.errors import FibError
from sessions.journal import KINDS

KIND_STYLE = {"question": "bold cyan", "answer": "green", "decision": "bold green", "result": "magenta",
              "deadlock": "bold red", "plain": "dim"}


def _author_option(f):
    return click.option("--author", default=lambda: os.environ.get("USER", "curator"), show_default="$USER",
                        help="Who is writing.")(f)


@cli.group()
def msg() -> None:
    """The curator–scientist message thread."""


@msg.command("add")
@session_option
@click.argument("text")
@click.option("--kind", default="plain", show_default=True, metavar="|".join(KINDS),
              help="What the message is: a question, the answer to one, a result, a decision, a deadlock, plain.")
@click.option("--reply-to", type=int, metavar="ID", help="The message this one replies to.")
@click.option("--round", "round_n", type=int, help="Link the message to a round.")
@click.option("--crop", type=int, help="Link the message to a crop.")
@click.option("--job", metavar="J", help="Link the message to a job (e.g. r2-evaluate-1).")
@click.option("--region", type=int, metavar="R", help="Link the message to a held-out region.")
@click.option("--at", "at_pos", metavar="Z,Y,X", help="Link to a viewer position (level-0 voxels).")
@click.option("--axis", type=click.Choice(["xy", "xz", "yz"]), help="Slicing plane of --at (default xy).")
@click.option("--zoom", type=float, help="Zoom of --at: screen pixels per voxel (default 1).")
@click.option("--volume", metavar="V", help="Volume of --at (default: the session's only volume).")
@_author_option
@json_option
def msg_add(session_dir, text, kind, reply_to, round_n, crop, job, region, at_pos, axis, zoom, volume, author,
            as_json) -> None:
    """Add a message to the thread, optionally replying to one and linked to what it is about."""
    from sessions import journal
    from sessions.geometry import parse_triple

    s = open_dir(session_dir)
    at = None
    if at_pos is not None:
        z, y, x = parse_triple(at_pos, "--at")
        if volume is None:
            from sessions.volumes.catalog import default_volume

            volume = default_volume(s)
        at = {"volume": volume, "axis": axis or "xy", "z": z, "y": y, "x": x, "zoom": 1.0 if zoom is None else zoom}
    elif axis or zoom is not None or volume:
        raise FibError("--axis, --zoom and --volume describe a position: add --at Z,Y,X")
    row = journal.add_message(s, author, text, kind=kind, reply_to=reply_to, round_n=round_n, crop=crop, job=job,
                              region=region, at=at)
    emit_json(row) if as_json else console.print(f"message {row['id']} added ({row['kind']})")


def links_text(m: dict) -> str:
    at = m.get("at")
    parts = [f"round {m['round']}" if m.get("round") is not None else "",
             f"crop {m['crop']}" if m.get("crop") is not None else "",
             f"job {m['job']}" if m.get("job") else "",
             f"region {m['region']}" if m.get("region") is not None else "",
             f"at {at['volume']} {at['axis']} z={at['z']} y={at['y']} x={at['x']} ×{at['zoom']:g}" if at else ""]
    return ", ".join(p for p in parts if p)


@msg.command("list")
@session_option
@click.option("--unanswered", is_flag=True, help="Only questions no answer or decision has replied to.")
@json_option
def msg_list(session_dir, unanswered, as_json) -> None:
    """Show the thread: kind, who replied to whom, and what each message links to."""
    from sessions import journal

    s = open_dir(session_dir)
    rows = journal.unanswered(s) if unanswered else journal.messages(s)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        console.print("no open questions" if unanswered else "no messages yet")
        return
    by_id = {r["id"]: r for r in rows}
    for r in rows:
        parent = by_id.get(r["reply_to"])
        reply = (f"  ↳ #{r['reply_to']}" + (f" ({parent['author']})" if parent else "") + " ") if r["reply_to"] else ""
        link = links_text(r)
        console.print(Text.assemble(reply, (f"#{r['id']} {r['time']} ", "dim"), (r["kind"], KIND_STYLE[r["kind"]]),
                                    " ", (r["author"], "bold"), f" ({link})" if link else "", f": {r['text']}"),
                      soft_wrap=True)


@cli.group()
def note() -> None:
    """The intervention log: automatic entries for every action, and free-text notes."""


@note.command("add")
@session_option
@click.argument("action")
@click.option("--why", "reason", help="Why it was done.")
@_author_option
@click.option("--round", "round_n", type=int, help="Link the note to a round.")
@json_option
def note_add(session_dir, action, reason, author, round_n, as_json) -> None:
    """Record a free-text note: what was done and why."""
    from sessions import journal

    row = journal.add_note(open_dir(session_dir), action, reason, author, round_n)
    emit_json(row) if as_json else console.print(f"note {row['id']} added")


@note.command("list")
@session_option
@json_option
def note_list(session_dir, as_json) -> None:
    """Show the log: automatic entries ("auto #ID", reason attachable with `note why`) and notes ("note #ID")."""
    from sessions import interventions

    rows = [{**r, "action": r["text"]} if r["type"] == "note" else r for r in interventions.log(open_dir(session_dir))]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        console.print("the log is empty")
        return
    for r in rows:
        tag = (f"auto #{r['id']}", "cyan") if r["type"] == "auto" else (f"note #{r['id']}", "yellow")
        rnd = f" (round {r['round']})" if r.get("round") is not None else ""
        console.print(Text.assemble((f"{r['time']} ", "dim"), tag, " ", (r["author"], "bold"), f"{rnd}: {r['text']}",
                                    f" — {r['reason']}" if r["reason"] else ""), soft_wrap=True)


@note.command("why")
@session_option
@click.argument("entry", type=int)
@click.option("--why", "reason", required=True, help="Why it was done.")
@json_option
def note_why(session_dir, entry, reason, as_json) -> None:
    """Attach a reason to automatic entry ENTRY (its "auto #ID" in `fibtui note list`)."""
    from sessions import interventions

    row = interventions.attach_reason(open_dir(session_dir), entry, reason)
    emit_json(row) if as_json else console.print(f"auto #{row['id']}: {interventions.summary(row)} — {row['reason']}")


def _duration(s: float | None) -> str:
    if s is None:
        return "—"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.1f} {unit}"
    return f"{s:.0f} s"


def _utc(stamp: str) -> str:
    return stamp[:16].replace("T", " ")


def _kinds(r: dict) -> str:
    parts = [f"{n} {k}" for k, n in r["by_kind"].items() if n]
    return f"{r['messages']}" + (f": {', '.join(parts)}" if parts else "")


def _answers(r: dict) -> str:
    if not r["questions"]:
        return "no questions"
    return f"median {_duration(r['answer_median_s'])}, max {_duration(r['answer_max_s'])}; {r['unanswered']} open"


@cli.command("timeline")
@session_option
@json_option
@click.option("--csv", "as_csv", is_flag=True, help="The events as CSV, one row each, with a header row.")
@click.option("--window", "window_h", type=float, default=24.0, show_default=True, metavar="HOURS",
              help="How long after a result or deadlock a message counts as a reaction to it.")
def timeline_cmd(session_dir, as_json, as_csv, window_h) -> None:
    """Rounds, jobs, evaluations, messages and interventions on one time axis, with per-round counts
    (messages by kind, question-to-answer times, deadlocks, interventions, jobs) and the communication
    pattern of each round.

    A message belongs to the round it links to (--round, --job, --crop), else to its question's round,
    else to the latest round created before it. Patterns, first match wins: "silent" (no messages);
    "only at deadlocks" (every message is a deadlock, in a deadlock's reply chain, or within --window
    after one); "feedback around results" (more than half within --window after a completed
    evaluation or a result message); "constant contact" (3+ messages, in at least half of the round's
    --window-wide time bins); else "sporadic"."""
    from sessions import timeline

    if as_json and as_csv:
        raise FibError("--json and --csv: choose one")
    if not window_h > 0:
        raise FibError(f"--window {window_h}: must be > 0 hours")
    data = timeline.build(open_dir(session_dir), window_s=window_h * 3600)
    if as_json:
        emit_json(data)
        return
    if as_csv:
        w = csv.DictWriter(sys.stdout, fieldnames=timeline.EVENT_FIELDS, lineterminator="\n")
        w.writeheader()
        for e in data["events"]:
            w.writerow({**e, "at": json.dumps(e["at"], sort_keys=True) if e["at"] else None})
        return
    console.print(table("Timeline", ["time (UTC)", "round", "type", "by", "what"],
                        [[_utc(e["time"]), e["round"], e["type"], escape(e["author"] or ""), escape(e["what"])]
                         for e in data["events"]]))
    per_round = table("Per round", ["round", "messages", "answers", "actions", "pattern"],
                      [[r["round"] if r["round"] is not None else "before", _kinds(r), _answers(r),
                        f"{r['interventions'] + r['notes']} logged · {r['jobs']} jobs", r["pattern"]]
                       for r in data["rounds"]])
    per_round.columns[-1].no_wrap = True  # the pattern is the point: never cut it
    console.print(per_round)
    console.print("[dim]pattern: the rule is in `fibtui timeline --help`[/]")
