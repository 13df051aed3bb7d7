"""A small live picture of the latest prediction: the middle xy slice, prediction over raw.

The frame comes from the slice viewer's own builder (`build_frame` on a
`SliceSource`, fitted to the widget like the viewer's first view) and is
painted with the line API from ready-made Strips, so painting is a list
lookup. All reading happens in an exclusive thread worker that opens the
session itself (SQLite connections are bound to their thread), closes it
before it reads any pixels, and keeps the SliceSource (which holds no SQLite
connection) for repaints on resize; `reload()` opens it again, picking up a
newer prediction.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from rich.segment import Segment
from rich.style import Style
from textual import work
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget
from textual.worker import get_current_worker

from fibtui.tui.screens.viewer import (BACKGROUND_STYLE, DEBOUNCE_S, NORMAL_NAME, OVERLAYS, build_frame, initial_view,
                                       pick_volume)
from fibtui.tui.widgets import halfblock
from sessions.errors import FibError
from sessions.volumes.slices import SliceSource
from sessions.workspace import open_session

PREDICTION_OVERLAY = OVERLAYS.index("prediction")


class PredictionPreview(Widget):
    """The latest prediction of the session's current volume, at its middle z, fitted to the widget."""

    DEFAULT_CSS = """
    PredictionPreview {
        width: 1fr;
        height: 1fr;
    }
    """

    class Rendered(Message):
        """A frame (or a notice instead) from the worker; handled by the widget itself."""

        bubble = False

        def __init__(self, strips: list[Strip], notice: str, caption: str) -> None:
            super().__init__()
            self.strips, self.notice, self.caption = strips, notice, caption

    def __init__(self, root: Path, **kwargs):
        super().__init__(**kwargs)
        self.root = Path(root)
        self.strips: list[Strip] = []
        self.notice = "loading the prediction…"
        self.caption = ""              # e.g. "vol · z 8/15 · prediction"
        self.frames = 0                # frames painted (tests and benchmarks count them)
        self._source: SliceSource | None = None
        self._stale = True             # reopen the session on the next frame

    def on_mount(self) -> None:
        self.reload()

    def reload(self) -> None:
        """Open the session again (a newer prediction, a new volume) and repaint."""
        self._stale = True
        self._request()

    def on_resize(self) -> None:
        self._request()

    def _request(self) -> None:
        width, height = self.size
        if width and height:
            self.render_preview(width, height)

    @work(thread=True, exclusive=True, group="preview")
    def render_preview(self, width: int, height: int) -> None:
        worker = get_current_worker()
        time.sleep(DEBOUNCE_S)  # a newer request (a resize drag) cancels this one before it reads anything
        if worker.is_cancelled:
            return
        strips, notice, caption = [], "", ""
        try:
            src = self._source
            if self._stale or src is None:
                self._stale = False
                session = open_session(self.root)
                try:
                    name = pick_volume(session)
                    src = SliceSource.open(session, name) if name else None
                finally:
                    session.close()
                self._source = src
            if src is None:
                notice = "no volume in this session yet"
            elif src.prediction is None:
                notice = f"no prediction of {src.name} yet"
            else:
                view = replace(initial_view(src, width, height), overlay=PREDICTION_OVERLAY)
                z = view.pos(src)
                strips = halfblock.to_strips(build_frame(src, view, width, height))
                caption = f"{src.name} · {NORMAL_NAME[view.axis]} {z}/{src.depth(view.axis) - 1} · prediction"
        except Exception as e:  # an unreadable volume or prediction must not take the app down
            notice = f"cannot show the prediction: {e if isinstance(e, FibError) else f'{type(e).__name__}: {e}'}"
        if not worker.is_cancelled:
            self.post_message(self.Rendered(strips, notice, caption))

    def on_prediction_preview_rendered(self, message: Rendered) -> None:
        self.strips, self.notice, self.caption = message.strips, message.notice, message.caption
        self.border_subtitle = self.caption or None
        self.frames += 1
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if y < len(self.strips):
            return self.strips[y].crop_extend(0, width, BACKGROUND_STYLE)
        if not self.strips and self.notice and y == self.size.height // 2:
            style = self.rich_style + Style(dim=True)
            return Strip([Segment(self.notice[:width].center(width), style)], width)
        return Strip.blank(width, self.rich_style if not self.strips else BACKGROUND_STYLE)

