"""The viewer's "where to label next" list: `sessions.suggest` boxes; Enter jumps there with a crop box ready."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option


class SuggestionList(ModalScreen[dict | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel"),
                Binding("m", "method", "Next method", tooltip="random → uncertainty → disagreement")]

    def __init__(self, rows: list[dict], method: str):
        super().__init__()
        self.rows, self.method = rows, method

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Where to label next ({self.method}, seed {self.rows[0]['seed']}): enter jumps there "
                        "with a crop box ready; m: next method", classes="question")
            yield OptionList(*[Option(self.text(r), id=str(i)) for i, r in enumerate(self.rows)], id="suggestions")

    @staticmethod
    def text(r: dict) -> str:
        why = (f"score {r['score']:.3f}" if r["score"] is not None
               else "on predicted foreground" if r["foreground"] else "uniform")
        return f"{r['rank']}. z,y,x {r['range']} — {why}"

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.rows[int(event.option.id)])

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_method(self) -> None:
        self.dismiss({"next_method": True})
