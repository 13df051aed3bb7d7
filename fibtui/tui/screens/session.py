"""The session overview: rounds, jobs with live progress, evaluation, loss, journal, log.

A thread worker polls the executors and reads SQLite every couple of
seconds and hands back one Snapshot; the UI thread only paints it, so a slow
scheduler or file system never freezes the keyboard.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Sparkline, Static
from textual.worker import get_current_worker

from fibtui.tui import snapshot
from fibtui.tui.messages import ActionDone, LogTail, RefreshFailed, SnapshotReady
from fibtui.tui.screens.dialogs import ConfirmScreen, Field, FormScreen
from fibtui.tui.snapshot import Snapshot
from remote.dispatch import Backoff, Dispatcher
from sessions import journal
from sessions.workspace import open_session

STATE_STYLE = {"COMPLETED": "green", "RUNNING": "yellow", "PENDING": "cyan", "CANCELLED": "dim"}
SHORT_STATE = {"COMPLETED": "done", "RUNNING": "running", "PENDING": "queued", "CANCELLED": "cancelled"}
ROUND_COLUMNS = ("#", "target", "crops", "train", "pred", "eval")
JOB_COLUMNS = ("job", "state", "progress", "message", "reason", "GPU-h", "kind", "executor")


def author() -> str:
    return os.environ.get("USER") or os.environ.get("LOGNAME") or "curator"


def local_time(stamp: str | None) -> str:
    """Session times are UTC; curators read their own clock."""
    if not stamp:
        return ""
    return datetime.fromisoformat(stamp).astimezone().strftime("%m-%d %H:%M")


def state_text(state: str | None, short: bool = False) -> Text:
    if state is None:
        return Text("—", style="dim")
    label = SHORT_STATE.get(state, state) if short else state
    return Text(label, style=STATE_STYLE.get(state, "bold red"))


def progress_text(job: dict, width: int = 8) -> Text:
    if job["state"] == "PENDING" or job["progress"] is None:
        return Text("—", style="dim")
    p = max(0.0, min(1.0, job["progress"]))
    full = round(p * width)
    return Text.assemble(("█" * full, STATE_STYLE.get(job["state"], "red")), ("░" * (width - full), "dim"),
                         f" {p:4.0%}")


def round_cells(r: dict) -> list:
    return [str(r["n"]), r["target"] or "—", str(r["crops"]),
            *(state_text(r[k]["state"] if r[k] else None, short=True) for k in ("train", "predict", "evaluate"))]


def job_cells(j: dict) -> list:
    gpu_h = j.get("gpu_hours")
    return [j["id"], state_text(j["state"]), progress_text(j), j["message"] or "", Text(j["reason"] or "", style="red"),
            f"{gpu_h:.2f}" if gpu_h is not None else "", j["kind"], j["executor"]]


def evaluation_text(ev: dict | None) -> Text:
    if ev is None:
        return Text("no evaluation yet:\nfibtui round evaluate", style="dim")
    m = ev["metrics"]

    def num(name: str, fmt: str = ".3f") -> str:
        return format(m[name], fmt) if name in m else "—"

    lines = Text.assemble("IoU ", (num("iou"), "bold"), "  F1 ", (num("f1"), "bold"), "\n",
                          f"prec {num('precision')}  rec {num('recall')}\n",
                          f"objects {num('objects_pred_heldout', '.0f')} pred/"
                          f"{num('objects_true_heldout', '.0f')} true")
    if "volume_count" in m:
        lines.append(f" · {num('volume_count', '.0f')} in vol")
    return lines


def journal_text(rows: list[dict], head: str, body: str, sep: str) -> Text:
    """One line per entry, oldest first: time, `head` in bold, then `body`."""
    out = Text()
    for r in rows:
        out.append(f"{local_time(r['time'])} ", style="dim")
        out.append(r[head], style="bold")
        out.append(f"{sep}{r[body]}\n" if r[body] else "\n")
    out.rstrip()
    return out or Text("none yet", style="dim")


def sync_table(table: DataTable, rows: list[tuple[str, list]]) -> None:
    """Update cells in place when the rows are the same; otherwise rebuild, keeping the selected row."""
    keys = [k for k, _ in rows]
    current = [r.key.value for r in table.ordered_rows]
    if keys == current:
        for key, cells in rows:
            for column, value in zip(table.ordered_columns, cells):
                if table.get_cell(key, column.key) != value:
                    table.update_cell(key, column.key, value, update_width=True)
        return
    selected = current[table.cursor_row] if 0 <= table.cursor_row < len(current) else None
    table.clear()
    for key, cells in rows:
        table.add_row(*cells, key=key)
    if selected in keys:
        table.move_cursor(row=keys.index(selected), animate=False)


class ScrollText(VerticalScroll):
    """Scrollable text that follows new lines at the bottom unless the curator scrolled up."""

    def compose(self) -> ComposeResult:
        yield Static()

    def update(self, text: Text) -> None:
        follow = self.scroll_y >= self.max_scroll_y
        self.query_one(Static).update(text)
        if follow:
            self.call_after_refresh(self.scroll_end, animate=False)


class SessionScreen(Screen):
    BINDINGS = [
        Binding("v", "viewer", "Viewer", tooltip="Browse slices of the volume with labels and prediction"),
        Binding("m", "message", "Message", tooltip="Add a message to the curator-scientist thread"),
        Binding("n", "note", "Note", tooltip="Record an intervention in the curator's log"),
        Binding("c", "cancel_job", "Cancel", tooltip="Stop the selected job (asks first)"),
        Binding("r", "refresh", "Refresh", tooltip="Poll jobs and reload the session now"),
    ]
    HELP_TITLE = "session"
    HELP = ("Jobs keep running when fibtui quits; start it again to re-attach.\n"
            "Tab moves between panels; arrows move the selection; the log follows the selected job.")

    def __init__(self, root: Path, refresh_s: float = 2.0):
        super().__init__()
        self.root = Path(root)
        self.refresh_s = refresh_s
        self.snap: Snapshot | None = None
        self.selected_job: str | None = None
        self._executors: dict = {}  # kept across refreshes: one SSH connection, not one per tick
        # Gentle polling: while no job changes, ask the schedulers less and less often (up to 30 s).
        self._backoff = Backoff(initial=refresh_s, cap=max(30.0, refresh_s))
        self._next_poll = 0.0
        self._last_seen: tuple = ()

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="top"):
            yield DataTable(id="rounds", cursor_type="row", zebra_stripes=True)
            with Vertical(id="evaluation"):
                yield Static(id="metrics")
                yield Sparkline([], id="loss")
                yield Static(id="loss-label")
        yield DataTable(id="jobs", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="bottom"):
            yield ScrollText(id="log")
            with Vertical(id="journal"):
                yield ScrollText(id="messages")
                yield ScrollText(id="notes")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        root, home = self.root.resolve(), Path.home()
        self.sub_title = f"~/{root.relative_to(home)}" if root.is_relative_to(home) else str(root)
        for table_id, columns in (("#rounds", ROUND_COLUMNS), ("#jobs", JOB_COLUMNS)):
            self.query_one(table_id, DataTable).add_columns(*columns)
        titles = {"#rounds": "Rounds", "#evaluation": "Evaluation", "#jobs": "Jobs", "#log": "Log",
                  "#messages": "Messages", "#notes": "Notes"}
        for selector, title in titles.items():
            self.query_one(selector).border_title = title
        self.query_one("#jobs", DataTable).focus()
        self.set_interval(self.refresh_s, self.poll)
        self.action_refresh()

    # -- refreshing -------------------------------------------------------

    def poll(self) -> None:
        """Timer tick: skip while a refresh is still running (a slow scheduler must not pile up work)."""
        if not any(w.group == "refresh" and w.is_running for w in self.workers):
            self.action_refresh()

    def action_refresh(self) -> None:
        self._backoff.reset()
        self._next_poll = 0.0
        self.load_snapshot(self.selected_job)

    @work(thread=True, exclusive=True, group="refresh")
    def load_snapshot(self, selected_job: str | None) -> None:
        poll = time.monotonic() >= self._next_poll
        try:
            snap = snapshot.refresh(self.root, selected_job, self._executors, poll=poll)
        except Exception as e:
            self.post_message(RefreshFailed(f"{type(e).__name__}: {e}"))
            return
        if poll:
            seen = tuple((j["id"], j["state"], j["progress"]) for j in snap.jobs if snapshot.is_active(j))
            if seen != self._last_seen:
                self._backoff.reset()
            self._last_seen = seen
            self._next_poll = time.monotonic() + self._backoff.next()
        if not get_current_worker().is_cancelled:
            self.post_message(SnapshotReady(snap))

    def on_snapshot_ready(self, message: SnapshotReady) -> None:
        snap = self.snap = message.snapshot
        sync_table(self.query_one("#rounds", DataTable), [(str(r["n"]), round_cells(r)) for r in snap.rounds])
        sync_table(self.query_one("#jobs", DataTable), [(j["id"], job_cells(j)) for j in snap.jobs])
        self.query_one("#metrics", Static).update(evaluation_text(snap.evaluation))
        self.query_one("#evaluation").border_title = (
            f"Evaluation · {snap.evaluation['job']}" if snap.evaluation else "Evaluation")
        self.query_one("#loss", Sparkline).data = snap.loss
        label = (Text.assemble(("loss ", "dim"), f"{snap.loss[-1]:.4f}", (f" · {snap.loss_job}", "dim"))
                 if snap.loss else Text("no training loss yet", style="dim"))
        self.query_one("#loss-label", Static).update(label)
        self.query_one("#messages", ScrollText).update(journal_text(snap.messages, "author", "text", ": "))
        self.query_one("#notes", ScrollText).update(journal_text(snap.notes, "action", "reason", " — "))
        if snap.log_job and snap.log_job == (self.selected_job or snap.log_job):
            self.show_log(self.job(snap.log_job), snap.log)
        jobs = self.query_one("#jobs")
        jobs.border_subtitle = (Text(f"⚠ {snap.warning}", style="bold red") if snap.warning
                                else f"updated {datetime.now():%H:%M:%S}")

    def on_refresh_failed(self, message: RefreshFailed) -> None:
        self.query_one("#jobs").border_subtitle = Text(f"⚠ refresh failed: {message.error}", style="bold red")

    # -- log of the selected job -------------------------------------------

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "jobs" or event.row_key.value == self.selected_job:
            return
        self.selected_job = event.row_key.value
        job = self.job(self.selected_job)
        if job:
            self.load_log(job)

    @work(thread=True, exclusive=True, group="log")
    def load_log(self, job: dict) -> None:
        self.post_message(LogTail(job["id"], snapshot.log_tail(self.root, job)))

    def on_log_tail(self, message: LogTail) -> None:
        job = self.job(message.job_id)
        if job and message.job_id == self.selected_job:
            self.show_log(job, message.text)

    def show_log(self, job: dict, text: str) -> None:
        """The stderr tail, then why the job ended (readable here even when the table is cut off)."""
        log = self.query_one("#log", ScrollText)
        log.border_title = f"Log · {job['id']} stderr"
        out = Text(text) if text else Text("stderr.log is empty", style="dim")
        if job["reason"]:
            out.append(f"\n{job['state']}: {job['reason']}", style=STATE_STYLE.get(job["state"], "bold red"))
        log.update(out)

    def job(self, job_id: str | None) -> dict | None:
        return next((j for j in self.snap.jobs if j["id"] == job_id), None) if self.snap else None

    # -- actions ---------------------------------------------------------------

    def action_viewer(self) -> None:
        from fibtui.tui.screens.viewer import ViewerScreen

        self.app.push_screen(ViewerScreen(self.root))

    def action_message(self) -> None:
        form = FormScreen("New message", [Field("author", "Author:", author()), Field("text", "Message:")],
                          submit="Send")
        self.app.push_screen(form, lambda v: v and self.write(journal.add_message, v["author"], v["text"]))

    def action_note(self) -> None:
        form = FormScreen("New note (intervention log)",
                          [Field("action", "Action:"), Field("reason", "Reason:", required=False)])
        self.app.push_screen(form, lambda v: v and self.write(journal.add_note, v["action"], v["reason"] or None,
                                                              author()))

    def action_cancel_job(self) -> None:
        job = self.job(self.selected_job)
        if job is None:
            self.notify("no job selected", severity="warning")
            return
        if not snapshot.is_active(job):
            self.notify(f"{job['id']} is {job['state']}: nothing to cancel", severity="warning")
            return
        question = (f"Cancel job {job['id']} ({job['state']} on {job['executor']})?\n"
                    "Its process is stopped; its files and checkpoints stay.")
        self.app.push_screen(ConfirmScreen(question, yes="Cancel job"),
                             lambda ok: ok and self.write(self._cancel, job["id"]))

    @staticmethod
    def _cancel(session, job_id: str) -> str:
        Dispatcher(session).cancel(job_id)
        return f"{job_id} cancelled"

    @work(thread=True, group="write")
    def write(self, fn, *args) -> None:
        """Run a session mutation in its own thread and connection; report back either way."""
        session = open_session(self.root)
        try:
            out = fn(session, *args)
            self.post_message(ActionDone(out if isinstance(out, str) else "saved"))
        except Exception as e:
            self.post_message(ActionDone(str(e), error=True))
        finally:
            session.close()

    def on_action_done(self, message: ActionDone) -> None:
        self.notify(message.text, severity="error" if message.error else "information")
        self.action_refresh()
