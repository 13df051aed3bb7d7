"""Pilot tests of the plot widgets and the prediction preview, on a real session for the preview."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
from textual.app import App, ComposeResult
from textual.containers import Horizontal, Vertical
from textual.geometry import Region

from fibtui.tui.screens.viewer import OVERLAYS, build_frame, initial_view
from fibtui.tui.widgets import halfblock
from fibtui.tui.widgets.plots import LossPlot, ScorePlot
from fibtui.tui.widgets.preview import PredictionPreview
from sessions import jobs, rounds
from sessions.jobfiles import atomic_write_json
from sessions.volumes import catalog, omezarr
from sessions.volumes.slices import SliceSource
from sessions.workspace import init_session, open_session

SHAPE = (12, 40, 56)


class PlotsApp(App):
    CSS = "Horizontal { height: 1fr; }"

    def __init__(self, root):
        super().__init__()
        self.root = root

    def compose(self) -> ComposeResult:
        with Vertical():
            with Horizontal():
                yield LossPlot(id="loss")
                yield ScorePlot(id="scores")
            yield PredictionPreview(self.root, id="preview")


async def wait_for(pilot, predicate, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out waiting for the UI"
        await pilot.pause(0.05)


def text(widget) -> str:
    """What the widget paints, as plain text."""
    w, h = widget.size
    return "\n".join(strip.text for strip in widget.render_lines(Region(0, 0, w, h)))


@pytest.fixture
def root(tmp_path):
    s = init_session(tmp_path / "s")
    s.close()
    return tmp_path / "s"


def add_volume(root) -> np.ndarray:
    s = open_session(root)
    raw = np.random.default_rng(3).integers(0, 256, SHAPE, dtype=np.uint8)
    catalog.write_volume(s, "vol", raw, (8, 8, 8), source="test")
    s.close()
    return raw


def add_prediction(root, raw: np.ndarray) -> None:
    """A COMPLETED predict job whose output is an OME-Zarr pyramid (as in test_slices)."""
    s = open_session(root)
    r = rounds.new_round(s)
    job = jobs.create(s, r["n"], "predict", {"volume": {"name": "vol"}}, "local")
    pred = omezarr.create(jobs.job_dir(s, job) / "prediction.ome.zarr", SHAPE, (8.0, 8.0, 8.0))
    p = np.zeros(SHAPE, np.uint8)
    p[:, 10:30, 10:40] = 230
    pred.levels[0][:] = p
    omezarr.build_pyramid(pred)
    atomic_write_json(jobs.job_dir(s, job) / "result.json", {"status": "completed", "output": "prediction.ome.zarr"})
    jobs.finish(s, job, "COMPLETED")
    s.close()


CURVES = {"loss": ([0, 100, 200, 300], [1.0, 0.6, 0.4, 0.31]), "lr": ([0, 100, 200, 300], [1e-3, 8e-4, 5e-4, 2e-4])}
SCORES = [{"round": 1, "job": "r1-evaluate-1", "iou": 0.60, "f1": 0.75, "precision": 0.7, "recall": 0.8,
           "object_f1": 0.5, "regions": [1, 2, 3]},
          {"round": 2, "job": "r2-evaluate-1", "iou": 0.701, "f1": 0.824, "precision": 0.8, "recall": 0.85,
           "object_f1": 0.64, "regions": [1, 2, 3]},
          {"round": 3, "job": "r3-evaluate-1", "iou": 0.612, "f1": 0.83, "precision": 0.7, "recall": 0.9,
           "object_f1": 0.71, "regions": [1, 2, 3]}]
WARNING = "round 3 IoU 0.612 < round 2 0.701 on the same held-out regions"


@pytest.mark.parametrize("size", [(80, 24), (200, 60)])
async def test_plots_with_and_without_data(root, size):
    app = PlotsApp(root)
    async with app.run_test(size=size) as pilot:
        loss, scores = app.query_one(LossPlot), app.query_one(ScorePlot)
        await pilot.pause()
        assert "no training loss yet" in text(loss) and "no evaluation yet" in text(scores)

        assert loss.show(CURVES, "r1-train-1 → r1-train-2")
        assert scores.show(SCORES, [WARNING])
        await pilot.pause()
        shown = text(loss)
        assert "loss 0.31" in shown and "lr 2.0e-04 (axis ×1e-3)" in shown and "it 300" in shown
        assert loss.builds >= 1 and "┤" in shown, "an axis is drawn"
        assert "r1-train-1 → r1-train-2" in shown, "the title names the attempts"
        if size[1] >= 60:
            assert "iteration" in shown
        shown = text(scores)
        assert "IoU 0.612" in shown and "F1 0.830" in shown and "r2" in shown
        if size[1] >= 60:
            assert "object F1 0.710" in shown and "▲" in shown, "object F1: its own series, in the header too"
        assert "round 3 IoU 0.612 < round 2 0.701" in shown, "the regression is spelled out"
        assert "✗" in shown, "the regressing round is marked"
        assert "round 3 IoU" in str(scores.border_subtitle)
        # the warning line is red
        lines = scores.render_lines(Region(0, 0, *scores.size))
        warn = next(s for s in lines if "⚠ round 3" in s.text)
        assert any(seg.style and seg.style.color and seg.style.color.triplet and seg.style.color.triplet.red > 200
                   and seg.style.color.triplet.green < 100 for seg in warn if "round" in seg.text)

        # the same data again: nothing to redraw
        builds = loss.builds, scores.builds
        assert not loss.show({k: (list(a), list(b)) for k, (a, b) in CURVES.items()}, "r1-train-1 → r1-train-2")
        assert not scores.show([dict(s) for s in SCORES], [WARNING])
        await pilot.pause()
        assert (loss.builds, scores.builds) == builds

        # back to nothing; one point; no lr at all
        assert loss.show({}, "")
        await pilot.pause()
        assert "no training loss yet" in text(loss)
        loss.show({"loss": ([5], [0.5])}, "r1-train-1")
        scores.show(SCORES[:1], [])
        await pilot.pause()
        assert "loss 0.5" in text(loss) and "lr" not in text(loss).split("·")[0]
        assert "IoU 0.600" in text(scores) and "⚠" not in text(scores) and scores.border_subtitle is None


async def test_plots_survive_tiny_sizes(root):
    app = PlotsApp(root)
    async with app.run_test(size=(30, 8)) as pilot:
        app.query_one(LossPlot).show(CURVES, "r1-train-1")
        app.query_one(ScorePlot).show(SCORES, [WARNING])
        await pilot.pause()
        for widget in (app.query_one(LossPlot), app.query_one(ScorePlot)):
            assert text(widget).strip()
        await pilot.resize_terminal(12, 4)
        await pilot.pause()
        await pilot.resize_terminal(120, 40)
        await pilot.pause()
        assert "┤" in text(app.query_one(LossPlot))


async def test_preview_notice_then_prediction(root):
    app = PlotsApp(root)
    async with app.run_test(size=(100, 40)) as pilot:
        preview = app.query_one(PredictionPreview)
        await wait_for(pilot, lambda: preview.frames >= 1)
        assert preview.strips == [] and "no volume in this session yet" in text(preview)

        raw = add_volume(root)
        preview.reload()
        await wait_for(pilot, lambda: "no prediction of vol yet" in text(preview))
        notice = next(s for s in preview.render_lines(Region(0, 0, *preview.size)) if s.text.strip())
        assert notice.cell_length == preview.size.width
        seg = next(seg for seg in notice if seg.text.strip())
        full = preview.rich_style.color.get_truecolor()
        fg, bg = seg.style.color.get_truecolor(), seg.style.bgcolor.get_truecolor()
        assert sum(abs(a - b) for a, b in zip(fg, bg)) < sum(abs(a - b) for a, b in zip(full, bg)), "dim"
        assert sum(1 for line in text(preview).splitlines() if line.strip()) == 1, "one line"

        add_prediction(root, raw)
        frames = preview.frames
        preview.reload()
        await wait_for(pilot, lambda: preview.frames > frames and preview.strips)
        w, h = preview.size
        assert len(preview.strips) == h
        assert all(s.cell_length == w and set(s.text) == {"▀"} for s in preview.strips)
        assert preview.caption == f"vol · z {SHAPE[0] // 2}/{SHAPE[0] - 1} · prediction"
        # exactly the viewer's frame: middle z, fitted, prediction over raw
        s = open_session(root)
        src = SliceSource.open(s, "vol")
        s.close()
        view = replace(initial_view(src, w, h), overlay=OVERLAYS.index("prediction"))
        frame = build_frame(src, view, w, h)
        assert [list(a) for a in preview.strips] == [list(b) for b in halfblock.to_strips(frame)]
        tinted = np.all(frame == halfblock.PREDICTION_COLOUR.astype(np.uint8), axis=-1)
        assert tinted.any(), "the prediction outline is drawn"

        # repainted at the new size on resize
        await pilot.resize_terminal(70, 30)
        await wait_for(pilot, lambda: preview.strips and preview.strips[0].cell_length == preview.size.width
                       and len(preview.strips) == preview.size.height)
        assert preview.size.width < w


async def test_score_plot_draws_object_f1_per_target(root):
    """Object F1 is a series of its own, one line per target class, and a round scored only on objects is shown."""
    app = PlotsApp(root)
    rows = [{**SCORES[0], "target": "envelope"}, {**SCORES[1], "target": "envelope"},
            {**SCORES[2], "target": "pore"}, {"round": 4, "job": "r4-evaluate-1", "iou": None, "f1": None,
                                              "object_f1": 0.9, "target": "pore", "regions": [1, 2, 3]}]
    async with app.run_test(size=(200, 60)) as pilot:
        scores = app.query_one(ScorePlot)
        drawn = []
        real = scores._plot.plot
        scores._plot.plot = lambda *a, **k: (drawn.append((list(a[0]), list(a[1]), k.get("color"))), real(*a, **k))
        assert scores.show(rows, [])
        await pilot.pause()
        shown = text(scores)
        assert "object F1 0.900" in shown and "r4 pore" in shown and "IoU" not in shown.splitlines()[0]
    from fibtui.tui.widgets.plots import OBJ_RGB

    obj = [(xs, ys) for xs, ys, c in drawn if c == OBJ_RGB]
    assert ([1, 2], [0.5, 0.64]) in obj and ([3, 4], [0.71, 0.9]) in obj  # envelope's line, pore's line
