"""Proofreading the prediction's objects in the viewer (Pilot): cycle, accept, reject, mark missed, commit."""

from __future__ import annotations

import numpy as np
import pytest
from test_paint import SHAPE, log_actions, make_session, open_viewer, painted_crop, status, wait_for

from fibtui.tui.app import FibApp
from sessions import annotations, jobs
from sessions.jobfiles import atomic_write_json
from sessions.volumes import omezarr
from sessions.workspace import open_session

BIG = (slice(6, 10), slice(20, 28), slice(20, 28))      # 256 voxels, p = 0.9
SMALL = (slice(6, 8), slice(40, 44), slice(40, 44))     # 32 voxels, p = 0.6: the more uncertain one


@pytest.fixture
def predicted(root):
    s = open_session(root)
    job = jobs.create(s, 1, "predict", {"volume": {"name": "vol"}}, "local")
    pred = omezarr.create(jobs.job_dir(s, job) / "prediction.ome.zarr", SHAPE, (8, 8, 8))
    p = np.zeros(SHAPE, np.uint8)
    p[BIG], p[SMALL] = 230, 153
    pred.levels[0][:] = p
    omezarr.build_pyramid(pred)
    atomic_write_json(jobs.job_dir(s, job) / "result.json", {"status": "completed", "output": "prediction.ome.zarr"})
    jobs.finish(s, job, "COMPLETED")
    s.close()
    return root


@pytest.fixture
def root(tmp_path):
    return make_session(tmp_path)


def test_components_sizes_centroids_and_uncertainty():
    p = np.zeros(SHAPE, np.uint8)
    p[BIG], p[SMALL] = 230, 153
    lab, objs = annotations.components(p)
    by_size = annotations.order(objs, "size")
    assert [o["voxels"] for o in by_size] == [256, 32]
    assert by_size[0]["centroid"] == pytest.approx((7.5, 23.5, 23.5))
    assert [o["voxels"] for o in annotations.order(objs, "uncertainty")] == [32, 256]
    assert annotations.not_target_class(["bg", "mito"], "mito") == 1
    assert annotations.not_target_class(["nucleus", "pore", "background"], "pore") == 3


async def test_reject_accept_and_missed_become_a_crop_and_log_entries(predicted):
    root = predicted
    app = FibApp(root, refresh_s=5)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_viewer(app, pilot)
        await pilot.press("full_stop")
        await wait_for(pilot, lambda: screen.objects is not None and screen.object_i == 0)
        assert "object 1/2" in status(screen) and "256 voxels" in status(screen)
        assert screen.view.focus[1:] == pytest.approx((23.5, 23.5))
        box = screen.ann.box                      # the proofreading region became the crop box
        assert box.offset[0] == 4 and box.shape[0] == 9
        await pilot.press("n")                    # reject the big one: not-target (bg = 1); moves on
        assert screen.object_i == 1 and "object 2/2" in status(screen)
        await pilot.press("y")                    # accept the small one: mito (2)
        await pilot.press("u", "U")               # a decision undoes and redoes like a stroke
        assert [d["decision"] for d in screen.ann.decisions] == ["rejected", "accepted"]
        screen.cursor = (50, 10)
        await pilot.press("m")                    # missed object at the cursor (z of the view)
        z = screen.view.pos(screen.source)
        await pilot.press("C")
        await wait_for(pilot, lambda: "committed" in status(screen))
    row, arr = painted_crop(root)
    off = tuple(int(v) for v in row["offset"].split(","))
    want = np.zeros(arr.shape, np.uint8)
    shift = lambda sl: tuple(slice(s.start - o, s.stop - o) for s, o in zip(sl, off))  # noqa: E731
    want[shift(BIG)], want[shift(SMALL)] = 1, 2
    want[z - off[0], 50 - off[1], 10 - off[2]] = 2
    assert np.array_equal(arr, want)
    log = {e["action"]: e for e in log_actions(root)}
    assert log["object rejected"]["params"]["voxels"] == 256 and log["object rejected"]["params"]["crop"] == row["id"]
    assert log["object accepted"]["params"]["voxels"] == 32
    assert log["missed object marked"]["params"]["class"] == 2
    assert log["crop painted"]["params"]["decisions"] == 3


async def test_objects_without_a_prediction_say_so(root):
    app = FibApp(root, refresh_s=5)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_viewer(app, pilot)
        await pilot.press("full_stop")
        assert "no prediction yet" in status(screen)
        assert screen.ann is None


@pytest.fixture
def trained(root):
    """A completed round-1 training whose model file is a tiny untrained U-Net."""
    import torch

    from remote.checkpoints import MODEL, save
    from remote.model import UNet3D, UNetConfig

    torch.manual_seed(0)
    cfg = UNetConfig(levels=2, base=4, voxel_size=(8.0, 8.0, 8.0))
    model = UNet3D(cfg)
    s = open_session(root)
    job = jobs.create(s, 1, "train", {"volume": {"name": "vol"}}, "local")
    save({"model": model.state_dict(), "config": cfg.to_dict()}, jobs.job_dir(s, job) / MODEL)
    atomic_write_json(jobs.job_dir(s, job) / "result.json", {"status": "completed", "checkpoint": MODEL})
    jobs.finish(s, job, "COMPLETED")
    s.close()
    return root, job["id"]


async def test_preview_overlays_the_rounds_model_in_view(trained):
    import torch

    from remote.checkpoints import load_model
    from remote.predict import predict_block, receptive_radius
    from sessions.volumes import catalog

    root, job_id = trained
    app = FibApp(root, refresh_s=5)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_viewer(app, pilot)
        await pilot.press("P")
        await pilot.press("j")                     # keys keep working while the preview runs
        await wait_for(pilot, lambda: screen.preview is not None, timeout=60)
        assert f"preview: {job_id} (round 1) at " in status(screen)
        box, prob = screen.preview["box"], screen.preview["prob"]
    s = open_session(root)
    raw = catalog.open_volume(s, "vol").levels[0]
    model_file = jobs.job_dir(s, jobs.get(s, job_id)) / "model.pt"
    model, _ = load_model(model_file)
    from remote.preview import find_model
    assert find_model(s, str(model_file)).label == "file model.pt"          # an exported model file
    assert find_model(s, job_id).path == model_file                         # any training of the session
    s.close()
    model.eval()
    want = predict_block(model, raw, box, receptive_radius(model), model.cfg.divisor, torch.device("cpu"))
    assert prob.shape == box.shape and np.array_equal(prob, want)


async def test_preview_without_a_model_says_so_and_big_regions_are_refused(root):
    from remote.preview import find_model, preview
    from sessions.errors import FibError
    from sessions.geometry import Box

    app = FibApp(root, refresh_s=5)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_viewer(app, pilot)
        await pilot.press("P")
        await wait_for(pilot, lambda: "Preview: no model to preview yet" in status(screen))
        assert screen.preview is None
    s = open_session(root)
    with pytest.raises(FibError, match="neither a model file nor a completed training"):
        find_model(s, "r9-train-1")
    s.close()
    with pytest.raises(FibError, match="over the preview bound of 100"):
        preview(root / "nowhere.pt", None, Box((0, 0, 0), (1, 20, 20)), max_voxels=100)
