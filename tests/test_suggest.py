"""Where to label next: foreground-aware random, uncertainty and disagreement boxes, never on held-out regions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

from sessions import jobs, labels, rounds
from sessions.errors import FibError
from sessions.geometry import Box
from sessions.jobfiles import atomic_write_json
from sessions.suggest import suggest
from sessions.volumes import catalog, omezarr
from sessions.workspace import init_session

SHAPE = (16, 128, 128)
HELD = Box((0, 0, 0), (16, 64, 64))


def add_prediction(s, p: np.ndarray) -> None:
    job = jobs.create(s, 1, "predict", {"volume": {"name": "vol"}}, "local")
    pred = omezarr.create(jobs.job_dir(s, job) / "p.ome.zarr", SHAPE, (8, 8, 8))
    pred.levels[0][:] = p
    omezarr.build_pyramid(pred)
    atomic_write_json(jobs.job_dir(s, job) / "result.json", {"status": "completed", "output": "p.ome.zarr"})
    jobs.finish(s, job, "COMPLETED")


@pytest.fixture
def sess(tmp_path):
    s = init_session(tmp_path / "s")
    catalog.write_volume(s, "vol", np.zeros(SHAPE, np.uint8), (8, 8, 8), source="test")
    rounds.new_round(s)
    labels.draw_holdout(s, "vol", 1, HELD.shape, within=HELD, seed=0)   # a quarter of the volume is held out
    yield s
    s.close()


def boxes(rows) -> list[Box]:
    return [Box(tuple(r["offset"]), tuple(r["shape"])) for r in rows]


def test_random_boxes_avoid_held_out_regions_and_each_other(sess):
    for seed in range(5):
        rows = suggest(sess, method="random", count=6, size=(4, 16, 16), seed=seed)
        bs = boxes(rows)
        assert len(bs) == 6 and not any(b.overlaps(HELD) for b in bs)
        assert not any(a.overlaps(b) for i, a in enumerate(bs) for b in bs[i + 1:])
        assert rows == suggest(sess, method="random", count=6, size=(4, 16, 16), seed=seed)   # reproducible


def test_foreground_share_uncertainty_and_disagreement(sess):
    with pytest.raises(FibError, match="needs a prediction"):
        suggest(sess, method="uncertainty")
    p = np.zeros(SHAPE, np.uint8)
    p[4:12, 80:112, 80:112] = 255       # confident foreground
    p[0:8, 70:100, 10:40] = 120         # uncertain (p ≈ 0.47)
    add_prediction(sess, p)
    rows = suggest(sess, method="random", count=6, size=(4, 16, 16), seed=1)
    fg = [b for b, r in zip(boxes(rows), rows) if r["foreground"]]
    assert len(fg) == 2 and all(b.overlaps(Box((4, 80, 80), (8, 32, 32))) for b in fg)
    top = boxes(suggest(sess, method="uncertainty", count=1, size=(4, 16, 16), seed=1))[0]
    assert top.overlaps(Box((0, 70, 10), (8, 30, 30)))
    with pytest.raises(FibError, match="needs two predictions"):
        suggest(sess, method="disagreement")
    q = p.copy()
    q[8:16, 100:128, 0:30] = 255        # the second round sees something new here
    add_prediction(sess, q)
    top = boxes(suggest(sess, method="disagreement", count=1, size=(4, 16, 16), seed=1))[0]
    assert top.overlaps(Box((8, 100, 0), (8, 28, 30)))


def test_cli_suggest_json(sess):
    r = run_cli("suggest", "--session", sess.root, "--count", "3", "--size", "4,16,16", "--seed", "2", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [x["rank"] for x in rows] == [1, 2, 3] and rows[0]["method"] == "random"
    r = run_cli("suggest", "--session", sess.root, "--method", "uncertainty")
    assert r.returncode == 2 and "needs a prediction" in r.stderr


async def test_the_viewer_lists_suggestions_and_enter_readies_a_crop_box(sess):
    import time

    from fibtui.tui.app import FibApp
    from fibtui.tui.screens.viewer import ViewerScreen
    from fibtui.tui.viewer.suggestions import SuggestionList

    async def wait_for(pilot, pred, timeout=10.0):
        end = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < end, "timed out waiting for the UI"
            await pilot.pause(0.02)

    app = FibApp(sess.root, refresh_s=5)
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("v")
        screen = app.screen
        assert isinstance(screen, ViewerScreen)
        await wait_for(pilot, lambda: screen.base is not None)
        await pilot.press("L")
        await wait_for(pilot, lambda: isinstance(app.screen, SuggestionList))
        first = app.screen.rows[0]
        await pilot.press("enter")
        assert app.screen is screen
        box = screen.ann.box
        assert list(box.offset) == first["offset"] and not box.overlaps(HELD)
        assert screen.view.focus == pytest.approx(tuple(o + s / 2 for o, s in zip(box.offset, box.shape)))
