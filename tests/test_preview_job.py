"""A region over the in-process preview bound goes to the executor as a small preview job (kind `preview`).

Real parts throughout: a SQLite session, zarr volumes, a model file (a tiny U-Net with random weights:
equality with the whole-volume prediction does not need a trained one), and real local job processes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import blobs_volume, db_snapshot, run_cli
from test_paint import make_session, open_viewer, status, wait_for

from fibtui.actions import Context, invoke
from fibtui.tui.app import FibApp
from fibtui.tui.screens.dialogs import ConfirmScreen
from fibtui.tui.screens.viewer import ViewerScreen
from remote.dispatch import Dispatcher
from sessions import interventions, jobs, rounds
from sessions.errors import FibError
from sessions.geometry import Box
from sessions.jobfiles import atomic_write_json, read_events
from sessions.volumes import omezarr
from sessions.workspace import init_session, open_session

SHAPE = (32, 256, 128)                         # 2 × 2 × 1 blocks of 16,128,128
BLOCK = "16,128,128"
REGION = "10:20,0:50,0:64"                     # overlaps blocks 0_0_0 and 16_0_0 only


def add_model(root, volume: str) -> str:
    """A completed round-1 training whose model file is a tiny U-Net (random weights); its job id."""
    import torch

    from remote.checkpoints import MODEL, save
    from remote.model import UNet3D, UNetConfig
    from sessions.volumes import catalog

    torch.manual_seed(0)
    cfg = UNetConfig(levels=2, base=4, voxel_size=(8.0, 8.0, 8.0))
    s = open_session(root)
    vol = rounds.volume_spec(s, catalog.get_volume(s, volume))
    job = jobs.create(s, 1, "train", {"volume": vol, "target_name": "mito"}, "local")
    save({"model": UNet3D(cfg).state_dict(), "config": cfg.to_dict()}, jobs.job_dir(s, job) / MODEL)
    atomic_write_json(jobs.job_dir(s, job) / "result.json", {"status": "completed", "checkpoint": MODEL})
    jobs.finish(s, job, "COMPLETED")
    s.close()
    return job["id"]


def volume_session(tmp_path, shape=SHAPE):
    """A session with volume `vol` and round 1, no model yet."""
    from sessions.volumes import catalog

    s = init_session(tmp_path / "s")
    catalog.write_volume(s, "vol", blobs_volume(shape, seed=3)[0], (8, 8, 8), source="test")
    rounds.new_round(s)
    s.close()
    return tmp_path / "s"


@pytest.fixture
def modelled(tmp_path):
    root = volume_session(tmp_path)
    return root, add_model(root, "vol")


def whole_volume(spec: dict, tmp_path) -> omezarr.Multiscale:
    """The same spec without its region, run in this process: the whole-volume prediction."""
    from remote import predict

    d = tmp_path / "whole"
    d.mkdir()
    predict.run({k: v for k, v in spec.items() if k != "region"}, d)
    return omezarr.open_multiscale(d / "prediction.ome.zarr")


def test_preview_job_predicts_the_overlapping_blocks_only_and_is_not_the_prediction(modelled, tmp_path):
    root, train_id = modelled
    out = run_cli("round", "preview", "--session", root, "--region", REGION, "--block", BLOCK, "--threads", "1",
                  "--json")
    assert out.returncode == 0, out.stderr
    job = json.loads(out.stdout)
    assert job["kind"] == "preview" and job["state"] == "COMPLETED" and job["id"] == "r1-preview-1"
    s = open_session(root)
    d = jobs.job_dir(s, job)
    spec, res = jobs.spec(s, job), jobs.result(s, job)
    assert spec["region"] == {"offset": [10, 0, 0], "shape": [10, 50, 64]} and spec["train_job"] == train_id
    assert res["region"] == spec["region"] and res["blocks"] == 2
    assert set((d / "blocks.done").read_text().split()) == {"0_0_0", "16_0_0"}
    got = omezarr.open_multiscale(d / res["output"])
    want = whole_volume(spec, tmp_path)
    assert got.levels[0].shape == SHAPE                    # the whole volume's shape, only two blocks written
    done = (slice(0, 32), slice(0, 128), slice(0, 128))
    np.testing.assert_array_equal(got.levels[0][done], want.levels[0][done])    # voxel for voxel
    assert not got.levels[0][:, 128:].any()                # the other blocks were never predicted
    assert all(not lvl[...].any() for lvl in got.levels[1:]) and want.levels[1][...].any()   # no pyramid
    entry = next(e for e in interventions.entries(s) if e["action"] == "job submitted")
    assert entry["params"]["kind"] == "preview" and entry["params"]["region"] == REGION and entry["via"] == "cli"

    # never the round's prediction: evaluation, suggestions and the viewer's overlay look for kind predict
    from sessions.suggest import predictions
    from sessions.volumes.slices import latest_prediction

    assert predictions(s, "vol") == [] and latest_prediction(s, "vol") is None
    with pytest.raises(FibError, match="round 1 has no completed predict job"):
        rounds.eval_spec(s, rounds.get(s, 1))
    s.close()
    ev = run_cli("round", "eval", "--session", root)
    assert ev.returncode != 0 and "round 1 has no completed predict job (not run)" in ev.stderr


def test_a_second_run_skips_the_blocks_its_ledger_holds(modelled, tmp_path):
    from remote import predict, preview

    root, _ = modelled
    s = open_session(root)
    spec = preview.job_spec(s, Box((10, 0, 0), (10, 50, 64)), None, round_n=1, volume="vol", block=(16, 128, 128),
                            threads=1)
    s.close()
    d = tmp_path / "job"
    d.mkdir()
    predict.run(spec, d)
    store = omezarr.open_multiscale(d / "prediction.ome.zarr", mode="r+").levels[0]
    first = store[...]
    (d / "blocks.done").write_text("0_0_0\n")              # as if killed after its first block
    store[0:16, 0:128, 0:128] = 7                          # marks: a done block is not predicted again
    store[16:32, 0:128, 0:128] = 0
    res = predict.run(spec, d)
    assert res["blocks"] == 2 and res["region"] == spec["region"]
    again = omezarr.open_multiscale(d / "prediction.ome.zarr").levels[0]
    assert (again[0:16, 0:128, 0:128] == 7).all()
    np.testing.assert_array_equal(again[16:32, 0:128, 0:128], first[16:32, 0:128, 0:128])
    events = read_events(d)[0]
    assert [e["step"] for e in events if e["type"] == "resumed"] == [1]
    assert [e["step"] for e in events if e["type"] == "progress"] == [1, 2, 2]   # first run 1, 2; then block 2
    assert set((d / "blocks.done").read_text().split()) == {"0_0_0", "16_0_0"}


BAD = [
    ({"region": "0:40,0:10,0:10"}, "--region 0:40,0:10,0:10: outside volume 'vol' (0:32,0:256,0:128); give a region inside it"),
    ({"region": "5:5,0:10,0:10"}, "--region '5:5,0:10,0:10': expected z0:z1,y0:y1,x0:x1 with start < stop"),
    ({"region": "0:4,0:10,0:10", "model": "r9-train-1"}, "--model r9-train-1: neither a model file nor a completed"),
    ({"region": "0:4,0:10,0:10", "volume": "other"}, "volume 'other' not in this session"),
    ({}, "--region: required"),
]


@pytest.mark.parametrize("raw,message", BAD, ids=["outside", "empty", "unknown-model", "unknown-volume", "none"])
def test_bad_input_is_one_line_and_writes_nothing(modelled, raw, message):
    root, _ = modelled
    before = db_snapshot(root)
    s = open_session(root)
    with pytest.raises(FibError) as e:
        invoke(s, "preview_job", raw, Context())
    s.close()
    assert message in str(e.value) and "\n" not in str(e.value)
    assert db_snapshot(root) == before


def test_an_empty_box_and_no_model_yet_are_refused(tmp_path):
    from remote import preview

    root = volume_session(tmp_path)
    before = db_snapshot(root)
    s = open_session(root)
    with pytest.raises(FibError, match="--region .*: empty; give z0:z1"):
        preview.job_spec(s, Box((0, 0, 0), (0, 4, 4)), None, round_n=1, volume="vol")
    with pytest.raises(FibError, match="no model to preview yet: train one first") as e:
        invoke(s, "preview_job", {"region": "0:4,0:10,0:10"}, Context())
    s.close()
    assert "\n" not in str(e.value) and db_snapshot(root) == before
    out = run_cli("round", "preview", "--session", root, "--region", "0:4,0:10,0:10")
    assert out.returncode != 0 and "no model to preview yet" in out.stderr and db_snapshot(root) == before


# ---------------------------------------------------------------- the viewer: P over the bound → a job → overlay
@pytest.fixture
def viewer_root(tmp_path, monkeypatch):
    """test_paint's session (16,64,64) with a model; a preview bound of 1,000 voxels (the view holds ~4,000)."""
    import remote.preview

    monkeypatch.setattr(remote.preview, "MAX_VOXELS", 1000)
    root = make_session(tmp_path)
    return root, add_model(root, "vol")


