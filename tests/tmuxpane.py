"""A real terminal for tests: a program in a tmux pane, typed at with send-keys, read with capture-pane."""

from __future__ import annotations

import subprocess
import time
import uuid


class Pane:
    def __init__(self, command: str, size=(80, 24)):
        self.name = f"fibtui-test-{uuid.uuid4().hex[:8]}"
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", str(size[0]), "-y", str(size[1]),
                        command], check=True)

    def keys(self, *keys: str, literal: bool = False, pause: float = 0.15) -> None:
        """Send keys, then give the program `pause` seconds to take them."""
        subprocess.run(["tmux", "send-keys", "-t", self.name, *(["-l"] if literal else []), *keys], check=True)
        time.sleep(pause)

    def type(self, text: str) -> None:
        self.keys(text, literal=True)

    def tab(self, times: int = 1, timeout: float = 10.0) -> None:
        """Move focus to the next field `times` times, each time waiting until the focus shows it has moved.

        Textual handles Tab after the focused widget has let the key bubble up,
        while keys sent right after it are already on their way to the old
        field; on a loaded machine a fixed pause loses that race (a count typed
        into the size field). A focus move changes the terminal: the cursor
        follows the focused input, a scrolling form scrolls, and the focused
        field's border changes colour, so the screen with its colours and the
        cursor are compared before and after.
        """
        for _ in range(times):
            before = self._look()
            self.keys("Tab", pause=0)
            end = time.monotonic() + timeout
            while self._look() == before:
                if time.monotonic() > end:
                    raise AssertionError(f"Tab did not move the focus; the screen shows:\n{self.screen()}")
                time.sleep(0.05)

    def _look(self) -> tuple[str, str]:
        """The cursor's position and the screen with its colours."""
        return self._display("#{cursor_x},#{cursor_y}"), self.screen(colours=True)

    def _display(self, fmt: str) -> str:
        """A tmux format (`#{...}`) expanded for this pane."""
        return subprocess.run(["tmux", "display", "-p", "-t", self.name, fmt], capture_output=True, text=True).stdout

    def screen(self, colours: bool = False) -> str:
        """The pane's text; with `colours`, its escape sequences too (a focus move shows only in those)."""
        return subprocess.run(["tmux", "capture-pane", "-p", *(["-e"] if colours else []), "-t", self.name],
                              capture_output=True, text=True).stdout

    def wait(self, text: str, timeout: float = 30.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            out = self.screen()
            if text in out:
                return out
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared on the screen; it shows:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)

    @property
    def pid(self) -> int:
        """The PID of the program in the pane (started without a shell: the program itself)."""
        return int(self._display("#{pane_pid}"))
