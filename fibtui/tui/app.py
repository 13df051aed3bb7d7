"""The fibtui Textual app: session overview first, slice viewer on demand.

The app only observes and records: jobs run detached from it, so quitting
(or losing the SSH connection) never stops them, and the next start
re-attaches through `Dispatcher.refresh`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from functools import partial
from pathlib import Path

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from fibtui.tui.screens.dialogs import HelpScreen
from fibtui.tui.screens.session import SessionScreen
from sessions.workspace import open_session


class FibApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "fibtui"
    BINDINGS = [
        Binding("q", "quit", "Quit", tooltip="Leave fibtui; running jobs keep running"),
        Binding("question_mark,f1", "help", "Help", key_display="?", tooltip="All keys of this screen"),
    ]

    def __init__(self, session_root: Path, refresh_s: float = 2.0, read_only: bool = False):
        """`read_only`: the scientist's view — everything visible, messages writable, no round action."""
        super().__init__()
        self.session_root = Path(session_root)
        self.refresh_s = refresh_s
        self.read_only = read_only

    def get_default_screen(self) -> Screen:
        return SessionScreen(self.session_root, self.refresh_s, read_only=self.read_only)

    def key_help(self, screen: Screen) -> list[tuple[str, str]]:
        """(keys, description) for the screen's and the app's bindings, one row per description."""
        rows: dict[str, list[str]] = {}
        own = list(Binding.make_bindings(screen.BINDINGS))
        taken = {b.key for b in own}
        for b in own + [b for b in Binding.make_bindings(self.BINDINGS) if b.key not in taken]:
            if b.description:
                text = f"{b.description}: {b.tooltip}" if b.tooltip else b.description
                rows.setdefault(text, []).append(self.get_key_display(replace(b, key_display=None)))
        return [(" ".join(dict.fromkeys(keys)), text) for text, keys in rows.items()]

    def action_help(self) -> None:
        screen = self.screen
        if isinstance(screen, HelpScreen):
            return
        title = f"Keys: {getattr(screen, 'HELP_TITLE', 'fibtui')}"
        self.push_screen(HelpScreen(title, self.key_help(screen), getattr(screen, "HELP", "")))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Every key of the screen and the app is also a command palette entry."""
        seen = set()
        for active in screen.active_bindings.values():
            b = active.binding
            if not b.description or not isinstance(active.node, (App, Screen)) or b.action in seen:
                continue
            name, params = b.action.partition("(")[::2]
            if active.node.check_action(name, (params,) if params else ()) is False:  # e.g. read-only
                continue
            seen.add(b.action)
            key = self.get_key_display(b)
            yield SystemCommand(b.description, f"key {key}" + (f": {b.tooltip}" if b.tooltip else ""),
                                partial(self.run_action, b.action, active.node))
        yield from (c for c in super().get_system_commands(screen) if c.title != "Quit")


def run_tui(session_root: Path, mouse: bool = True, read_only: bool = False) -> None:
    """Open the session first, so a wrong path fails with a clear message before the screen switches."""
    open_session(session_root).close()
    FibApp(Path(session_root), read_only=read_only).run(mouse=mouse)
