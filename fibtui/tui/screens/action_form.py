"""The form of a round action: a view of the action's parameters, checked by the action's own parser.

Fields are prefilled with what the CLI would use. Enter submits what the form
holds and Escape leaves it. The values go to `fibtui.actions` exactly as the
CLI's do: a bad value shows the CLI's one-line error here and changes
nothing; an irreversible action asks first; success closes the form at once
(jobs run detached) with the action's result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Button, Input, Label, Static

from fibtui.actions import ACTIONS, Context, invoke, parse
from fibtui.tui.screens.dialogs import ConfirmScreen
from sessions.errors import FibError
from sessions.workspace import open_session


@dataclass(frozen=True)
class FormData:
    """What a form opens with, read from the session by a worker: prefilled text and choices per field."""

    action: str
    prefill: dict[str, str]
    choices: dict[str, list[str]]
    notes: dict[str, str]  # e.g. each executor's reachability, from `fibtui doctor`'s checks


def form_data(root: Path, name: str, given: dict[str, str] | None = None) -> FormData:
    """The defaults the CLI would use (after any values the screen knows, e.g. the selected job)."""
    action, given = ACTIONS[name], given or {}
    session = open_session(root)
    try:
        prefill, ctx = {}, {}
        for p in action.params:
            text = given.get(p.name) or p.default_text(session, ctx)
            prefill[p.name] = text
            try:
                ctx[p.name] = p.parse(text, p.flag) if text else None
            except FibError:
                ctx[p.name] = None
        choices = {p.name: p.choices(session) for p in action.params if p.choices}
    finally:
        session.close()
    return FormData(name, prefill, choices, {})


def executor_notes(names: list[str]) -> dict[str, str]:
    """Reachability of each executor, from the same checks `fibtui doctor` runs (slow: call in a worker)."""
    from fibtui import doctor

    out = {"local": "✓ this machine"}
    checks = {n: (ok, d) for n, ok, d in doctor.slurm() + doctor.ssh()}
    ok, detail = checks.get("slurm", (None, ""))
    for name in names:
        if name.startswith("slurm"):
            out[name] = ("✓ " if ok else "✗ " if ok is False else "– ") + detail
        elif name.startswith("ssh:"):
            sok, sdetail = checks.get(f"ssh {name[4:]}", (None, "not checked"))
            out[name] = ("✓ " if sok else "✗ ") + sdetail
    return out


class ActionForm(ModalScreen[dict | None]):
    """Dismisses with the action's result dict, or None when left with Escape."""

    BINDINGS = [Binding("escape", "cancel", "Leave", tooltip="Close the form; nothing is changed")]

    def __init__(self, root: Path, data: FormData, ctx: Context):
        super().__init__()
        self.root, self.data, self.ctx = Path(root), data, ctx
        self.action_def = ACTIONS[data.action]
        self.busy = False

    def compose(self) -> ComposeResult:
        a = self.action_def
        dialog = Vertical(classes="dialog form")
        dialog.border_title = a.title
        dialog.border_subtitle = "enter: submit · esc: leave"
        with dialog:
            yield Static(Text(a.help, style="dim"), classes="help")
            with VerticalScroll(classes="fields"):
                for p in a.params:
                    choices = self.data.choices.get(p.name, [])
                    yield Label(p.label + ("" if not p.required else " *"), classes="field-label")
                    yield Input(self.data.prefill.get(p.name, ""), id=f"field-{p.name}",
                                placeholder=p.help, suggester=SuggestFromList(choices) if choices else None)
                    if choices or p.name == "executor":
                        yield Static(self.hint(p.name, self.data.prefill.get(p.name, "")), id=f"hint-{p.name}",
                                     classes="hint")
            yield Static("", id="error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button(f"{a.title} (enter)", variant="primary", id="submit")
                yield Button("Leave (esc)", id="leave")

    def on_mount(self) -> None:
        empty = next((p for p in self.action_def.params if p.required and not self.data.prefill.get(p.name)), None)
        first = empty or self.action_def.params[0]
        self.query_one(f"#field-{first.name}", Input).focus()
        if any(p.name == "executor" for p in self.action_def.params):
            self.check_executors(self.data.choices.get("executor", []))

    def hint(self, name: str, value: str) -> Text:
        choices = self.data.choices.get(name, [])
        out = Text("choices: " + (", ".join(choices[:12]) + (" …" if len(choices) > 12 else "") if choices
                                  else "none yet"), style="dim")
        note = self.data.notes.get(value)
        if note:
            out.append(f"\n{value}: {note}", style="green" if note.startswith("✓") else "yellow")
        return out

    @work(thread=True, exclusive=True, group="doctor")
    def check_executors(self, names: list[str]) -> None:
        notes = executor_notes(names)
        self.app.call_from_thread(self._show_notes, notes)

    def _show_notes(self, notes: dict[str, str]) -> None:
        self.data = FormData(self.data.action, self.data.prefill, self.data.choices, notes)
        self._refresh_hint("executor")

    def _refresh_hint(self, name: str) -> None:
        hints = self.query(f"#hint-{name}")
        if hints:
            hints.first(Static).update(self.hint(name, self.query_one(f"#field-{name}", Input).value.strip()))

    def on_input_changed(self, event: Input.Changed) -> None:
        self._refresh_hint(event.input.id.removeprefix("field-"))

    def values(self) -> dict[str, str]:
        return {p.name: self.query_one(f"#field-{p.name}", Input).value.strip() for p in self.action_def.params}

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.submit() if event.button.id == "submit" else self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def show_error(self, text: str) -> None:
        self.busy = False
        self.query_one("#error", Static).update(text)

    # -- submit: check (parse) → confirm if irreversible → run, each in a worker ----------------

    def submit(self) -> None:
        if self.busy:
            return
        self.busy = True
        self.query_one("#error", Static).update(Text("checking…", style="dim"))
        self.check(self.values())

    @work(thread=True, exclusive=True, group="submit")
    def check(self, raw: dict[str, str]) -> None:
        session = open_session(self.root)
        try:
            values = parse(session, self.action_def, raw)
            question = self.action_def.confirm(session, values) if self.action_def.confirm else None
        except FibError as e:
            self.app.call_from_thread(self.show_error, str(e))
            return
        except Exception as e:  # noqa: BLE001 - shown in the form, never a crashed app
            self.app.call_from_thread(self.show_error, f"{type(e).__name__}: {e}")
            return
        finally:
            session.close()
        self.app.call_from_thread(self._confirmed_or_ask, raw, question)

    def _confirmed_or_ask(self, raw: dict[str, str], question: str | None) -> None:
        if question is None:
            self._run(raw)
            return

        def answered(yes: bool | None) -> None:
            self._run(raw) if yes else self.show_error("not done")

        self.app.push_screen(ConfirmScreen(question, yes=self.action_def.title), answered)

    def _run(self, raw: dict[str, str]) -> None:
        self.query_one("#error", Static).update(Text("submitting…", style="dim"))
        self.run_action(raw)

    @work(thread=True, exclusive=True, group="submit")
    def run_action(self, raw: dict[str, str]) -> None:
        session = open_session(self.root)
        try:
            result = invoke(session, self.action_def.name, raw, self.ctx)
        except FibError as e:
            self.app.call_from_thread(self.show_error, str(e))
            return
        except Exception as e:  # noqa: BLE001
            self.app.call_from_thread(self.show_error, f"{type(e).__name__}: {e}")
            return
        finally:
            session.close()
        self.app.call_from_thread(self.dismiss, result)
