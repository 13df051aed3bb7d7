"""The slice viewer: one plane of the volume in half-blocks, with labels and prediction,
and the curator's tools (paint, crop box, proofreading; fibtui/tui/viewer/tools.py).

The view is a focus point (level-0 voxels) plus an output pixel size (nm):
zooming changes the pixel size and the pyramid level follows it, so every
frame reads about as many voxels as the terminal has pixels. Frames are
built in an exclusive thread worker that waits a moment first, so holding a
key cancels the in-between frames instead of queueing their reads. The
worker hands back the image; the curator's overlays (strokes, boxes, brush,
object outline) are drawn over it on the UI thread, so a stroke shows at once.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import get_current_worker

from fibtui.tui.messages import BaseFrameReady, FrameReady, PendingWork, SourceReady
from fibtui.tui.screens.dialogs import ConfirmScreen
from fibtui.tui.viewer import overlay
from fibtui.tui.viewer.frame import (  # noqa: F401  re-exported: the viewer's public names
    AXIS_ORDER, BACKGROUND_STYLE, DEBOUNCE_S, MAX_MAGNIFICATION, MAX_SHRINK, NORMAL_NAME, OVERLAYS, PAN_FRACTION,
    ScreenMap, View, build_frame, fit_nm, initial_view, screen_span, view_at)
from fibtui.tui.viewer.slice_view import SliceView
from fibtui.tui.viewer.tools import CURATOR_ACTIONS, TOOL_BINDINGS, CuratorTools
from fibtui.tui.viewer.workers import ViewerWorkers
from fibtui.tui.widgets import halfblock
from sessions import annotations, labels, rounds
from sessions.annotations import Annotation
from sessions.errors import FibError
from sessions.volumes.slices import AXES, SliceSource
from sessions.workspace import Session, open_session

SLICE, ZOOM = Binding.Group("Slice"), Binding.Group("Zoom")


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


class ViewerScreen(CuratorTools, ViewerWorkers, Screen):
    BINDINGS = [
        Binding("j,pagedown", "slice(1)", "Next slice", key_display="j", group=SLICE),
        Binding("k,pageup", "slice(-1)", "Previous slice", key_display="k", group=SLICE),
        Binding("J", "slice(10)", "10 slices forward", show=False),
        Binding("K", "slice(-10)", "10 slices back", show=False),
        Binding("plus,equals_sign", "zoom(1)", "Zoom in", key_display="+", group=ZOOM),
        Binding("minus", "zoom(-1)", "Zoom out", key_display="-", group=ZOOM),
        Binding("left", "pan(0, -1)", "Pan", key_display="←↑↓→",
                tooltip="Arrow keys move the view (the brush in paint mode, the box in box edit)"),
        Binding("right", "pan(0, 1)", "Pan right", show=False),
        Binding("up", "pan(-1, 0)", "Pan up", show=False),
        Binding("down", "pan(1, 0)", "Pan down", show=False),
        Binding("a", "axis", "Axis", tooltip="Cycle the slicing plane xy → xz → yz"),
        Binding("o", "overlay", "Overlay", tooltip="Cycle labels+prediction / labels / prediction / none"),
        Binding("r", "reset", "Reset", tooltip="Whole slice, centred"),
        *TOOL_BINDINGS,
        Binding("escape,q", "back", "Back", key_display="esc", tooltip="Leave paint or box mode, else the viewer"),
    ]
    HELP_TITLE = "slice viewer"
    HELP = ("j/k step one slice of the level shown (J/K ten); the status line gives the level-0 position.\n"
            "Labels: crops and held-out regions in class colours. Prediction: magenta, stronger = more likely.\n"
            "Paint: b draws a crop box at the view, d/g/x pick paint/not-target/erase, space paints under the "
            "brush, t paints while moving, u/U undo/redo, C commits the box as a crop (unpainted = unlabelled). "
            "Painting is exact in level-0 voxels and refused when a pixel covers more than 4×4 voxels.\n"
            "Proofread: . and , cycle the prediction's objects, y accepts, n rejects, m marks a missed one.\n"
            "Work not yet committed is autosaved in the session and offered back on the next start.\n"
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
        self.base: BaseFrameReady | None = None
        self.shown: tuple | None = None      # (base, rgb) of the image on screen
        self.init_tools()

    def compose(self) -> ComposeResult:
        yield SliceView(id="slice")
        yield Static(id="status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#status", Static).update("opening volume…")
        self.open_source()

    def read_only(self) -> bool:
        return bool(getattr(self.app, "read_only", False))

    def slice_size(self):
        return self.query_one(SliceView).size

    @work(thread=True, exclusive=True, group="open")
    def open_source(self, reopen: bool = False) -> None:
        session = open_session(self.root)
        try:
            name = self.volume or pick_volume(session)
            if name is None:
                self.post_message(SourceReady(None, [], "no volume in this session: add one with `fibtui ingest`"))
                return
            classes = json.loads(session.meta("classes") or "[]")
            source = SliceSource.open(session, name)
            rnd = rounds.current(session, required=False)
            pending = None if reopen else Annotation.load(self.root)
            if pending is not None and session.db["crops"].count_where("source = ?", [annotations.source_tag(pending)]):
                annotations.discard(self.root)   # committed just before a crash: nothing to offer back
                pending = None
            self.post_message(SourceReady(source, classes))
            self.post_message(PendingWork(pending, rnd["n"] if rnd else None, rnd["target"] if rnd else None,
                                          labels.holdout_boxes(session, name), labels.crop_boxes(session, name),
                                          reopen))
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
        if self.view is None:
            size = self.query_one(SliceView).size
            self.view = (view_at(self.source, self.at, size.width, size.height) if self.at
                         else initial_view(self.source, size.width, size.height))
        self.refresh_bindings()
        self.request_frame()

    def on_pending_work(self, message: PendingWork) -> None:
        self.round_n, self.target = message.round_n, message.target
        if self.target in (self.class_names or []):   # the brush starts on the round's target class
            self.cls = self.class_names.index(self.target) + 1
        self.heldout, self.crops = message.heldout, message.crops
        self.compose_frame()
        ann = message.annotation
        if ann is None or ann.empty or self.read_only():
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.ann = ann
                self.say(f"restored: {ann.summary()}")
                self.compose_frame()
            else:
                aside = annotations.discard(self.root, keep=True)
                self.say(f"not restored; set aside as {aside.name if aside else 'nothing'}")

        self.app.push_screen(ConfirmScreen(f"Restore uncommitted work from the last viewer session?\n{ann.summary()}",
                                           yes="Restore"), answer)

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
            rgb = build_frame(self.source, view, width, height)
        except Exception as e:  # an unreadable chunk must not take the app down
            self.post_message(FrameReady([], f"cannot read this slice: {e}"))
            return
        if not worker.is_cancelled:
            self.post_message(BaseFrameReady(rgb, view))

    def on_frame_ready(self, message: FrameReady) -> None:
        self.query_one(SliceView).show(message.strips, message.error or "")

    def on_base_frame_ready(self, message: BaseFrameReady) -> None:
        self.base = message
        self.compose_frame()

    def compose_frame(self) -> None:
        """The last image with the curator's overlays, as Strips (UI thread; a few ms)."""
        if self.base is None or self.source is None:
            return
        view, rgb = self.base.view, self.base.rgb.copy()
        height, width = rgb.shape[0] // 2, rgb.shape[1]
        smap = ScreenMap.of(self.source, view, width, height)
        if self.preview is not None:
            overlay.draw_preview(rgb, smap, self.preview["box"], self.preview["prob"])
        for _, box in self.crops:
            overlay.draw_box(rgb, smap, box, overlay.CROP_COLOUR, dashed=True)
        for _, box in self.heldout:
            overlay.draw_box(rgb, smap, box, overlay.HELDOUT_COLOUR)
        if self.ann is not None:
            zyx, vals = self.ann.arrays()
            overlay.draw_painted(rgb, smap, zyx, vals)
            if self.ann.box is not None and not overlay.draw_box(rgb, smap, self.ann.box, overlay.BOX_COLOUR):
                _, ra, ca = AXES[view.axis]
                b = self.ann.box
                overlay.draw_rect(rgb, smap, b.offset[ra], b.stop[ra], b.offset[ca], b.stop[ca], overlay.BOX_COLOUR,
                                  dashed=True)  # the box is off this slice: its outline, dashed
        if self.objects and self.object_i >= 0:
            overlay.draw_mask_outline(rgb, smap, self.object_voxels(self.objects[self.object_i]),
                                      overlay.OBJECT_COLOUR)
        if self.tool is not None and self.cursor is not None:
            (r0, r1), (c0, c1) = self.brush_voxels(smap)
            overlay.draw_rect(rgb, smap, r0, r1, c0, c1,
                              overlay.PEN_DOWN_COLOUR if self.pen else overlay.CURSOR_COLOUR)
        self.show_rgb(rgb)

    def show_rgb(self, rgb: np.ndarray) -> None:
        """Rebuild only the Strips of the cell rows that differ from the last image shown (a stroke
        or a cursor step touches a few rows; re-encoding the whole frame costs ~10× more)."""
        view = self.query_one(SliceView)
        last, self.shown = self.shown, (self.base, rgb)
        if last is None or last[0] is not self.base or last[1].shape != rgb.shape or len(view.strips) * 2 < len(rgb):
            view.show(halfblock.to_strips(rgb))
            return
        h = rgb.shape[0] // 2
        diff = np.flatnonzero((rgb[: 2 * h] != last[1][: 2 * h]).reshape(h, -1).any(axis=1))
        strips = list(view.strips)
        for y in diff.tolist():
            strips[y] = halfblock.to_strips(rgb[2 * y: 2 * y + 2])[0]
        view.show_lines(strips, diff)

    def update_status(self) -> None:
        src, view = self.source, self.view
        if src is None or view is None:
            return
        level = src.choose_level(view.axis, view.out_nm)
        zoom = min(src.scales[0][a] for a in AXES[view.axis][1:]) / view.out_nm
        overlay_name = view.overlay_name
        if "prediction" in overlay_name and src.prediction is None:
            overlay_name += " (no prediction yet)"
        line = (f"{src.name} │ {view.axis} │ {NORMAL_NAME[view.axis]} {view.pos(src)}/{src.depth(view.axis) - 1}"
                f" │ level {level}/{src.levels - 1} │ zoom ×{zoom:.3g} │ overlay {overlay_name}")
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
        out = Text(line) + Text("\n") + legend
        tools = self.tools_line()
        if tools:
            out += Text("\n") + tools
        self.query_one("#status", Static).update(out)

    # -- actions ------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """View keys are shown dimmed and do nothing until a volume is open; the read-only view paints nothing
        (it may preview: a preview writes nothing)."""
        if action in CURATOR_ACTIONS and self.read_only():
            return False
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
        if self.box_edit:
            return self.move_box(d_rows, d_cols)
        if self.tool is not None:
            return self.move_cursor(d_rows, d_cols)
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
        self.cursor = None
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
        if self.tool is not None or self.box_edit:
            self.tool, self.box_edit, self.pen = None, False, False
            self.say("")
            self.compose_frame()
            return
        self.app.pop_screen()
