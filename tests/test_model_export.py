"""An exported model reproduces the session's own prediction (TorchScript via torch, ONNX via onnxruntime)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from conftest import blobs_volume, run_cli
from remote.blocks import round_up
from remote.dispatch import Dispatcher
from remote.model_export import load, read_sidecar
from remote.sampling import read_padded
from sessions import jobs, labels, rounds
from sessions.geometry import Box
from sessions.volumes import catalog, omezarr
from sessions.workspace import init_session, open_session


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """A session whose round 1 trained (tiny net, one thread) and predicted the whole volume."""
    tmp = tmp_path_factory.mktemp("export")
    raw, gt = blobs_volume((16, 64, 64), seed=3)
    tifffile.imwrite(tmp / "v.tif", raw)
    tifffile.imwrite(tmp / "c.tif", gt[0:8, 0:32, 0:32] + 1, photometric="minisblack")
    s = init_session(tmp / "s")
    catalog.ingest(s, tmp / "v.tif", name="v", voxel_size=(8, 8, 8))
    rnd = rounds.new_round(s)
    labels.add_crop(s, 1, "v", tmp / "c.tif", (0, 0, 0), ["bg", "blob"])
    d = Dispatcher(s)
    for kind, spec in (("train", lambda: rounds.train_spec(s, rnd, target="blob", iterations=12, patch=(8, 32, 32),
                                                           batch=1, base=4, levels=2, threads=1)),
                       ("predict", lambda: rounds.predict_spec(s, rnd, threads=1))):
        job = d.wait(d.submit(1, kind, spec())["id"])
        assert job["state"] == "COMPLETED", job
    s.close()
    return tmp / "s"


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_reproduces_the_sessions_prediction(predicted, fmt):
    out = run_cli("model", "export", "--session", predicted, "--format", fmt, "--json", check=True)
    info = json.loads(out.stdout)
    side = read_sidecar(info["path"])
    assert side["voxel_size_nm"] == [8.0, 8.0, 8.0] and side["target_name"] == "blob"
    assert side["train_job"] == "r1-train-1" and "normalize" in side["preprocessing"]
    s = open_session(predicted)
    try:
        raw = omezarr.open_multiscale(s.path("volumes", "v.ome.zarr")).levels[0]
        pred = omezarr.open_multiscale(jobs.job_dir(s, jobs.get(s, "r1-predict-1")) / "prediction.ome.zarr").levels[0]
        entries = [e["action"] for e in s.db["interventions"].rows]
    finally:
        s.close()
    # one block as the prediction job reads it: the halo the sidecar names, extents on the divisor's grid
    halo, div = side["halo"], side["input"]["divisor"]
    core = Box((0, 0, 0), (16, 64, 64))
    lo = [o - round_up(h, d) for o, h, d in zip(core.offset, halo, div)]
    ext = [round_up(c + 2 * round_up(h, d), d) for c, h, d in zip(core.shape, halo, div)]
    x = read_padded(raw, Box(tuple(lo), tuple(ext))).astype(np.float32)[None, None]
    p = load(info["path"])(x)[0, 0]
    p = p[tuple(slice(-o, -o + c) for o, c in zip(lo, core.shape))]
    ours = np.round(p * 255).astype(np.int16)
    theirs = pred[core.slices].astype(np.int16)
    assert np.abs(ours - theirs).max() <= 1  # float rounding of two runtimes; 1/255 at most
    assert "model exported" in entries


def test_export_refuses_a_round_without_a_model(tmp_path):
    s = init_session(tmp_path / "s")
    raw, _ = blobs_volume((16, 64, 64), seed=1)
    catalog.write_volume(s, "v", raw, (8, 8, 8), source="test")
    rounds.new_round(s)
    s.close()
    out = run_cli("model", "export", "--session", tmp_path / "s")
    assert out.returncode == 2 and "round 1 has no completed train job" in out.stderr
    assert not list((tmp_path / "s" / "exports").iterdir())
