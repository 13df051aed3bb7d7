"""The session screen: where the round happens.

Rounds, jobs with live progress, evaluation, the loss and score plots, the
thread and the intervention log — and every round action on a key and in the
command palette, each opening its form (fibtui.actions: the same function,
validation and log entry as the CLI's command). A thread worker polls the
executors and reads SQLite; the UI thread only paints, so a slow scheduler or
file system never freezes the keyboard.

Two layouts: at 80×24 the bottom row shows one panel at a time (`b` cycles);
from 160×45 on everything is side by side, with a slice preview of the latest
prediction beside the jobs.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, OptionList, Static
from textual.worker import get_current_worker

from fibtui.actions import ACTIONS, Context
from fibtui.tui import snapshot
from fibtui.tui.messages import ActionDone, FormReady, LogTail, RefreshFailed, SnapshotReady
from fibtui.tui.screens.action_form import ActionForm, form_data
from fibtui.tui.screens.dialogs import Field, FormScreen
from fibtui.tui.snapshot import Snapshot
from fibtui.tui.widgets.answer import AnswerPanel
from fibtui.tui.widgets.plots import LossPlot, ScorePlot
from fibtui.tui.widgets.rows import (STATE_STYLE, ScrollText, evaluation_text, job_cells, log_prompt, message_prompt,
                                     round_cells, sync_options, sync_table)
from fibtui.tui.widgets.preview import PredictionPreview
from remote.dispatch import Backoff
from sessions import interventions, journal
from sessions.interventions import current_user
from sessions.workspace import open_session

ROUND_COLUMNS = ("#", "target", "from", "crops", "train", "pred", "eval")
JOB_COLUMNS = ("job", "state", "progress", "message", "reason", "GPU-h", "kind", "executor")
PANELS = ("log", "thread", "interventions", "loss", "answer", "scores")
PANEL_TITLES = {"log": "Log", "thread": "Thread", "interventions": "Interventions", "loss": "Loss",
                "scores": "Held-out scores", "answer": "Answer"}
WIDE = (160, 45)  # from this terminal size on, every panel is shown at once

# the round actions, in the order of the help screen; the key and the palette title come from fibtui.actions
ROUND_ACTIONS = ("new_round", "add_crop", "draw_holdout", "label_holdout", "train", "predict", "evaluate", "resume",
                 "cancel_round", "cancel_job", "measure", "import_labels", "export_labels")
IN_FOOTER = ("train", "predict", "evaluate")


def _bindings(read_only: bool) -> list[Binding]:
    return [
        *(Binding(ACTIONS[n].key, f"act('{n}')", ACTIONS[n].title, show=n in IN_FOOTER, tooltip=ACTIONS[n].help)
          for n in ROUND_ACTIONS),
        Binding("v", "viewer", "Open viewer", tooltip="Browse slices with labels and prediction"),
        Binding("m", "message", "Write message", show=False, tooltip="Add to the curator–scientist thread (replies to the "
                                                         "highlighted message when the thread has focus)"),
        Binding("n", "note", "Add note", show=False, tooltip="A free-text entry in the intervention log"),
        Binding("w", "why", "Give a reason", show=False,
                tooltip="Say why the highlighted automatic entry of the intervention log was done"),
        Binding("T", "timeline", "Show timeline", show=False,
                tooltip="Rounds, jobs, metrics, messages and interventions on one time axis"),
        Binding("b", "panel(1)", "Next panel", tooltip="Small terminal: show the next bottom panel"),
        Binding("B", "panel(-1)", "Previous panel", show=False),
        Binding("r", "refresh", "Refresh", show=False, tooltip="Poll jobs and reload the session now"),
    ]


class SessionScreen(Screen):
    BINDINGS = _bindings(False)
    HELP_TITLE = "session"
    HELP = ("Jobs keep running when fibtui quits; start it again to re-attach.\n"
            "Every action opens a form prefilled with what the CLI would use: enter submits, esc leaves;\n"
            "irreversible ones (cancel, held-out regions) ask first. Tab moves between panels; the log and the\n"
            "loss plot follow the selected job. Enter on a thread message with a ⌖ link opens the viewer there.")

    def __init__(self, root: Path, refresh_s: float = 2.0, read_only: bool = False):
        super().__init__()
        self.root = Path(root)
        self.refresh_s = refresh_s
        self.read_only = read_only
        self.snap: Snapshot | None = None
        self.selected_job: str | None = None
        self.panel = 0
        self._executors: dict = {}  # kept across refreshes: one SSH connection, not one per tick
        # Gentle polling: while no job changes, ask the schedulers less and less often (up to 30 s).
        self._backoff = Backoff(initial=refresh_s, cap=max(30.0, refresh_s))
        self._next_poll = 0.0
        self._last_seen: tuple = ()

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="top"):
            yield DataTable(id="rounds", cursor_type="row", zebra_stripes=True)
            yield Static(id="evaluation")
        with Horizontal(id="middle"):
            yield DataTable(id="jobs", cursor_type="row", zebra_stripes=True)
            yield PredictionPreview(self.root, id="preview")
        with Horizontal(id="bottom"):
            yield ScrollText(id="log", classes="panel")
            yield OptionList(id="thread", classes="panel")
            yield OptionList(id="interventions", classes="panel")
            yield LossPlot(id="loss", classes="panel")
            yield ScorePlot(id="scores", classes="panel")
            yield AnswerPanel(id="answer", classes="panel")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        root, home = self.root.resolve(), Path.home()
        self.sub_title = f"~/{root.relative_to(home)}" if root.is_relative_to(home) else str(root)
        if self.read_only:
            self.sub_title += " · read-only (scientist)"
        for table_id, columns in (("#rounds", ROUND_COLUMNS), ("#jobs", JOB_COLUMNS)):
            self.query_one(table_id, DataTable).add_columns(*columns)
        titles = {"#rounds": "Rounds", "#evaluation": "Evaluation", "#jobs": "Jobs", "#preview": "Latest prediction"}
        for selector, title in {**titles, **{f"#{p}": t for p, t in PANEL_TITLES.items()}}.items():
            self.query_one(selector).border_title = title
        self.query_one("#jobs", DataTable).focus()
        self.layout_for(self.app.size)
        self.set_interval(self.refresh_s, self.poll)
        self.load_snapshot(None, poll=False)  # paint what the session holds at once; the first tick polls

    # -- layout ------------------------------------------------------------

    def on_resize(self, event) -> None:
        self.layout_for(event.size)

    def layout_for(self, size) -> None:
        wide = size.width >= WIDE[0] and size.height >= WIDE[1]
        self.set_class(wide, "-wide")
        self.show_panel()
        self.refresh_bindings()

    def show_panel(self) -> None:
        wide = self.has_class("-wide")
        for i, name in enumerate(PANELS):
            panel = self.query_one(f"#{name}")
            panel.set_class(wide or i == self.panel, "-current")
            panel.border_subtitle = "" if wide else f"{i + 1}/{len(PANELS)} · b: next"

    def action_panel(self, step: int) -> None:
        self.panel = (self.panel + step) % len(PANELS)
        self.show_panel()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """The scientist's read-only view has no round actions and no log entries (messages stay open to
        them); the panel keys only matter when the terminal is small."""
        if action in ("act", "note", "why"):  # the round and the curator's log are the curator's
            return not self.read_only
        if action == "panel":
            return not self.has_class("-wide")
        return True

    # -- refreshing -------------------------------------------------------

    def poll(self) -> None:
        """Timer tick: skip while a refresh is still running (a slow scheduler must not pile up work)."""
        if not any(w.group == "refresh" and w.is_running for w in self.workers):
            self.load_snapshot(self.selected_job)

    def action_refresh(self) -> None:
        self._backoff.reset()
        self._next_poll = 0.0
        self.load_snapshot(self.selected_job)

    @work(thread=True, exclusive=True, group="refresh")
    def load_snapshot(self, selected_job: str | None, poll: bool | None = None) -> None:
        """`poll`: ask the executors first (default: when the backoff says it is time)."""
        poll = time.monotonic() >= self._next_poll if poll is None else poll
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
        old, snap = self.snap, message.snapshot
        self.snap = snap
        # unchanged parts are not rebuilt: a refresh of an idle session costs the UI thread next to nothing
        if old is None or old.rounds != snap.rounds:
            sync_table(self.query_one("#rounds", DataTable), [(str(r["n"]), round_cells(r)) for r in snap.rounds])
        if old is None or old.jobs != snap.jobs:
            sync_table(self.query_one("#jobs", DataTable), [(j["id"], job_cells(j)) for j in snap.jobs])
        evaluation = self.query_one("#evaluation", Static)
        evaluation.update(evaluation_text(snap.evaluation, snap.warnings))
        evaluation.border_title = f"Evaluation · {snap.evaluation['job']}" if snap.evaluation else "Evaluation"
        self.query_one("#loss", LossPlot).show(snap.curves, snap.curve_title)
        self.query_one("#scores", ScorePlot).show(snap.scores, snap.warnings)
        self.query_one("#answer", AnswerPanel).show(snap.answer)
        if old is None or old.messages != snap.messages:
            sync_options(self.query_one("#thread", OptionList),
                         [(f"m{m['id']}", message_prompt(m)) for m in snap.messages])
        self.query_one("#thread").border_title = (
            f"Thread · {snap.unanswered} unanswered question{'s' * (snap.unanswered != 1)}"
            if snap.unanswered else "Thread")
        if old is None or old.log != snap.log:
            sync_options(self.query_one("#interventions", OptionList),
                         [(f"{e['type']}{e['id']}", log_prompt(e)) for e in snap.log])
        if snap.log_job and snap.log_job == (self.selected_job or snap.log_job):
            self.show_log(self.job(snap.log_job), snap.log_text)
        if old is None or old.latest_prediction != snap.latest_prediction:
            self.query_one("#preview", PredictionPreview).reload()
        jobs = self.query_one("#jobs")
        jobs.border_subtitle = (Text(f"⚠ {snap.warning}", style="bold red") if snap.warning
                                else f"updated {datetime.now():%H:%M:%S}")

    def on_refresh_failed(self, message: RefreshFailed) -> None:
        self.query_one("#jobs").border_subtitle = Text(f"⚠ refresh failed: {message.error}", style="bold red")

    # -- the selected job: its log and its loss curve ------------------------

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "jobs" or event.row_key.value == self.selected_job:
            return
        self.selected_job = event.row_key.value
        job = self.job(self.selected_job)
        if job:
            self.load_log(job)
            if job["kind"] == "train":
                self.load_snapshot(self.selected_job)  # the loss plot follows the selected training

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

    # -- round actions: a form made from the action's parameters ----------------

    def context(self) -> Context:
        return Context(via="tui", executors=self._executors)

    def action_act(self, name: str) -> None:
        if self.read_only:
            self.notify("read-only: the scientist's view cannot change the round", severity="warning")
            return
        given = {}
        if name == "cancel_job" and self.selected_job:
            job = self.job(self.selected_job)
            if job and snapshot.is_active(job):
                given["job"] = job["id"]
        if name == "resume" and self.selected_job and (self.job(self.selected_job) or {}).get("resumable") is not None:
            given["job"] = self.selected_job
        self.prepare_form(name, given)

    @work(thread=True, exclusive=True, group="form")
    def prepare_form(self, name: str, given: dict) -> None:
        try:
            self.post_message(FormReady(form_data(self.root, name, given)))
        except Exception as e:  # noqa: BLE001 - the session could not be read: say so, change nothing
            self.post_message(ActionDone(f"{ACTIONS[name].title}: {e}", error=True))

    def on_form_ready(self, message: FormReady) -> None:
        def done(result: dict | None) -> None:
            if result:
                self.post_message(ActionDone(result.get("summary", "done")))

        self.app.push_screen(ActionForm(self.root, message.data, self.context()), done)

    # -- viewer, thread, notes, reasons, timeline -----------------------------

    def action_viewer(self) -> None:
        from fibtui.tui.screens.viewer import ViewerScreen

        self.app.push_screen(ViewerScreen(self.root))

    def highlighted(self, list_id: str) -> str | None:
        options = self.query_one(f"#{list_id}", OptionList)
        if options.highlighted is None or not options.option_count:
            return None
        return options.options[options.highlighted].id

    def message(self, option_id: str | None) -> dict | None:
        if not option_id or not self.snap:
            return None
        return next((m for m in self.snap.messages if f"m{m['id']}" == option_id), None)

    def action_message(self) -> None:
        reply = self.message(self.highlighted("thread")) if self.focused is self.query_one("#thread") else None
        fields = [Field("author", "Author:", current_user()),
                  Field("kind", f"Kind ({', '.join(journal.KINDS)}):",
                        "answer" if reply and reply.get("kind") == "question" else "plain"),
                  Field("text", "Message:"),
                  Field("reply_to", "Reply to message #:", str(reply["id"]) if reply else "", required=False),
                  Field("round", "Round:", "", required=False),
                  Field("at", "Viewer position Z,Y,X:", "", required=False)]
        form = FormScreen("New message" + (f" (reply to #{reply['id']})" if reply else ""), fields, submit="Send",
                          check=self._check_message)
        self.app.push_screen(form, lambda v: v and self.post_message(ActionDone(f"message {v['id']} sent")))

    def _check_message(self, v: dict) -> dict:
        """Runs in the form's worker: the same validation as `fibtui msg add`; one line back when it fails."""
        from fibtui.actions import integer, triple
        from sessions.volumes import catalog

        session = open_session(self.root)
        try:
            at = None
            if v["at"]:
                z, y, x = triple(positive=False)(v["at"], "--at")
                at = {"volume": catalog.default_volume(session), "axis": "xy", "z": z, "y": y, "x": x, "zoom": 1.0}
            return journal.add_message(
                session, v["author"], v["text"], kind=v["kind"] or "plain",
                reply_to=integer(1)(v["reply_to"], "--reply-to") if v["reply_to"] else None,
                round_n=integer(1)(v["round"], "--round") if v["round"] else None, at=at)
        finally:
            session.close()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option_list.id != "thread":
            return
        m = self.message(event.option.id)
        if m and m.get("at"):
            from fibtui.tui.screens.viewer import ViewerScreen

            self.app.push_screen(ViewerScreen(self.root, at=m["at"]))
        elif m and m.get("job") and self.job(m["job"]):
            table = self.query_one("#jobs", DataTable)
            table.move_cursor(row=[r.key.value for r in table.ordered_rows].index(m["job"]))
            table.focus()
        elif m:
            self.notify(f"message #{m['id']} links to no viewer position or job")

    def action_note(self) -> None:
        form = FormScreen("New note (intervention log)",
                          [Field("action", "What was done:"), Field("reason", "Why:", required=False)],
                          check=self._check_note)
        self.app.push_screen(form, lambda v: v and self.post_message(ActionDone("note added")))

    def _check_note(self, v: dict) -> dict:
        session = open_session(self.root)
        try:
            return journal.add_note(session, v["action"], v["reason"] or None, current_user())
        finally:
            session.close()

    def action_why(self) -> None:
        entry = self.highlighted("interventions")
        if not entry or not entry.startswith("auto"):
            self.notify("highlight an automatic entry of the intervention log first (tab to it)",
                        severity="warning")
            return
        entry_id = int(entry.removeprefix("auto"))
        form = FormScreen(f"Why? (intervention {entry_id})", [Field("reason", "Reason:")],
                          check=lambda v: self._attach_reason(entry_id, v["reason"]))
        self.app.push_screen(form, lambda v: v and self.post_message(ActionDone("reason attached")))

    def _attach_reason(self, entry_id: int, reason: str) -> dict:
        session = open_session(self.root)
        try:
            return interventions.attach_reason(session, entry_id, reason)
        finally:
            session.close()

    def action_timeline(self) -> None:
        from fibtui.tui.screens.timeline import TimelineScreen

        self.app.push_screen(TimelineScreen(self.root))

    def on_action_done(self, message: ActionDone) -> None:
        self.notify(message.text, severity="error" if message.error else "information")
        self.action_refresh()