async def ask_and_submit(app, pilot, screen: ViewerScreen) -> None:
    await pilot.press("P")
    await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), timeout=30)
    assert "over the 1,000 preview bound: send it to the executor as a preview job?" in str(
        app.screen.query_one(".question").content)
    await pilot.press("y")
    await wait_for(pilot, lambda: screen.preview_job is not None, timeout=60)
    assert "r1-preview-1" in status(screen) and screen.preview_timer is not None


async def test_view_over_the_bound_becomes_a_job_and_its_result_is_overlaid(viewer_root):
    import torch

    from remote.checkpoints import load_model
    from remote.predict import predict_block, receptive_radius
    from sessions.volumes import catalog

    root, train_id = viewer_root
    app = FibApp(root, refresh_s=5)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_viewer(app, pilot)
        box = screen.box_at_view()
        assert box.size > 1000
        await ask_and_submit(app, pilot, screen)
        await pilot.press("j")                              # keys keep working while the job runs
        await wait_for(pilot, lambda: screen.preview_job is None, timeout=240)     # ended, one way or another
        assert screen.preview is not None, status(screen)
        assert f"preview: {train_id} (round 1) at " in status(screen) and "job r1-preview-1" in status(screen)
        assert screen.preview_job is None and screen.preview_timer is None     # polling stopped with the job
        assert set(screen.preview) == {"box", "prob", "label", "note"} and screen.preview["box"] == box
        prob = screen.preview["prob"]
    s = open_session(root)
    job = jobs.get(s, "r1-preview-1")
    assert job["kind"] == "preview" and job["state"] == "COMPLETED"
    raw = catalog.open_volume(s, "vol").levels[0]
    model, _ = load_model(jobs.job_dir(s, jobs.get(s, train_id)) / "model.pt")
    np.testing.assert_array_equal(prob, omezarr.open_multiscale(jobs.job_dir(s, job) / "prediction.ome.zarr")
                                  .levels[0][box.slices])                  # the overlay is the job's output
    s.close()
    model.eval()
    whole = Box((0, 0, 0), raw.shape)                       # one default block holds this small volume
    want = predict_block(model, raw, whole, receptive_radius(model), model.cfg.divisor, torch.device("cpu"))
    # the same computation in another process (its own torch threads): equal up to the last bit of rounding
    assert np.abs(prob.astype(int) - want[box.slices].astype(int)).max() <= 1


