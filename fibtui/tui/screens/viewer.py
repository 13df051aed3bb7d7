"""The slice viewer: one plane of the volume in half-blocks, with labels and prediction.

The view is a focus point (level-0 voxels) plus an output pixel size (nm):
zooming changes the pixel size and the pyramid level follows it, so every
frame reads about as many voxels as the terminal has pixels. Frames are
built in an exclusive thread worker that waits a moment first, so holding a
key cancels the in-between frames instead of queueing their reads.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Footer, Static
from textual.worker import get_current_worker

from fibtui.tui.messages import FrameReady, SourceReady
from fibtui.tui.widgets import halfblock
from sessions.errors import FibError
from sessions.volumes.slices import AXES, SliceSource
from sessions.workspace import Session, open_session

OVERLAYS = ("labels+prediction", "labels", "prediction", "none")
AXIS_ORDER = ("xy", "xz", "yz")
NORMAL_NAME = {"xy": "z", "xz": "y", "yz": "x"}
DEBOUNCE_S = 0.03
MAX_MAGNIFICATION = 8     # screen pixels per level-0 voxel, at most
MAX_SHRINK = 4            # how far past "whole slice fits" one can zoom out
PAN_FRACTION = 1 / 8      # of the visible extent, per arrow key
SLICE, ZOOM = Binding.Group("Slice"), Binding.Group("Zoom")
BACKGROUND_STYLE = Style(bgcolor="rgb({},{},{})".format(*halfblock.BACKGROUND))


@dataclass(frozen=True)
class View:
    axis: str
    focus: tuple[float, float, float]   # z, y, x in level-0 voxels: the slice and the centre of the view
    out_nm: float                       # size of one screen pixel (half a cell) in nm
    overlay: int = 0

    def pos(self, source: SliceSource) -> int:
        normal = AXES[self.axis][0]
        return int(np.clip(self.focus[normal], 0, source.shape(0)[normal] - 1))

    @property
    def overlay_name(self) -> str:
        return OVERLAYS[self.overlay]


def fit_nm(source: SliceSource, axis: str, width: int, height: int) -> float:
    """Pixel size at which the whole slice fits a widget of width × height cells."""
    _, ra, ca = AXES[axis]
    shape, s0 = source.shape(0), source.scales[0]
    return max(shape[ra] * s0[ra] / max(2 * height, 1), shape[ca] * s0[ca] / max(width, 1))


def initial_view(source: SliceSource, width: int, height: int) -> View:
    focus = tuple(s / 2 for s in source.shape(0))
    return View("xy", focus, fit_nm(source, "xy", width, height))


def view_at(source: SliceSource, at: dict, width: int, height: int) -> View:
    """The view a message links to: its axis, slice and centre (level-0 z, y, x), and zoom
    (screen pixels per voxel, as the status line shows it); the whole slice when it has no zoom."""
    axis = at.get("axis") or "xy"
    focus = tuple(float(np.clip(at[k], 0, n - 1)) for k, n in zip("zyx", source.shape(0)))
    finest = min(source.scales[0][a] for a in AXES[axis][1:])
    zoom = at.get("zoom")
    out_nm = finest / min(zoom, MAX_MAGNIFICATION) if zoom else fit_nm(source, axis, width, height)
    return View(axis, focus, out_nm)


def screen_span(centre_nm: float, n: int, out_nm: float, px_nm: float) -> tuple[float, float]:
    """[start, stop) of `n` screen pixels of `out_nm` centred on `centre_nm`, in pixels of `px_nm`."""
    start = (centre_nm - n * out_nm / 2) / px_nm
    return start, start + n * out_nm / px_nm


def build_frame(source: SliceSource, view: View, width: int, height: int) -> np.ndarray:
    """RGB pixels (2·height × width) of the view: read what the screen covers at the level
    the source picks, resample to the screen, overlay."""
    _, ra, ca = AXES[view.axis]
    out, s0 = (2 * height, width), source.scales[0]
    centre = [view.focus[a] * s0[a] for a in (ra, ca)]
    region0 = tuple(v for c, n, a in zip(centre, out, (ra, ca)) for v in screen_span(c, n, view.out_nm, s0[a]))
    data, level = source.view(view.axis, view.pos(source), region0, out)
    # the same screen in pixels of the level read, counted from the data's first pixel
    px = source.pixel_nm(view.axis, level)
    rp, cp = (halfblock.plan(n, screen_span(c, n, view.out_nm, p)[0] - o, view.out_nm / p, m)
              for c, n, p, o, m in zip(centre, out, px, data.origin, data.raw.shape))
    overlay = view.overlay_name
    labels = data.labels if "labels" in overlay else None
    pred = data.prediction if "prediction" in overlay else None
    return halfblock.composite(
        halfblock.resample_mean(data.raw, rp, cp),
        halfblock.resample_nearest(labels, rp, cp) if labels is not None else None,
        halfblock.resample_mean(pred, rp, cp) if pred is not None else None,
        rp.valid[:, None] & cp.valid[None, :],
    )


def pick_volume(session: Session) -> str | None:
    """The volume curators label now: that of the newest crop, else the first one."""
    crop = next(session.db["crops"].rows_where(order_by="id desc", limit=1), None)
    if crop:
        return crop["volume"]
    first = next(session.db["volumes"].rows_where(order_by="name", limit=1), None)
    return first["name"] if first else None


def colour_note(color_system: str | None) -> str:
    """OpenSSH does not forward COLORTERM, so remote terminals often look like 256 colours."""
    if color_system == "truecolor":
        return "truecolor"
    colours = {"256": "256", "standard": "16", "windows": "16"}.get(color_system or "", "no")
    return f"{colours} colours: set COLORTERM=truecolor"


class SliceView(Widget):
    """Paints the last frame's Strips; painting is a list lookup, all work happens in the worker."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.strips: list[Strip] = []
        self.notice = "opening volume…"

    def show(self, strips: list[Strip], notice: str = "") -> None:
        self.strips, self.notice = strips, notice
        self.refresh()

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


