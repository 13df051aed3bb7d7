"""Small modal dialogs: confirm a mutating action, fill a short form, show the keys."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from sessions.errors import FibError


class ConfirmScreen(ModalScreen[bool]):
    """Yes/no before anything that changes the session or a job."""

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str, yes: str = "Yes"):
        super().__init__()
        self.question, self.yes = question, yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="question")
            with Horizontal(classes="buttons"):
                yield Button(f"{self.yes} (y)", variant="error", id="yes")
                yield Button("No (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()  # the safe choice is the default

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    value: str = ""
    required: bool = True


class FormScreen(ModalScreen[dict | None]):
    """A few labelled text inputs; Enter submits, Escape leaves, Tab moves between fields.

    `check(values)` (run in a worker thread) does the work and returns what the form dismisses with; a
    FibError it raises is shown in the form, which stays open: nothing was written."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, fields: list[Field], submit: str = "Save",
                 check: Callable[[dict], dict] | None = None):
        super().__init__()
        self.title_text, self.fields, self.submit, self.check = title, fields, submit, check

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="question")
            for f in self.fields:
                yield Label(f.label)
                yield Input(f.value, id=f"field-{f.name}")
            yield Static("", classes="error")
            with Horizontal(classes="buttons"):
                yield Button(f"{self.submit} (enter)", variant="primary", id="save")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        first_empty = next((f for f in self.fields if not f.value), self.fields[0])
        self.query_one(f"#field-{first_empty.name}", Input).focus()

    def values(self) -> dict[str, str]:
        return {f.name: self.query_one(f"#field-{f.name}", Input).value.strip() for f in self.fields}

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_save()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_save() if event.button.id == "save" else self.dismiss(None)

    def action_save(self) -> None:
        values = self.values()
        missing = [f.label.rstrip(":") for f in self.fields if f.required and not values[f.name]]
        if missing:
            self.query_one(".error", Static).update(f"{', '.join(missing)}: required")
            return
        if self.check is None:
            self.dismiss(values)
        else:
            self.run_check(values)

    @work(thread=True, exclusive=True, group="check")
    def run_check(self, values: dict) -> None:
        try:
            out = self.check(values)
        except FibError as e:
            self.app.call_from_thread(self.query_one(".error", Static).update, str(e))
            return
        except Exception as e:  # noqa: BLE001 - shown in the form, never a crashed app
            self.app.call_from_thread(self.query_one(".error", Static).update, f"{type(e).__name__}: {e}")
            return
        self.app.call_from_thread(self.dismiss, out)

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """Every key of the screen underneath, with what it does."""

    BINDINGS = [Binding("escape,q,question_mark,f1", "close", "Close")]

    def __init__(self, title: str, keys: list[tuple[str, str]], notes: str = ""):
        super().__init__()
        self.title_text, self.keys, self.notes = title, keys, notes

    def compose(self) -> ComposeResult:
        width = max((len(k) for k, _ in self.keys), default=0)
        lines = [Text.assemble((f"{k:<{width}}  ", "bold"), d) for k, d in self.keys]
        dialog = Vertical(classes="dialog help")
        dialog.border_title = self.title_text
        dialog.border_subtitle = "esc: close · ctrl+p: command palette"
        with dialog:
            with VerticalScroll():
                yield Static(Text("\n").join(lines) + (Text(f"\n\n{self.notes}") if self.notes else Text()))

    def action_close(self) -> None:
        self.dismiss(None)
