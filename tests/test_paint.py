"""Painting in the slice viewer (Pilot): brush, erase, undo/redo, crop box, commit, autosave offered back."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tifffile
import zarr

from fibtui.actions import Context, invoke
from fibtui.tui.app import FibApp
from fibtui.tui.screens.dialogs import ConfirmScreen
from fibtui.tui.screens.viewer import SliceView, ViewerScreen
from sessions import annotations, interventions, labels, rounds
from sessions.annotations import Annotation
from sessions.errors import FibError
from sessions.geometry import Box
from sessions.workspace import init_session, open_session

SHAPE = (16, 64, 64)


@pytest.fixture
def root(tmp_path):
    return make_session(tmp_path)


def make_session(tmp_path):
    """A volume, round 1 (target mito) with one crop, one held-out region at z 14:16, y 0:16, x 48:64."""
    from sessions.volumes import catalog

    s = init_session(tmp_path / "s")
    raw = np.random.default_rng(1).integers(0, 256, SHAPE, dtype=np.uint8)
    catalog.write_volume(s, "vol", raw, (8, 8, 8), source="test")
    r = rounds.new_round(s)
    crop = np.ones((2, 8, 8), np.uint8)
    crop[0, 2:4, 2:4] = 2
    tifffile.imwrite(tmp_path / "crop.tif", crop, photometric="minisblack")
    labels.add_crop(s, r["n"], "vol", tmp_path / "crop.tif", (0, 0, 0), classes=["bg", "mito"])
    rounds.set_target(s, r["n"], "mito")
    labels.draw_holdout(s, "vol", 1, (2, 16, 16), within=Box((14, 0, 48), (2, 16, 16)), seed=0)
    s.close()
    return tmp_path / "s"


async def wait_for(pilot, predicate, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out waiting for the UI"
        await pilot.pause(0.02)


def status(screen) -> str:
    return str(screen.query_one("#status").content)


async def open_viewer(app, pilot) -> ViewerScreen:
    await pilot.press("v")
    screen = app.screen
    assert isinstance(screen, ViewerScreen)
    await wait_for(pilot, lambda: screen.base is not None and screen.round_n is not None)
    return screen


def painted_crop(root) -> tuple[dict, np.ndarray]:
    s = open_session(root)
    row = next(s.db["crops"].rows_where("source like 'painted:%'"))
    arr = zarr.open_array(str(s.path(row["path"])), mode="r")[:]
    s.close()
    return row, arr


def log_actions(root) -> list[dict]:
    s = open_session(root)
    out = interventions.entries(s)
    s.close()
    return out


def expected_dense(row: dict, voxels: dict) -> np.ndarray:
    off = tuple(int(v) for v in row["offset"].split(","))
    shape = tuple(int(v) for v in row["shape"].split(","))
    want = np.zeros(shape, np.uint8)
    for (z, y, x), v in voxels.items():
        want[z - off[0], y - off[1], x - off[2]] = v
    return want


async def test_paint_erase_undo_redo_commit_voxel_for_voxel(root):
    app = FibApp(root, refresh_s=5)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_viewer(app, pilot)
        await pilot.press("plus", "plus")            # magnified: one brush pixel = one voxel
        await wait_for(pilot, lambda: screen.base.view == screen.view)
        await pilot.press("b")                        # crop box at the view, one slice deep (z 8)
        box = screen.ann.box
        assert box.shape[0] == 1 and box.offset[0] == 8 and not box.overlaps(Box((14, 0, 48), (2, 16, 16)))
        await pilot.press("d")                        # paint: the brush starts on the target (mito)
        assert "paint mito" in status(screen) and "(1 voxels)" in status(screen)
        await pilot.press("space", "right", "space")  # (8,32,32), (8,32,33)
        await pilot.press("t", "down", "down", "t")   # pen down: (8,33,33), (8,34,33), one undo step
        await pilot.press("x", "space")               # erase (8,34,33)
        assert screen.ann.vox.get(screen.ann.pack([(8, 34, 33)])[0]) is None
        await pilot.press("u")                        # the erase undone
        await pilot.press("u")                        # the pen stroke undone
        assert len(screen.ann.vox) == 2
        await pilot.press("U")                        # and redone
        assert len(screen.ann.vox) == 4
        strips = screen.query_one(SliceView).strips
        assert strips and "4 painted" in status(screen)
        await pilot.press("C")
        await wait_for(pilot, lambda: "committed to round 1" in status(screen))
        assert screen.ann is None
    row, arr = painted_crop(root)
    assert row["round"] == 1 and row["labelled_voxels"] == 4
    want = expected_dense(row, {(8, 32, 32): 2, (8, 32, 33): 2, (8, 33, 33): 2, (8, 34, 33): 2})
    assert np.array_equal(arr, want)
    entry = [e for e in log_actions(root) if e["action"] == "crop painted"]
    assert len(entry) == 1 and entry[0]["subject_id"] == str(row["id"]) and entry[0]["via"] == "tui"
    assert entry[0]["params"]["labelled_voxels"] == 4
    assert not annotations.autosave_path(root).exists()


async def test_commit_refusals_are_one_line_and_change_nothing(root):
    s = open_session(root)
    crops_before, log_before = s.db["crops"].count, s.db["interventions"].count
    s.close()
    app = FibApp(root, refresh_s=5)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_viewer(app, pilot)
        await pilot.press("C")                        # nothing painted
        assert "nothing painted to commit" in status(screen)
        await pilot.press("J")                        # z 15: the held-out region's slices
        await pilot.press("b")
        await pilot.press("b")
        await pilot.press("space")
        await pilot.press("C")
        await wait_for(pilot, lambda: "overlaps held-out region 1" in status(screen))
        line = status(screen).split("\n")[-1]
        box = screen.ann.box
        # the CLI's refusal, word for word (labels.add_crop_array is add_crop's check)
        assert (f"Commit crop: crop {box} overlaps held-out region 1 [14:16, 0:16, 48:64]; training labels must "
                "stay out of the evaluation regions — move the crop") in line
        assert screen.ann is not None and len(screen.ann.vox) == 1   # the work stays, uncommitted
    s = open_session(root)
    assert s.db["crops"].count == crops_before and s.db["interventions"].count == log_before
    s.close()


def test_commit_action_refuses_outside_the_volume_and_empty_boxes(root):
    s = open_session(root)
    before = s.db["crops"].count
    ann = Annotation("vol", SHAPE, Box((8, 60, 60), (1, 8, 8)))
    ann.apply([(8, 61, 61)], 2)
    ann.save(root)
    with pytest.raises(FibError, match=r"lies outside volume 'vol'"):
        invoke(s, "commit_crop", {}, Context())
    ann = Annotation("vol", SHAPE, Box((8, 20, 20), (1, 8, 8)))
    ann.apply([(8, 21, 21)], 2)
    ann.undo()
    ann.save(root)
    with pytest.raises(FibError, match="nothing painted to commit"):
        invoke(s, "commit_crop", {}, Context())
    assert s.db["crops"].count == before and annotations.autosave_path(root).exists()
    s.close()


async def test_mouse_drag_paints_and_undoes_as_one_stroke(root):
    app = FibApp(root, refresh_s=5)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_viewer(app, pilot)
        await pilot.press("b", "d")
        await pilot.mouse_down(SliceView, offset=(40, 10))
        for x in range(41, 50):
            await pilot.hover(SliceView, offset=(x, 10))
        await pilot.mouse_up(SliceView, offset=(50, 10))
        n = len(screen.ann.vox)
        assert n >= 5 and all(v == 2 for v in screen.ann.vox.values())
        zyx, _ = screen.ann.arrays()
        assert set(zyx[:, 0]) == {8} and len(set(zyx[:, 1])) == 1     # one row of the slice shown
        await pilot.press("u")
        assert not screen.ann.vox


async def test_a_killed_viewers_autosave_is_offered_back_and_commits_the_same_voxels(root):
    app = FibApp(root, refresh_s=5)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_viewer(app, pilot)
        await pilot.press("plus", "plus", "b", "d", "space", "left", "space", "up", "space")
        painted = dict(screen.ann.vox)
        await wait_for(pilot, lambda: (a := Annotation.load(root)) is not None and a.vox == painted)
    # the app ends without committing (as a dropped connection would leave it); a new one starts
    app = FibApp(root, refresh_s=5)
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "3 painted voxels" in str(app.screen.question)
        await pilot.press("y")
        screen = app.screen
        assert isinstance(screen, ViewerScreen) and screen.ann.vox == painted
        await pilot.press("C")
        await wait_for(pilot, lambda: "committed" in status(screen))
    row, arr = painted_crop(root)
    ann = Annotation("vol", SHAPE)
    want = expected_dense(row, {tuple(int(v) for v in ann.unpack([k])[0]): v for k, v in painted.items()})
    assert np.array_equal(arr, want) and row["labelled_voxels"] == 3


async def test_declining_the_offer_sets_the_autosave_aside(root):
    ann = Annotation("vol", SHAPE, Box((8, 20, 20), (1, 8, 8)))
    ann.apply([(8, 21, 21)], 2)
    ann.save(root)
    app = FibApp(root, refresh_s=5)
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("escape")
        assert isinstance(app.screen, ViewerScreen) and app.screen.ann is None
        assert "set aside as autosave-declined-" in status(app.screen)
    assert not annotations.autosave_path(root).exists()
    assert len(list(annotations.autosave_path(root).parent.glob("autosave-declined-*.npz"))) == 1


async def test_read_only_viewer_paints_nothing(root):
    app = FibApp(root, refresh_s=5, read_only=True)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_viewer(app, pilot)
        await pilot.press("b", "d", "space", "C")
        assert screen.ann is None
    assert not annotations.autosave_path(root).exists()


def test_painting_is_refused_where_a_pixel_covers_more_than_4x4_voxels():
    from fibtui.tui.viewer.frame import AxisMap, ScreenMap
    from fibtui.tui.viewer.tools import CuratorTools

    fine = ScreenMap("xy", 0, AxisMap(0, 4.0, 60, 1000), AxisMap(0, 4.0, 100, 1000))
    coarse = ScreenMap("xy", 0, AxisMap(0, 8.0, 60, 1000), AxisMap(0, 8.0, 100, 1000))
    assert CuratorTools.paint_refusal(None, fine) is None
    assert CuratorTools.paint_refusal(None, coarse).startswith("zoom in to paint: one screen pixel covers 8×8 voxels")
    # a pixel contains exactly the voxels whose centres fall in it: pixels partition the voxels
    m = AxisMap(-3.3, 2.7, 40, 100)
    spans = [m.voxels_of(p, p + 1) for p in range(40)]
    covered = [v for a, b in spans for v in range(a, b)]
    assert covered == sorted(set(covered)) == list(range(covered[0], covered[-1] + 1))


async def test_painting_in_xz_maps_to_the_right_voxels(root):
    app = FibApp(root, refresh_s=5)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_viewer(app, pilot)
        await pilot.press("a", "plus", "plus")          # xz through y = 32, magnified
        await wait_for(pilot, lambda: screen.base.view == screen.view)
        await pilot.press("b")
        box = screen.ann.box
        assert box.offset[1] == 32 and box.shape[1] == 1   # one slice deep along y
        await pilot.press("d", "space", "down", "space")
        zyx, vals = screen.ann.arrays()
        assert sorted(map(tuple, zyx.tolist())) == [(8, 32, 32), (9, 32, 32)] and set(vals.tolist()) == {2}
        assert "brush = y 32, z 9:10, x 32:33 (1 voxels)" in status(screen)
