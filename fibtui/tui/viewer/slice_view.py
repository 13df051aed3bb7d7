"""The widget that shows a frame: Strips painted by line lookup; mouse presses and drags paint."""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.geometry import Region
from textual.strip import Strip
from textual.widget import Widget

from fibtui.tui.viewer.frame import BACKGROUND_STYLE


class SliceView(Widget):
    """Paints the last frame's Strips; painting is a list lookup, all work happens elsewhere.
    A mouse press or drag paints (SGR mouse; in tmux `set -g mouse on`)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.strips: list[Strip] = []
        self.notice = "opening volume…"
        self.dragging = False

    def show(self, strips: list[Strip], notice: str = "") -> None:
        self.strips, self.notice = strips, notice
        self.refresh()

    def show_lines(self, strips: list[Strip], rows) -> None:
        """Only `rows` changed (a stroke, the cursor): repaint just those lines."""
        self.strips = strips
        width = self.size.width
        for y in rows:
            self.refresh(Region(0, int(y), width, 1))

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if y < len(self.strips):
            return self.strips[y].crop_extend(0, width, BACKGROUND_STYLE)
        if self.notice and y == self.size.height // 2:
            text = self.notice[:width].center(width)
            return Strip([Segment(text, BACKGROUND_STYLE + Style(color="white"))], width)
        return Strip.blank(width, BACKGROUND_STYLE)

    def on_resize(self) -> None:
        self.screen.request_frame()

    def on_mouse_down(self, event: events.MouseDown) -> None:
        if event.button == 1:
            self.dragging = True
            self.capture_mouse()
            self.screen.paint_at_cell(event.x, event.y, start=True)

    def on_mouse_move(self, event: events.MouseMove) -> None:
        if self.dragging and 0 <= event.x < self.size.width and 0 <= event.y < self.size.height:
            self.screen.paint_at_cell(event.x, event.y, start=False)

    def on_mouse_up(self, event: events.MouseUp) -> None:
        if self.dragging:
            self.dragging = False
            self.release_mouse()