class ViewerScreen(Screen):
    BINDINGS = [
        Binding("j,pagedown", "slice(1)", "Next slice", key_display="j", group=SLICE),
        Binding("k,pageup", "slice(-1)", "Previous slice", key_display="k", group=SLICE),
        Binding("J", "slice(10)", "10 slices forward", show=False),
        Binding("K", "slice(-10)", "10 slices back", show=False),
        Binding("plus,equals_sign", "zoom(1)", "Zoom in", key_display="+", group=ZOOM),
        Binding("minus", "zoom(-1)", "Zoom out", key_display="-", group=ZOOM),
        Binding("left", "pan(0, -1)", "Pan", key_display="←↑↓→", tooltip="Arrow keys move the view"),
        Binding("right", "pan(0, 1)", "Pan right", show=False),
        Binding("up", "pan(-1, 0)", "Pan up", show=False),
        Binding("down", "pan(1, 0)", "Pan down", show=False),
        Binding("a", "axis", "Axis", tooltip="Cycle the slicing plane xy → xz → yz"),
        Binding("o", "overlay", "Overlay", tooltip="Cycle labels+prediction / labels / prediction / none"),
        Binding("r", "reset", "Reset", tooltip="Whole slice, centred"),
        Binding("escape,q", "back", "Back", key_display="esc"),
    ]
    HELP_TITLE = "slice viewer"
    HELP = ("j/k step one slice of the level shown (J/K ten); the status line gives the level-0 position.\n"
            "Labels: crops and held-out regions in class colours. Prediction: magenta, stronger = more likely.\n"
            "Slow or washed-out colours over SSH? The terminal may only get 256 colours: "
            "export COLORTERM=truecolor if it supports more.")

    def __init__(self, root: Path, volume: str | None = None, at: dict | None = None):
        """`at`: a message's viewer link {volume, axis, z, y, x, zoom} to open at."""
        super().__init__()
        self.root, self.at = Path(root), at
        self.volume = volume or (at or {}).get("volume")
        self.source: SliceSource | None = None
        self.view: View | None = None
        self.class_names: list[str] = []

    def compose(self) -> ComposeResult:
        yield SliceView(id="slice")
        yield Static(id="status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#status", Static).update("opening volume…")
        self.open_source()

    @work(thread=True, exclusive=True, group="open")
    def open_source(self) -> None:
        session = open_session(self.root)
        try:
            name = self.volume or pick_volume(session)
            if name is None:
                self.post_message(SourceReady(None, [], "no volume in this session: add one with `fibtui ingest`"))
                return
            classes = json.loads(session.meta("classes") or "[]")
            self.post_message(SourceReady(SliceSource.open(session, name), classes))
        except Exception as e:  # an unreadable volume must not take the app down
            why = str(e) if isinstance(e, FibError) else f"{type(e).__name__}: {e}"
            self.post_message(SourceReady(None, [], why))
        finally:
            session.close()

    def on_source_ready(self, message: SourceReady) -> None:
        self.source, self.class_names = message.source, message.classes
        if self.source is None:
            self.query_one(SliceView).show([], message.error or "nothing to show")
            self.query_one("#status", Static).update(Text(message.error or "", style="bold red"))
            return
        size = self.query_one(SliceView).size
        self.view = (view_at(self.source, self.at, size.width, size.height) if self.at
                     else initial_view(self.source, size.width, size.height))
        self.refresh_bindings()
        self.request_frame()

    # -- frames ----------------------------------------------------------------

    def request_frame(self) -> None:
        if self.source is None or self.view is None:
            return
        self.update_status()
        size = self.query_one(SliceView).size
        if size.width and size.height:
            self.render_frame(self.view, size.width, size.height)

    @work(thread=True, exclusive=True, group="frame")
    def render_frame(self, view: View, width: int, height: int) -> None:
        worker = get_current_worker()
        time.sleep(DEBOUNCE_S)  # a newer request cancels this one before it reads anything
        if worker.is_cancelled:
            return
        try:
            strips = halfblock.to_strips(build_frame(self.source, view, width, height))
        except Exception as e:  # an unreadable chunk must not take the app down
            self.post_message(FrameReady([], f"cannot read this slice: {e}"))
            return
        if not worker.is_cancelled:
            self.post_message(FrameReady(strips))

    def on_frame_ready(self, message: FrameReady) -> None:
        self.query_one(SliceView).show(message.strips, message.error or "")

    def update_status(self) -> None:
        src, view = self.source, self.view
        level = src.choose_level(view.axis, view.out_nm)
        zoom = min(src.scales[0][a] for a in AXES[view.axis][1:]) / view.out_nm
        overlay = view.overlay_name
        if "prediction" in overlay and src.prediction is None:
            overlay += " (no prediction yet)"
        line = (f"{src.name} │ {view.axis} │ {NORMAL_NAME[view.axis]} {view.pos(src)}/{src.depth(view.axis) - 1}"
                f" │ level {level}/{src.levels - 1} │ zoom ×{zoom:.3g} │ overlay {overlay}")
        legend = Text()
        if "labels" in view.overlay_name:
            for i, name in enumerate(self.class_names):
                colour = halfblock.LABEL_COLOURS[i % len(halfblock.LABEL_COLOURS)].astype(int)
                legend.append("■ ", style="rgb({},{},{})".format(*colour)).append(f"{name}  ")
        if "prediction" in view.overlay_name:
            legend.append("■ ", style="rgb({},{},{})".format(*halfblock.PREDICTION_COLOUR.astype(int)))
            legend.append("prediction  ")
        note = colour_note(self.app.console.color_system)
        legend.append(note, style="dim" if note == "truecolor" else "bold yellow")
        self.query_one("#status", Static).update(Text(line) + Text("\n") + legend)

    # -- actions ------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """View keys are shown dimmed and do nothing until a volume is open."""
        return True if action == "back" or self.view is not None else None

    def move(self, **changes) -> None:
        self.view = replace(self.view, **changes)
        self.request_frame()

    def action_slice(self, delta: int) -> None:
        src, view = self.source, self.view
        level = src.choose_level(view.axis, view.out_nm)
        focus = list(view.focus)
        normal = AXES[view.axis][0]
        focus[normal] = float(np.clip(view.pos(src) + delta * src.step(view.axis, level), 0, src.depth(view.axis) - 1))
        self.move(focus=tuple(focus))

    def action_pan(self, d_rows: int, d_cols: int) -> None:
        _, ra, ca = AXES[self.view.axis]
        size = self.query_one(SliceView).size
        shape, s0 = self.source.shape(0), self.source.scales[0]
        focus = list(self.view.focus)
        for axis, d, extent in ((ra, d_rows, 2 * size.height), (ca, d_cols, size.width)):
            shift = max(extent * PAN_FRACTION * self.view.out_nm / s0[axis], 1.0)
            focus[axis] = float(np.clip(focus[axis] + d * shift, 0, shape[axis]))
        self.move(focus=tuple(focus))

    def action_zoom(self, direction: int) -> None:
        size = self.query_one(SliceView).size
        finest = min(self.source.scales[0][a] for a in AXES[self.view.axis][1:])
        lo = finest / MAX_MAGNIFICATION
        hi = max(fit_nm(self.source, self.view.axis, size.width, size.height) * MAX_SHRINK, lo)
        out_nm = self.view.out_nm / 2 if direction > 0 else self.view.out_nm * 2
        self.move(out_nm=float(np.clip(out_nm, lo, hi)))

    def action_axis(self) -> None:
        self.move(axis=AXIS_ORDER[(AXIS_ORDER.index(self.view.axis) + 1) % len(AXIS_ORDER)])

    def action_overlay(self) -> None:
        self.move(overlay=(self.view.overlay + 1) % len(OVERLAYS))

    def action_reset(self) -> None:
        size = self.query_one(SliceView).size
        _, ra, ca = AXES[self.view.axis]
        focus = list(self.view.focus)
        shape = self.source.shape(0)
        focus[ra], focus[ca] = shape[ra] / 2, shape[ca] / 2
        self.move(focus=tuple(focus), out_nm=fit_nm(self.source, self.view.axis, size.width, size.height))

    def action_back(self) -> None:
        self.app.pop_screen()
