"""An exported model reproduces the session's own prediction (TorchScript via torch, ONNX via onnxruntime),
with its preprocessing inside or described beside it, and its bioimage.io package validates offline."""

from __future__ import annotations

import json
import socket
import sys
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import torch

from conftest import blobs_volume, db_snapshot, run_cli
from fibtui.cli import main
from remote.blocks import round_up
from remote.checkpoints import load_model, save
from remote.dispatch import Dispatcher
from remote.bioimageio import write_package
from remote.model_export import export, load, read_sidecar
from remote.model import UNet3D, UNetConfig
from remote.predict import block_halo, predict_block
from remote.preprocess import wrap
from remote.sampling import read_padded
from sessions import jobs, labels, rounds
from sessions.geometry import Box
from sessions.volumes import catalog, omezarr
from sessions.workspace import init_session, open_session

WHOLE = Box((0, 0, 0), (16, 64, 64))  # the test volume


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A session of three rounds, each a tiny net (one thread) trained from scratch on one preprocessing:
    1 none and 2 percentile, both predicted over the whole volume; 3 clahe, trained only."""
    tmp = tmp_path_factory.mktemp("export")
    raw, gt = blobs_volume((16, 64, 64), seed=3)
    tifffile.imwrite(tmp / "v.tif", raw)
    tifffile.imwrite(tmp / "c.tif", gt[0:8, 0:32, 0:32] + 1, photometric="minisblack")
    s = init_session(tmp / "s")
    catalog.ingest(s, tmp / "v.tif", name="v", voxel_size=(8, 8, 8))
    d = Dispatcher(s)
    for pre in ("none", "percentile", "clahe"):
        rnd = rounds.new_round(s)
        if pre == "none":
            labels.add_crop(s, 1, "v", tmp / "c.tif", (0, 0, 0), ["bg", "blob"])
        spec = rounds.train_spec(s, rnd, target="blob", iterations=12, patch=(8, 32, 32), batch=1, base=4, levels=2,
                                 threads=1, init="scratch", preprocess=pre)
        kinds = [("train", spec)] + ([("predict", None)] if pre != "clahe" else [])
        for kind, spec in kinds:
            job = d.wait(d.submit(rnd["n"], kind, spec or rounds.predict_spec(s, rnd, threads=1))["id"])
            assert job["state"] == "COMPLETED", job
    s.close()
    return tmp / "s"


def session_view(sdir, round_n) -> SimpleNamespace:
    """raw (level 0), vol (its path), model (the round's model file), pred (its stored prediction, None for
    round 3), entries (the interventions' actions)."""
    s = open_session(sdir)
    try:
        vol = s.path("volumes", "v.ome.zarr")
        pred = None
        if round_n != 3:
            job = jobs.get(s, f"r{round_n}-predict-1")
            pred = omezarr.open_multiscale(jobs.job_dir(s, job) / "prediction.ome.zarr").levels[0]
        return SimpleNamespace(raw=omezarr.open_multiscale(vol).levels[0], vol=vol, pred=pred,
                               model=jobs.job_dir(s, jobs.get(s, f"r{round_n}-train-1")) / "model.pt",
                               entries=[e["action"] for e in s.db["interventions"].rows])
    finally:
        s.close()


def exported_on(path, side, arr, core: Box) -> np.ndarray:
    """The exported model on `core` of `arr`, read as the prediction job reads a block (the sidecar's halo, extents
    on the divisor's grid), as uint8 p×255 like the stored prediction."""
    halo, div = side["halo"], side["input"]["divisor"]
    lo = [o - round_up(h, d) for o, h, d in zip(core.offset, halo, div)]
    ext = [round_up(c + 2 * round_up(h, d), d) for c, h, d in zip(core.shape, halo, div)]
    x = read_padded(arr, Box(tuple(lo), tuple(ext))).astype(np.float32)[None, None]
    p = load(path)(x)[0, 0][tuple(slice(c - o, c - o + n) for o, c, n in zip(lo, core.offset, core.shape))]
    return np.round(p * 255).astype(np.int16)


def export_cli(sdir, *args):
    out = run_cli("model", "export", "--session", sdir, *args, "--json", check=True)
    return json.loads(out.stdout), out.stderr


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_reproduces_the_sessions_prediction(trained, fmt):
    info, err = export_cli(trained, "--round", "1", "--format", fmt)
    side = read_sidecar(info["path"])
    assert side["voxel_size_nm"] == [8.0, 8.0, 8.0] and side["target_name"] == "blob"
    assert side["train_job"] == "r1-train-1" and "warning" not in err
    assert side["test_time_flips"] == "flips"  # the default, traced into the graph: the match below covers it
    pre = side["preprocessing"]
    assert pre["record"] == {"method": "none"} and pre["input"] == "raw" and pre["before_model"] is None
    assert any("normalize" in step for step in pre["in_model"])
    v = session_view(trained, 1)
    theirs = v.pred[WHOLE.slices].astype(np.int16)
    assert np.abs(exported_on(info["path"], side, v.raw, WHOLE) - theirs).max() <= 1  # two runtimes' float rounding
    assert "model exported" in v.entries


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_a_model_with_a_stem_exports_and_reproduces_the_job_side_prediction(tmp_path, fmt):
    """The stem's pooling, transposed convolution and full-resolution convolution survive tracing and ONNX."""
    torch.manual_seed(0)
    net = UNet3D(UNetConfig(voxel_size=(40, 4, 4), levels=2, base=4, stem=(1, 2, 2))).eval()
    with torch.no_grad():  # a random net is flat at p=0.5: spread it so a wrong stem would show
        net.head.weight.mul_(20)
    save({"model": net.state_dict(), "config": net.cfg.to_dict(), "target": 2, "target_name": "blob"},
         tmp_path / "model.pt")
    export(tmp_path / "model.pt", fmt, tmp_path / f"m.{fmt}", {})
    side = read_sidecar(tmp_path / f"m.{fmt}")
    assert side["architecture"]["stem"] == [1, 2, 2] and side["input"]["divisor"] == [1, 4, 4]
    raw = np.random.default_rng(1).integers(0, 255, (8, 96, 96), dtype=np.uint8)
    core = Box((2, 16, 16), (4, 64, 64))
    want = predict_block(net, raw, core, block_halo(net), net.cfg.divisor, torch.device("cpu")).astype(np.int16)
    assert want.std() > 10
    assert np.abs(exported_on(tmp_path / f"m.{fmt}", side, raw, core) - want).max() <= 1


@pytest.fixture(scope="module")
def percentile_export(trained):
    """Round 2 (percentile) exported as ONNX with its bioimage.io package."""
    return export_cli(trained, "--round", "2", "--format", "onnx", "--bioimageio")


def test_percentile_export_takes_raw_voxels_and_reproduces_the_sessions_prediction(trained, percentile_export):
    info, err = percentile_export
    side = read_sidecar(info["path"])
    v = session_view(trained, 2)
    rec = torch.load(v.model, weights_only=False)["preprocess"]
    pre = side["preprocessing"]
    assert rec["method"] == "percentile" and pre["record"] == rec and pre["input"] == "raw"
    assert pre["before_model"] is None and "percentile" in pre["in_model"][0] and "warning" not in err
    # raw voxels in, the stretch inside the graph: the session's prediction (which stretched before its net)
    theirs = v.pred[WHOLE.slices].astype(np.int16)
    assert np.abs(exported_on(info["path"], side, v.raw, WHOLE) - theirs).max() <= 1


def test_bioimageio_package_validates_offline_and_its_test_tensors_reproduce(trained, percentile_export, tmp_path,
                                                                            monkeypatch):
    import bioimageio.spec as bio
    import onnxruntime

    info, _ = percentile_export
    pkg = info["bioimageio"]
    assert pkg["validated"] and pkg["status"] == "valid-format" and pkg["validator"].startswith("bioimageio.spec")

    tried = []

    def offline(*a, **k):
        tried.append(a)
        raise OSError("network refused by the test")

    monkeypatch.setattr(socket.socket, "connect", offline)
    monkeypatch.setattr(socket, "create_connection", offline)
    descr = bio.load_description(pkg["path"], perform_io_checks=True)  # the real validation, every file read
    assert descr.validation_summary.status == "valid-format", descr.validation_summary.format()
    assert not tried  # no check reached for the network (the description names no URL, no GitHub user)
    assert descr.inputs[0].axes[2].scale == 8.0 and descr.inputs[0].axes[2].unit == "nanometer"
    halo = [a.halo for a in descr.outputs[0].axes[2:]]
    assert halo == [10, 10, 10]  # the session's: receptive radius 9 up to the divisor 2
    x, y = descr.get_input_test_arrays()[0], descr.get_output_test_arrays()[0]
    with zipfile.ZipFile(pkg["path"]) as zf:
        zf.extract("model.onnx", tmp_path)
    sess = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert np.abs(sess.run(None, {"raw": x})[0] - y).max() < 1e-4  # bioimage.io's default tolerance is 1e-3
    # the test output is the session's prediction: inside the halo it is what the prediction job stored
    tile = descr.config.fibtui["test_tile"]
    v = session_view(trained, 2)
    assert np.array_equal(x[0, 0], read_padded(v.raw, Box(tuple(tile["offset"]), tuple(tile["shape"]))))  # raw in
    inner = Box(tuple(o + h for o, h in zip(tile["offset"], halo)),
                tuple(s - 2 * h for s, h in zip(tile["shape"], halo)))
    ours = np.round(y[0, 0][tuple(slice(h, h + n) for h, n in zip(halo, inner.shape))] * 255).astype(np.int16)
    assert np.abs(ours - v.pred[inner.slices].astype(np.int16)).max() <= 1


def test_clahe_export_says_the_input_must_be_preprocessed(trained):
    info, err = export_cli(trained, "--round", "3", "--format", "torchscript")
    side = read_sidecar(info["path"])
    pre = side["preprocessing"]
    assert pre["record"]["method"] == "clahe" and pre["input"] == "preprocessed"
    assert "slice_filter" in pre["before_model"] and "whole z-slice" in pre["before_model"]
    assert len(pre["in_model"]) == 1  # only the normalisation: CLAHE cannot be inside a blockwise graph
    lines = [ln for ln in err.splitlines() if "warning" in ln]
    assert len(lines) == 1 and "clahe" in lines[0] and "preprocessed first" in lines[0]
    # fed the slice-filtered volume, the export gives what the session's prediction path gives
    v = session_view(trained, 3)
    net, ck = load_model(v.model)
    seen = wrap(v.raw, ck["preprocess"], v.vol)
    halo = tuple(round_up(h, d) for h, d in zip(side["halo"], side["input"]["divisor"]))
    theirs = predict_block(net.eval(), seen, WHOLE, halo, net.cfg.divisor, torch.device("cpu")).astype(np.int16)
    assert np.abs(exported_on(info["path"], side, seen, WHOLE) - theirs).max() <= 1


def test_package_without_bioimageio_spec_is_written_and_says_it_was_not_validated(trained, tmp_path, monkeypatch):
    v = session_view(trained, 1)
    out = tmp_path / "m.onnx"
    side = export(v.model, "onnx", out, {"round": 1, "train_job": "r1-train-1"})
    monkeypatch.setitem(sys.modules, "bioimageio.spec", None)  # import fails as if it were not installed
    pkg = write_package(out, side, v.model, str(v.vol))
    assert not pkg["validated"] and pkg["note"] == "bioimageio.spec is not installed: the description was not validated"
    with zipfile.ZipFile(pkg["path"]) as zf:
        assert {"rdf.yaml", "model.onnx", "test_input.npy", "test_output.npy", "README.md"} <= set(zf.namelist())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.bioimageio.zip", "m.onnx.json"]


def refused(capsys, sdir, *args) -> str:
    """The one line `fibtui model export` (in this process: no interpreter start-up) refuses with; nothing written."""
    before = db_snapshot(sdir)
    code = main(["model", "export", "--session", str(sdir), "--bioimageio", *map(str, args)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert db_snapshot(sdir) == before
    return err


def test_bad_input_is_one_line_and_writes_nothing(trained, tmp_path, capsys):
    assert "--format 'tensorflow': choose torchscript or onnx" in refused(capsys, trained, "--format", "tensorflow")
    missing = tmp_path / "missing"
    assert f"folder {missing} does not exist" in refused(capsys, trained, "--out", missing / "m.onnx")


def test_export_refuses_a_round_without_a_model(tmp_path, capsys):
    s = init_session(tmp_path / "s")
    raw, _ = blobs_volume((16, 64, 64), seed=1)
    catalog.write_volume(s, "v", raw, (8, 8, 8), source="test")
    rounds.new_round(s)
    s.close()
    assert "round 1 has no completed train job" in refused(capsys, tmp_path / "s")
    assert not list((tmp_path / "s" / "exports").iterdir())
