"""The session's timeline: every round, job, evaluation, message and intervention on one list,
and per round the message counts, answer times and communication pattern (sessions/timeline.py).

A thread worker reads the session (its own SQLite connection: connections are
bound to their thread) and posts the result back; Enter (or o) on a message
linked to a viewer position opens the viewer there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header

from fibtui.tui.widgets.rows import local_time
from sessions import timeline
from sessions.workspace import open_session

EVENT_COLUMNS = ("time", "round", "type", "what")
ROUND_COLUMNS = ("round", "msgs", "q", "ans", "res", "dec", "dead", "open", "answer med", "answer max",
                 "interv.", "jobs", "pattern")
TYPE_STYLE = {"round": "bold", "evaluation": "magenta", "message": "cyan", "intervention": "yellow", "note": "yellow",
              "job ended": "green"}
KIND_STYLE = {"question": "bold cyan", "deadlock": "bold red", "decision": "bold green", "answer": "green",
              "result": "magenta"}


@dataclass
class TimelineReady(Message):
    """The timeline was read: {"events", "rounds"}, or `error` when it could not be."""

    data: dict | None
    error: str | None = None


def duration(s: float | None) -> str:
    if s is None:
        return "—"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.1f}{unit}"
    return f"{s:.0f}s"


def event_cells(e: dict) -> list:
    style = KIND_STYLE.get(e["kind"]) if e["type"] == "message" else TYPE_STYLE.get(e["type"])
    what = Text(e["what"])
    if e["author"]:
        what = Text.assemble((f"{e['author']}: ", "bold"), what)
    if e.get("at"):
        what.append(" ⏎", style="bold")
    return [local_time(e["time"]), "—" if e["round"] is None else str(e["round"]), Text(e["type"], style=style or ""),
            what]


def round_cells(r: dict) -> list:
    k = r["by_kind"]
    return ["before" if r["round"] is None else str(r["round"]), str(r["messages"]),
            *(str(k[x]) for x in ("question", "answer", "result", "decision", "deadlock")), str(r["unanswered"]),
            duration(r["answer_median_s"]), duration(r["answer_max_s"]), str(r["interventions"] + r["notes"]),
            str(r["jobs"]), r["pattern"]]


class TimelineScreen(Screen):
    BINDINGS = [
        Binding("o", "open_link", "Open position", tooltip="Open the viewer where the selected message points "
                                                           "(Enter does the same)"),
        Binding("r", "reload", "Reload", tooltip="Read the timeline again"),
        Binding("escape", "back", "Back", key_display="esc", tooltip="Back to the previous screen"),
    ]
    HELP_TITLE = "timeline"
    HELP = ("Times are your local clock. ⏎ marks a message linked to a viewer position.\n"
            "Pattern per round: see `fibtui timeline --help` and sessions/timeline.py for the rule.")
    DEFAULT_CSS = """
    TimelineScreen #timeline-events, TimelineScreen #timeline-rounds {
        border: round $primary-darken-1;
        border-title-color: $text;
        border-title-style: bold;
        border-subtitle-color: $text-muted;
    }
    TimelineScreen #timeline-events:focus, TimelineScreen #timeline-rounds:focus { border: round $accent; }
    TimelineScreen #timeline-events { height: 2fr; }
    TimelineScreen #timeline-rounds { height: 1fr; min-height: 5; }
    """

    def __init__(self, root: Path):
        super().__init__()
        self.root = Path(root)
        self.events: list[dict] = []
        self.rounds: list[dict] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="timeline-events", cursor_type="row", zebra_stripes=True)
        yield DataTable(id="timeline-rounds", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        events = self.query_one("#timeline-events", DataTable)
        events.add_columns(*EVENT_COLUMNS)
        events.border_title, events.border_subtitle = "Timeline", "reading…"
        rounds = self.query_one("#timeline-rounds", DataTable)
        rounds.add_columns(*ROUND_COLUMNS)
        rounds.border_title = "Per round"
        events.focus()
        self.load()

    @work(thread=True, exclusive=True, group="timeline")
    def load(self) -> None:
        try:
            session = open_session(self.root)
        except Exception as e:
            self.post_message(TimelineReady(None, str(e)))
            return
        try:
            self.post_message(TimelineReady(timeline.build(session)))
        except Exception as e:  # a damaged session must not take the app down
            self.post_message(TimelineReady(None, f"{type(e).__name__}: {e}"))
        finally:
            session.close()

    def on_timeline_ready(self, message: TimelineReady) -> None:
        events = self.query_one("#timeline-events", DataTable)
        if message.data is None:
            events.border_subtitle = Text(f"⚠ {message.error}", style="bold red")
            return
        self.events, self.rounds = message.data["events"], message.data["rounds"]
        events.clear()
        events.add_rows(event_cells(e) for e in self.events)
        linked = sum(1 for e in self.events if e.get("at"))
        events.border_subtitle = f"{len(self.events)} events · {linked} linked to a position"
        rounds = self.query_one("#timeline-rounds", DataTable)
        rounds.clear()
        rounds.add_rows(round_cells(r) for r in self.rounds)

    def selected(self) -> dict | None:
        table = self.query_one("#timeline-events", DataTable)
        row = table.cursor_row
        return self.events[row] if 0 <= row < len(self.events) and table.row_count else None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "timeline-events":
            self.action_open_link()

    def action_open_link(self) -> None:
        e = self.selected()
        if e is None or not e.get("at"):
            self.notify("this event links to no viewer position", severity="warning")
            return
        from fibtui.tui.screens.viewer import ViewerScreen

        self.app.push_screen(ViewerScreen(self.root, at=e["at"]))

    def action_reload(self) -> None:
        self.query_one("#timeline-events", DataTable).border_subtitle = "reading…"
        self.load()

    def action_back(self) -> None:
        self.app.pop_screen()