def break_model(root, train_id: str) -> None:
    """A model file that exists but cannot be loaded: every check passes, the job fails at once."""
    s = open_session(root)
    (jobs.job_dir(s, jobs.get(s, train_id)) / "model.pt").write_bytes(b"not a model")
    s.close()


async def test_a_failed_job_is_one_error_line(viewer_root):
    root, train_id = viewer_root
    break_model(root, train_id)
    app = FibApp(root, refresh_s=5)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_viewer(app, pilot)
        await ask_and_submit(app, pilot, screen)
        await wait_for(pilot, lambda: screen.preview_job is None, timeout=240)
        line = status(screen).splitlines()[-1]
        assert "Preview job r1-preview-1 FAILED: " in line and screen.tool_error
        assert screen.preview is None and screen.preview_timer is None


async def test_leaving_the_viewer_stops_polling(viewer_root):
    root, train_id = viewer_root
    break_model(root, train_id)
    app = FibApp(root, refresh_s=5)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_viewer(app, pilot)
        await ask_and_submit(app, pilot, screen)
        timer = screen.preview_timer
        await pilot.press("escape")
        await wait_for(pilot, lambda: not screen.is_attached)
        assert not isinstance(app.screen, ViewerScreen)
        assert screen.preview_timer is None and timer._task is None   # Textual's Timer: stopped
    s = open_session(root)
    assert Dispatcher(s).wait("r1-preview-1", poll_s=0.2)["state"] == "FAILED"   # the job ran on, by itself
    s.close()


async def test_no_model_is_one_line_before_any_question(tmp_path, monkeypatch):
    import remote.preview

    monkeypatch.setattr(remote.preview, "MAX_VOXELS", 1000)
    root = make_session(tmp_path)
    before = db_snapshot(root)
    app = FibApp(root, refresh_s=5)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_viewer(app, pilot)
        await pilot.press("P")
        await wait_for(pilot, lambda: "Preview job: no model to preview yet" in status(screen))
        assert isinstance(app.screen, ViewerScreen) and screen.preview_job is None
    after = db_snapshot(root)
    assert {k: v for k, v in after.items() if k != "_files"} == {k: v for k, v in before.items() if k != "_files"}
