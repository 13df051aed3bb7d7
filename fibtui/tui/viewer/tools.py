"""The curator's tools in the slice viewer: brush, crop box, undo/redo, commit, proofreading.

A mixin of `ViewerScreen` (the screen owns the frame plumbing); every tool
is a key, and so a palette entry. The brush paints exact level-0 voxels
of the slice shown: the pixels under the brush and every voxel whose
centre lies in them (one voxel per pixel when magnified). Rule for coarse
levels: painting is refused when one screen pixel covers more than
MAX_PAINT_STEP×MAX_PAINT_STEP voxels (the status line says so), so a
stroke never labels thousands of voxels the curator could not see.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from rich.text import Text
from textual.binding import Binding

import remote.preview
from fibtui.tui.viewer.frame import NORMAL_NAME, ScreenMap
from sessions import annotations
from sessions.annotations import Annotation
from sessions.errors import FibError
from sessions.geometry import Box
from sessions.volumes.slices import AXES

MAX_PAINT_STEP = 4          # level-0 voxels per screen pixel (per side) above which painting is refused
BRUSH_SIZES = (1, 2, 3, 5, 8)
PROOFREAD_DEPTH = 4         # slices each side of the view's slice in a proofreading region without a box
PROOFREAD_MAX_VOXELS = 2_000_000
PREVIEW_POLL_S = 2.0        # a pending preview job is polled this often (a refresh in a worker)
PAINT, BOX, PROOF = Binding.Group("Paint"), Binding.Group("Crop box"), Binding.Group("Proofread")
TOOLS = {"class": "paint", "not": "not the target", "erase": "erase"}

TOOL_BINDINGS = [
    Binding("d", "tool('class')", "Paint", group=PAINT, tooltip="Brush paints the picked class (arrows move it)"),
    Binding("g", "tool('not')", "Paint not-target", show=False,
            tooltip="Brush paints 'not the target' (the background of this round's target)"),
    Binding("x", "tool('erase')", "Erase", show=False, tooltip="Brush erases back to unlabelled"),
    Binding("c", "pick_class", "Pick class", show=False, tooltip="Cycle the class the brush paints"),
    Binding("right_square_bracket", "brush(1)", "Brush size", key_display="]", show=False,
            tooltip="Larger brush ([ smaller)"),
    Binding("left_square_bracket", "brush(-1)", "Smaller brush", key_display="[", show=False),
    Binding("space", "stroke", "Paint at cursor", key_display="space", show=False),
    Binding("t", "pen", "Pen down", show=False, tooltip="Toggle painting while the cursor moves"),
    Binding("b", "new_box", "New crop box", group=BOX, tooltip="A crop box at the view, one slice deep"),
    Binding("B", "box_edit", "Edit crop box", show=False,
            tooltip="Arrows move the box, shift+arrows resize it, < > change its depth"),
    Binding("shift+left", "resize(0, -1)", "Narrower box", show=False),
    Binding("shift+right", "resize(0, 1)", "Wider box", show=False),
    Binding("shift+up", "resize(-1, 0)", "Shorter box", show=False),
    Binding("shift+down", "resize(1, 0)", "Taller box", show=False),
    Binding("greater_than_sign", "depth(1)", "Deeper box", key_display=">", show=False),
    Binding("less_than_sign", "depth(-1)", "Thinner box", key_display="<", show=False),
    Binding("C", "commit", "Commit crop", show=False, tooltip="Store the crop box as a crop of the round"),
    Binding("u", "undo", "Undo", show=False, tooltip="Undo the last stroke or decision"),
    Binding("U", "redo", "Redo", show=False),
    Binding("full_stop", "object(1)", "Next object", key_display=".", group=PROOF,
            tooltip="Cycle the prediction's objects in the crop box (or around the view)"),
    Binding("comma", "object(-1)", "Previous object", key_display=",", show=False),
    Binding("s", "object_order", "Object order", show=False, tooltip="Objects by size or by uncertainty"),
    Binding("y", "decide('accepted')", "Accept object", show=False, tooltip="Its voxels become the target class"),
    Binding("n", "decide('rejected')", "Reject object", show=False, tooltip="Its voxels become not-target"),
    Binding("m", "missed", "Missed object here", show=False, tooltip="A target scribble at the cursor"),
    Binding("L", "suggest", "Where to label next", tooltip="Suggested crop boxes (never on held-out regions)"),
    Binding("P", "preview", "Preview", tooltip="The round's model on the region in view, in seconds (≤ 2 M voxels; "
            "a larger region can go to the executor as a preview job)"),
    Binding("ctrl+o", "preview_with", "Preview with model", show=False,
            tooltip="Preview with a training job of this session or an exported model file"),
]
CURATOR_ACTIONS = {"tool", "pick_class", "brush", "stroke", "pen", "new_box", "box_edit", "resize", "depth",
                   "commit", "undo", "redo", "object", "object_order", "decide", "missed", "suggest"}
# the preview writes nothing: the scientist's read-only view has it too


class CuratorTools:
    """State and actions of the brush, the box and proofreading (mixed into ViewerScreen)."""

    def init_tools(self) -> None:
        self.ann: Annotation | None = None
        self.tool: str | None = None
        self.box_edit = False
        self.pen = False
        self.brush_i = 0
        self.cls = 1
        self.cursor: tuple[int, int] | None = None   # level-0 (row, col) in the plane
        self.round_n: int | None = None
        self.target: str | None = None
        self.heldout: list[tuple[int, Box]] = []
        self.crops: list[tuple[int, Box]] = []
        self.objects: list[dict] | None = None
        self.object_labels = None
        self.object_offset = (0, 0, 0)
        self.object_i = -1
        self.object_by = "size"
        self.tool_note = ""
        self.tool_error = False
        self.preview: dict | None = None     # {"box", "prob", "label", "note"}
        self.preview_job: dict | None = None  # the pending preview job: {"id", "box", "label", "shown"}
        self.preview_timer = None            # polls it, only while one is pending
        self.preview_poll = None             # the poll worker running now (never two at once)
        self.executors: dict = {}            # the viewer's executors, kept across polls (one SSH connection)
        self.groups = itertools.count(1)
        self.group: int | None = None

    # -- helpers ------------------------------------------------------------------
    def say(self, text: str, error: bool = False) -> None:
        self.tool_note, self.tool_error = text, error
        self.update_status()

    def smap(self) -> ScreenMap:
        size = self.slice_size()
        return ScreenMap.of(self.source, self.view, size.width, size.height)

    def annotation(self) -> Annotation:
        if self.ann is None:
            self.ann = Annotation(self.source.name, self.source.shape(0))
        return self.ann

    def changed(self) -> None:
        """After every op: autosave (in a worker) and redraw the overlays now."""
        self.autosave(self.ann.snapshot())
        self.compose_frame()
        self.update_status()

    def box_at_view(self, depth: int = 1) -> Box:
        smap, (normal, ra, ca) = self.smap(), AXES[self.view.axis]
        shape = self.source.shape(0)
        lo, hi = [0, 0, 0], [0, 0, 0]
        for a, m in ((ra, smap.rows), (ca, smap.cols)):
            lo[a], hi[a] = m.voxels_of(0, m.n_px)
        lo[normal] = max(smap.pos - (depth - 1) // 2, 0)
        hi[normal] = min(lo[normal] + depth, shape[normal])
        return Box(tuple(lo), tuple(h - o for o, h in zip(lo, hi)))

    def ensure_box(self) -> Box:
        ann = self.annotation()
        if ann.box is None:
            ann.box = self.box_at_view()
            self.tool_note = f"crop box {ann.box} drawn at the view"
        return ann.box

    def ensure_cursor(self) -> tuple[int, int]:
        if self.cursor is None:
            _, ra, ca = AXES[self.view.axis]
            self.cursor = (int(self.view.focus[ra]), int(self.view.focus[ca]))
        return self.cursor

    def class_value(self, tool: str) -> int:
        if not self.class_names:
            raise FibError("no classes yet: the first crop (fibtui crop add --classes a,b,...) names them")
        if tool == "erase":
            return 0
        if tool == "not":
            return annotations.not_target_class(self.class_names, self.target_name())
        return self.cls

    def target_name(self) -> str:
        return self.target if self.target in self.class_names else self.class_names[self.cls - 1]

    def target_value(self) -> int:
        if not self.class_names:
            raise FibError("no classes yet: the first crop (fibtui crop add --classes a,b,...) names them")
        return self.class_names.index(self.target_name()) + 1

    def brush_voxels(self, smap: ScreenMap) -> tuple[tuple[int, int], tuple[int, int]]:
        """Level-0 (rows [r0, r1), cols [c0, c1)) under the brush."""
        b = BRUSH_SIZES[self.brush_i]
        out = []
        for m, v in zip((smap.rows, smap.cols), self.ensure_cursor()):
            if m.step <= 1:
                lo = v - (b - 1) // 2
                out.append((max(lo, 0), min(lo + b, m.n_vox)))
            else:
                p = m.pixel_of(v) - (b - 1) // 2
                out.append(m.voxels_of(p, p + b))
        return out[0], out[1]

    def paint_refusal(self, smap: ScreenMap) -> str | None:
        step = max(smap.rows.step, smap.cols.step)
        if step > MAX_PAINT_STEP:
            n = math.ceil(step)
            return (f"zoom in to paint: one screen pixel covers {n}×{n} voxels here "
                    f"(painting is exact up to {MAX_PAINT_STEP}×{MAX_PAINT_STEP})")
        return None

    def paint_brush(self, value: int, decision: dict | None = None, group: int | None = None) -> int:
        smap = self.smap()
        refusal = self.paint_refusal(smap)
        if refusal:
            raise FibError(refusal)
        box = self.ensure_box()
        (r0, r1), (c0, c1) = self.brush_voxels(smap)
        rr, cc = np.meshgrid(np.arange(r0, r1), np.arange(c0, c1), indexing="ij")
        zyx = smap.voxel_zyx(smap.pos, rr.ravel(), cc.ravel())
        inside = self.ann.inside_box(zyx)
        if not inside.any() and decision is None:
            raise FibError(f"the brush is outside the crop box {box}: move it in, or draw a new box (b)")
        return self.ann.apply(zyx, value, decision=decision, group=group)

    def guarded(self, fn, *args) -> None:
        try:
            fn(*args)
        except FibError as e:
            self.say(str(e), error=True)

    def tools_line(self) -> Text:
        parts = []
        if self.tool is not None:
            what = TOOLS[self.tool]
            if self.tool == "class" and self.class_names:
                what += f" {self.class_names[self.cls - 1]}"
            parts.append(f"{what} ⌀{BRUSH_SIZES[self.brush_i]}" + (" pen down" if self.pen else ""))
            if self.cursor is not None and self.base is not None:
                smap = self.smap()
                (r0, r1), (c0, c1) = self.brush_voxels(smap)
                _, ra, ca = AXES[self.view.axis]
                names = "zyx"
                parts.append(f"brush = {NORMAL_NAME[self.view.axis]} {smap.pos}, {names[ra]} {r0}:{r1}, "
                             f"{names[ca]} {c0}:{c1} ({(r1 - r0) * (c1 - c0)} voxels)")
        if self.box_edit:
            parts.append("box edit")
        if self.preview is not None:
            parts.append(self.preview["note"])
        if self.ann is not None:
            parts.append(f"{len(self.ann.vox)} painted, {len(self.ann.decisions)} decisions"
                         + (f", box {self.ann.box}" if self.ann.box else ""))
        line = Text(" │ ".join(parts))
        if self.tool_note and self.tool_note != (self.preview or {}).get("note"):  # the preview's note is shown once
            line += Text((" │ " if parts else "") + self.tool_note, style="bold red" if self.tool_error else "")
        return line

    # -- brush --------------------------------------------------------------------
    def action_tool(self, tool: str) -> None:
        self.tool, self.box_edit = tool, False
        self.ensure_cursor()
        what = TOOLS[tool] + (f" {self.class_names[self.cls - 1]}" if tool == "class" and self.class_names else "")
        self.say(f"{what}: arrows move the brush, space paints, t paints while moving, esc leaves")
        self.compose_frame()

    def action_pick_class(self) -> None:
        if not self.class_names:
            return self.say("no classes yet: the first crop (fibtui crop add --classes a,b,...) names them", True)
        self.cls = self.cls % len(self.class_names) + 1
        self.say(f"brush class {self.cls}: {self.class_names[self.cls - 1]}")

    def action_brush(self, delta: int) -> None:
        self.brush_i = int(np.clip(self.brush_i + delta, 0, len(BRUSH_SIZES) - 1))
        self.say(f"brush {BRUSH_SIZES[self.brush_i]} px")
        self.compose_frame()

    def action_stroke(self, group: int | None = None) -> None:
        if self.tool is None:
            self.tool = "class"

        def go():
            n = self.paint_brush(self.class_value(self.tool), group=group)
            self.tool_note, self.tool_error = f"{TOOLS[self.tool]}: {n} voxels", False
            self.changed()
        self.guarded(go)

    def action_pen(self) -> None:
        self.pen = not self.pen
        if self.tool is None:
            self.tool = "class"
        self.say("pen down: moving the cursor paints" if self.pen else "pen up")
        if self.pen:
            self.group = next(self.groups)
            self.action_stroke(self.group)

    def move_cursor(self, d_rows: int, d_cols: int) -> None:
        smap = self.smap()
        r, c = self.ensure_cursor()
        r, c = (int(np.clip(m.step_from(v, d), 0, m.n_vox - 1)) for m, v, d in
                ((smap.rows, r, d_rows), (smap.cols, c, d_cols)))
        self.cursor = (r, c)
        if not (0 <= smap.rows.pixel_of(r) < smap.rows.n_px and 0 <= smap.cols.pixel_of(c) < smap.cols.n_px):
            _, ra, ca = AXES[self.view.axis]
            focus = list(self.view.focus)
            focus[ra], focus[ca] = float(r), float(c)
            self.move(focus=tuple(focus))
        if self.pen:
            self.action_stroke(self.group)
        else:
            self.compose_frame()
            self.update_status()

    def paint_at_cell(self, x: int, y: int, start: bool) -> None:
        """Mouse: a press or a drag over cell (x, y) paints there (the cell's upper pixel)."""
        if self.view is None or self.read_only():
            return
        smap = self.smap()
        r, c = int(smap.rows.near[min(2 * y, smap.rows.n_px - 1)]), int(smap.cols.near[min(x, smap.cols.n_px - 1)])
        self.cursor = (int(np.clip(r, 0, smap.rows.n_vox - 1)), int(np.clip(c, 0, smap.cols.n_vox - 1)))
        if self.tool is None:
            self.tool = "class"
        if start:
            self.group = next(self.groups)
        self.action_stroke(self.group)

    # -- crop box ------------------------------------------------------------------
    def action_new_box(self) -> None:
        ann = self.annotation()
        ann.box = self.box_at_view()
        self.objects = None
        self.say(f"crop box {ann.box}: paint inside it; B edits it, C commits it")
        self.changed()

    def action_box_edit(self) -> None:
        self.ensure_box()
        self.box_edit = not self.box_edit
        self.say("box edit: arrows move, shift+arrows resize, < > depth, esc leaves" if self.box_edit else "")
        self.changed()

    def reshape_box(self, d_off, d_shape) -> None:
        box, shape = self.ensure_box(), self.source.shape(0)
        size = [max(s + d, 1) for s, d in zip(box.shape, d_shape)]
        size = [min(s, n) for s, n in zip(size, shape)]
        off = [int(np.clip(o + d, 0, n - s)) for o, d, n, s in zip(box.offset, d_off, shape, size)]
        self.ann.box = Box(tuple(off), tuple(size))
        self.objects = None
        self.tool_note, self.tool_error = f"crop box {self.ann.box}", False
        self.changed()

    def box_step(self, axis: int) -> int:
        smap = self.smap()
        _, ra, _ = AXES[self.view.axis]
        m = smap.rows if axis == ra else smap.cols
        return max(1, round(m.step * m.n_px / 16))

    def move_box(self, d_rows: int, d_cols: int) -> None:
        _, ra, ca = AXES[self.view.axis]
        d = [0, 0, 0]
        d[ra], d[ca] = d_rows * self.box_step(ra), d_cols * self.box_step(ca)
        self.reshape_box(d, (0, 0, 0))

    def action_resize(self, d_rows: int, d_cols: int) -> None:
        _, ra, ca = AXES[self.view.axis]
        d = [0, 0, 0]
        d[ra], d[ca] = d_rows * self.box_step(ra), d_cols * self.box_step(ca)
        self.reshape_box((0, 0, 0), d)

    def action_depth(self, delta: int) -> None:
        normal = AXES[self.view.axis][0]
        d = [0, 0, 0]
        d[normal] = delta
        self.reshape_box((0, 0, 0), d)

    # -- history and commit -----------------------------------------------------------
    def action_undo(self) -> None:
        op = self.ann.undo() if self.ann else None
        self.say(f"undone: {len(op.keys)} voxels" + (f" ({op.decision['decision']} object)" if op.decision else "")
                 if op else "nothing to undo")
        if op:
            self.changed()

    def action_redo(self) -> None:
        op = self.ann.redo() if self.ann else None
        self.say(f"redone: {len(op.keys)} voxels" if op else "nothing to redo")
        if op:
            self.changed()

    def action_commit(self) -> None:
        if self.ann is None or self.ann.empty:
            return self.say("nothing painted to commit: paint in a crop box first (b, then d and space)", True)
        self.say("committing the crop box…")
        self.commit_worker(self.ann.snapshot())

    # -- proofreading -------------------------------------------------------------------
    def proofread_box(self) -> Box:
        if self.ann is not None and self.ann.box is not None:
            return self.ann.box
        box = self.box_at_view(depth=2 * PROOFREAD_DEPTH + 1)
        self.annotation().box = box
        return box

    def action_object(self, delta: int) -> None:
        if self.source.prediction is None:
            return self.say("no prediction yet: run Predict (p on the session screen) first", True)
        if self.objects is None:
            box = self.proofread_box()
            if box.size > PROOFREAD_MAX_VOXELS:
                return self.say(f"proofreading region {box} has {box.size:,} voxels (at most "
                                f"{PROOFREAD_MAX_VOXELS:,}): zoom in or draw a smaller box (b)", True)
            self.say(f"finding the prediction's objects in {box}…")
            self.pending_delta = delta
            self.objects_worker(box, self.object_by)
            return
        if not self.objects:
            return self.say("no predicted object in the crop box", True)
        self.object_i = (self.object_i + delta) % len(self.objects)
        self.show_object()

    def on_objects_ready(self, message) -> None:
        if message.error:
            return self.say(message.error, True)
        self.objects, self.object_labels, self.object_offset = message.objects, message.labels, message.offset
        self.object_i = -1 if getattr(self, "pending_delta", 1) > 0 else 0
        self.action_object(getattr(self, "pending_delta", 1))

    def object_voxels(self, obj: dict) -> np.ndarray:
        return np.argwhere(self.object_labels == obj["id"]) + np.asarray(self.object_offset)

    def show_object(self) -> None:
        obj = self.objects[self.object_i]
        centre = tuple(o + c for o, c in zip(self.object_offset, obj["centroid"]))
        zyx = self.object_voxels(obj)
        normal = AXES[self.view.axis][0]
        focus = list(centre)
        # the slice through the object nearest its centroid
        focus[normal] = float(zyx[np.argmin(np.abs(zyx[:, normal] - centre[normal])), normal])
        _, ra, ca = AXES[self.view.axis]
        self.cursor = (int(centre[ra]), int(centre[ca]))
        self.say(f"object {self.object_i + 1}/{len(self.objects)} (id {obj['id']}): {obj['voxels']} voxels, "
                 f"uncertainty {obj['uncertainty']:.2f} — y accept, n reject, . next")
        self.move(focus=tuple(focus))

    def action_object_order(self) -> None:
        self.object_by = "uncertainty" if self.object_by == "size" else "size"
        if self.objects:
            self.objects = annotations.order(self.objects, self.object_by)
            self.object_i = -1
        self.say(f"objects by {self.object_by}")

    def action_decide(self, decision: str) -> None:
        if not self.objects or self.object_i < 0:
            return self.say("no object selected: . (next object) first", True)
        obj = self.objects[self.object_i]

        def go():
            value = self.target_value() if decision == "accepted" else self.class_value("not")
            self.ann.apply(self.object_voxels(obj), value,
                           decision={"decision": decision, "object": obj["id"], "class": value,
                                     "at": ",".join(str(int(round(v + o))) for v, o in
                                                    zip(obj["centroid"], self.object_offset))})
            self.tool_note, self.tool_error = f"object {obj['id']} {decision} ({obj['voxels']} voxels)", False
            self.changed()
            if self.object_i < len(self.objects) - 1:
                self.object_i += 1
                self.show_object()
        self.guarded(go)

    def action_missed(self) -> None:
        def go():
            r, c = self.ensure_cursor()
            smap = self.smap()
            value = self.target_value()
            n = self.paint_brush(value, decision={"decision": "missed", "object": None, "class": value,
                                                  "at": ",".join(map(str, smap.voxel_zyx(smap.pos, [r], [c])[0]))})
            self.tool_note, self.tool_error = f"missed object marked: {n} voxels of {self.target_name()}", False
            self.changed()
        self.guarded(go)

    # -- preview ------------------------------------------------------------------------
    def action_preview(self, model: str | None = None) -> None:
        """In process up to the bound; a larger region (not in the read-only view: a job is written) is
        offered to the executor as a preview job, whose result is overlaid when it ends."""
        box = self.box_at_view()
        if box.size > remote.preview.MAX_VOXELS and not self.read_only():
            return self.offer_preview_job(box, model or None)
        self.say(f"preview of {box} ({box.size:,} voxels) running…")
        self.preview_worker(box, model or None)

    def offer_preview_job(self, box: Box, model: str | None) -> None:
        if self.preview_job is not None:
            return self.say(f"preview job {self.preview_job['id']} is still running: its overlay shows when it ends "
                            "(c on the session screen cancels it)", True)
        self.say(f"checking a preview job for {box}…")
        self.preview_job_check(box, model)

    def ask_preview_job(self, ask: dict) -> None:
        """The checks passed (model, region): ask before a job is written."""
        from fibtui.tui.screens.dialogs import ConfirmScreen

        box = ask["box"]

        def answer(yes: bool | None) -> None:
            if yes:
                self.say(f"submitting a preview job for {box}…")
                self.submit_preview_job(ask["raw"], box)
            else:
                self.say("preview job not submitted")

        self.app.push_screen(ConfirmScreen(
            f"{box.size:,} voxels, over the {remote.preview.MAX_VOXELS:,} preview bound: send it to the executor as "
            f"a preview job?\nModel {ask['label']}, on {ask['executor']}; the overlay shows when the job ends.",
            yes="Submit"), answer)

    def follow_preview_job(self, job: dict) -> None:
        """Poll the submitted preview job every PREVIEW_POLL_S s until it ends (a timer only while one is pending)."""
        self.preview_job = {**job, "shown": None}
        if self.preview_timer is None:
            self.preview_timer = self.set_interval(PREVIEW_POLL_S, self.poll_preview_job)

    def end_preview_job(self) -> None:
        self.preview_job = None
        if self.preview_timer is not None:
            self.preview_timer.stop()
            self.preview_timer = None

    def on_unmount(self) -> None:
        """Leaving the viewer leaves no timer behind, and no open connection of its own."""
        self.end_preview_job()
        for ex in self.executors.values():
            ex.close()

    def action_preview_with(self) -> None:
        from fibtui.tui.screens.dialogs import Field, FormScreen

        def done(values: dict | None) -> None:
            if values:
                self.action_preview(values["model"])

        self.app.push_screen(FormScreen("Preview with which model?",
                                        [Field("model", "Training job id (e.g. r1-train-1) or model file:")],
                                        submit="Preview"), done)

    # -- where to label next -------------------------------------------------------------
    def action_suggest(self, method: str = "random") -> None:
        self.say(f"suggesting crop boxes ({method})…")
        self.suggest_worker(method)

    def on_suggestions(self, rows: list[dict], method: str) -> None:
        from fibtui.tui.viewer.suggestions import SuggestionList
        from sessions.suggest import METHODS

        def chosen(row: dict | None) -> None:
            if not row:
                return
            if row.get("next_method"):
                return self.action_suggest(METHODS[(METHODS.index(method) + 1) % len(METHODS)])
            box = Box(tuple(row["offset"]), tuple(row["shape"]))
            self.annotation().box = box
            self.objects, self.cursor = None, None
            self.say(f"crop box {box} ready (suggestion {row['rank']}, {method}): d paints, C commits")
            self.move(axis="xy", focus=tuple(o + s / 2 for o, s in zip(box.offset, box.shape)))
            self.changed()

        self.app.push_screen(SuggestionList(rows, method), chosen)
