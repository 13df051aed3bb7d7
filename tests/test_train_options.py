"""Preprocessing, augmentation and validation of a training: what the spec says is what the job does."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tifffile
import torch
import zarr

from conftest import blobs_volume, db_snapshot, run_cli
from remote.preprocess import resolve, wrap
from remote.sampling import PatchSampler, split_crop
from sessions.errors import FibError
from sessions import train_options
from sessions.train_options import AUGMENT_PRESETS, parse_augment, preprocess_record


# ---------------------------------------------------------------- the vocabulary
def test_augment_text_presets_and_overrides():
    assert parse_augment("none") == AUGMENT_PRESETS["none"]
    a = parse_augment("flips,noise=0.05")
    assert a["flip"] == 0.5 and a["noise"] == 0.05 and a["elastic"] == 0
    assert parse_augment("elastic=3")["elastic"] == 3.0  # over the default preset
    for bad, says in (("wobbly", "no preset 'wobbly'"), ("flip=2", "out of range"), ("twirl=1", "no augmentation"),
                      ("noise=lots", "not a number")):
        with pytest.raises(FibError, match=says):
            parse_augment(bad)


def test_preprocess_record_refuses_unknown_methods_and_parameters():
    assert preprocess_record("clahe", clip_limit=0.02)["clip_limit"] == 0.02
    with pytest.raises(FibError, match="choose one of none, percentile, clahe, denoise"):
        preprocess_record("sharpen")
    with pytest.raises(FibError, match="no parameter sigma"):
        preprocess_record("percentile", sigma=1)


# ---------------------------------------------------------------- preprocessing: any region reads what the volume does
@pytest.fixture
def volume(tmp_path):
    path = tmp_path / "v.ome.zarr"
    a = zarr.create_array(path, shape=(6, 70, 90), chunks=(2, 32, 32), dtype="uint8")
    rng = np.random.default_rng(1)
    a[:] = np.clip(rng.normal(120, 30, a.shape) + np.linspace(0, 60, 90), 0, 255).astype(np.uint8)
    return a, path


@pytest.mark.parametrize("method", ["none", "percentile", "clahe", "denoise"])
def test_a_region_equals_the_whole_volume_preprocessed(volume, method):
    a, path = volume
    rec = resolve({"method": method}, [a])
    whole = wrap(a, rec, path)[:]
    part = wrap(a, rec, path)[2:5, 10:40, 33:80]   # a second reader of the same cache
    assert whole.dtype == np.uint8 and np.array_equal(whole[2:5, 10:40, 33:80], part)
    if method != "none":
        assert not np.array_equal(whole, np.asarray(a[:]))


def test_percentiles_are_measured_once_and_the_slices_cached_lazily(volume):
    a, path = volume
    rec = resolve({"method": "percentile", "low": 5, "high": 95}, [a])
    lo, hi = np.percentile(np.asarray(a[:]), [5, 95])
    assert rec["lo_value"] == pytest.approx(lo) and rec["hi_value"] == pytest.approx(hi)
    assert resolve(rec, [a]) == rec      # a resolved record is kept as it is (a resumed training)
    c = wrap(a, resolve({"method": "clahe"}, [a]), path)
    c[1:3]
    assert sorted(p.name for p in (c.cache / "done").iterdir()) == ["1", "2"]


# ---------------------------------------------------------------- augmentation and the validation split
def _sampler(tmp_path, augment, voxel_size=(8, 8, 8), validation=0.0, seed=0):
    raw, gt = blobs_volume((16, 64, 64), seed=4)
    raw = np.where(gt == 1, 40, 200).astype(np.uint8)  # raw says the label: alignment is checkable
    path = tmp_path / "c.zarr"
    zarr.create_array(path, shape=gt.shape, dtype="uint8", chunks=gt.shape, overwrite=True)[:] = gt + 1
    return PatchSampler(raw, [{"path": str(path), "offset": [0, 0, 0]}], 2, (8, 32, 32), np.random.default_rng(seed),
                        voxel_size=voxel_size, augment=augment, validation=validation), raw, gt


@pytest.mark.parametrize("preset", ["flips", "all"])
def test_geometric_augmentation_keeps_raw_and_labels_aligned(tmp_path, preset):
    aug = {**AUGMENT_PRESETS[preset], **{k: 0.0 for k in ("contrast", "brightness", "gamma", "noise", "blur",
                                                          "shading")}}
    sampler, _, _ = _sampler(tmp_path, aug)
    agree = []
    for _ in range(20):
        x, t, m = sampler.sample()
        dark = x < 0   # normalised: 40 → −0.69, 200 → +0.57
        agree.append(((dark == (t > 0)) & (m > 0)).sum() / max(1, (m > 0).sum()))
    assert np.mean(agree) > (0.999 if preset == "flips" else 0.95)  # interpolation blurs edges only


def test_intensity_augmentation_changes_intensities_not_labels(tmp_path):
    sampler, _, _ = _sampler(tmp_path, AUGMENT_PRESETS["intensity"])
    plain, _, _ = _sampler(tmp_path, AUGMENT_PRESETS["none"])
    xs = [sampler.sample()[0] for _ in range(10)]
    assert len({round(float(x.std()), 3) for x in xs}) > 5
    x, t, m = plain.sample()
    assert np.isclose(x[..., None], [40 / 127.5 - 1, 200 / 127.5 - 1]).any(-1).all()  # the two grey values only


def test_rotations_stay_in_the_plane_of_equal_voxel_sizes(tmp_path):
    aniso, _, _ = _sampler(tmp_path, AUGMENT_PRESETS["all"], voxel_size=(50, 4.6, 4.6))
    iso, _, _ = _sampler(tmp_path, AUGMENT_PRESETS["all"], voxel_size=(8, 8, 8))
    assert aniso.plane == [1, 2] and iso.plane == [0, 1, 2]


def test_validation_slab_is_held_apart_from_training(tmp_path):
    sampler, _, gt = _sampler(tmp_path, AUGMENT_PRESETS["none"], validation=0.25)
    (v,) = sampler.validation
    crop = sampler.crops[0]
    sel = tuple(slice(o, o + s) for o, s in zip(v.box.offset, v.box.shape))
    assert np.array_equal(v.labels, gt[sel] + 1)          # the slab's labels, where the slab is
    assert not crop.labels[sel].any() and crop.labels.any()  # and none of them in training
    assert v.box.shape == (16, 16, 64)  # a quarter of the longest axis (y and x tie: the first)


def test_a_crop_without_labels_in_the_slab_stays_whole():
    labels = np.zeros((4, 40, 10), np.uint8)
    labels[:, :20] = 1
    rng = np.random.default_rng(0)
    for _ in range(8):
        train, held = split_crop(labels, 0.25, rng)
        assert held is None or (labels[held].any() and train.any())


# ---------------------------------------------------------------- the job: recorded, chosen, applied in prediction
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from remote.dispatch import Dispatcher
    from sessions import labels, rounds
    from sessions.volumes import catalog
    from sessions.workspace import init_session

    tmp = tmp_path_factory.mktemp("options")
    raw, gt = blobs_volume((16, 64, 64), seed=5)
    tifffile.imwrite(tmp / "v.tif", raw)
    tifffile.imwrite(tmp / "c.tif", gt + 1)
    s = init_session(tmp / "s")
    catalog.ingest(s, tmp / "v.tif", name="v", voxel_size=(8, 8, 8))
    rnd = rounds.new_round(s)
    labels.add_crop(s, 1, "v", tmp / "c.tif", (0, 0, 0), ["bg", "blob"])
    d = Dispatcher(s)
    spec = rounds.train_spec(s, rnd, target="blob", iterations=30, patch=(8, 32, 32), batch=1, base=4, levels=2,
                             threads=1, checkpoint_every=10, preprocess="percentile", augment="all", validation=0.25)
    train = d.wait(d.submit(1, "train", spec)["id"])
    pred = d.wait(d.submit(1, "predict", rounds.predict_spec(s, rnd, threads=1))["id"])
    assert train["state"] == pred["state"] == "COMPLETED", (train, pred)
    s.close()
    return tmp / "s"


def _scores(job):
    """{metric name: {step: value}} of a training job's validation events, and the one "validation" event."""
    events = [json.loads(x) for x in (job / "events.jsonl").read_text().splitlines()]
    out = {}
    for e in events:
        if e["type"] == "metric":
            out.setdefault(e["name"], {})[e["step"]] = e["value"]
    (announced,) = [e for e in events if e["type"] == "validation"]
    return out, announced


def test_the_model_records_its_preprocessing_and_the_checkpoint_chosen_on_validation(trained):
    job = trained / "jobs" / "r1-train-1"
    ck = torch.load(job / "model.pt", weights_only=False)
    assert ck["preprocess"]["method"] == "percentile" and "lo_value" in ck["preprocess"]
    scores, announced = _scores(job)
    val, best, threshold = scores["val_iou"], scores["val_iou_best"], scores["val_threshold"]
    assert set(val) == set(announced["steps"]) and max(val) == 30 and len(val) >= 2   # a rival, and the end
    assert set(best) == set(threshold) == set(val) and all(best[k] >= val[k] for k in val)  # 0.5 is a candidate
    chosen = ck["chosen"]  # the default rule: the best-scoring weights, at the threshold the slabs chose for them
    assert chosen["by"].startswith("validation IoU at its best threshold") and chosen["val_iou_best"] == max(best.values())
    assert chosen["step"] == max(s for s, v in best.items() if v == max(best.values()))  # ties: the later
    assert chosen["val_threshold"] == threshold[chosen["step"]] and 0.1 <= chosen["val_threshold"] <= 0.95
    spec = json.loads((job / "spec.json").read_text())
    assert spec["augment"]["elastic"] > 0 and spec["validation"] == 0.25 and spec["choose"] == "best"
    assert spec["tta"] == ck["tta"] == "flips"  # the default: validated with the flips prediction applies


def test_choose_final_keeps_the_last_weights_at_the_threshold_the_slabs_chose_for_them(trained, tmp_path):
    import shutil

    s = tmp_path / "s"
    shutil.copytree(trained, s)  # the module's session stays as the other tests expect it
    out = run_cli("round", "train", "--session", s, "--target", "blob", "--iterations", "40", "--patch", "8,32,32",
                  "--batch", "1", "--threads", "1", "--choose", "final", "--json")
    assert out.returncode == 0, out.stderr
    done = json.loads(out.stdout)
    assert done["state"] == "COMPLETED" and done["id"] == "r1-train-2"  # fine-tuned from r1-train-1
    job = s / "jobs" / done["id"]
    assert json.loads((job / "spec.json").read_text())["choose"] == "final"
    scores, _ = _scores(job)
    chosen = torch.load(job / "model.pt", weights_only=False)["chosen"]
    assert chosen["by"].startswith("final weights, the validation slabs' best threshold") and chosen["step"] == 40
    assert chosen["val_iou_best"] == scores["val_iou_best"][40]
    assert chosen["val_threshold"] == scores["val_threshold"][40]


def test_prediction_applies_the_models_preprocessing(trained):
    from remote.checkpoints import load_model
    from remote.predict import block_halo, predict_block
    from sessions.geometry import Box
    from sessions.volumes import omezarr

    model, ck = load_model(trained / "jobs" / "r1-train-1" / "model.pt")
    model.eval()
    halo = block_halo(model)  # as the job does
    vol = trained / "volumes" / "v.ome.zarr"
    raw = omezarr.open_multiscale(vol).levels[0]
    box = Box((0, 0, 0), (16, 64, 64))
    want = predict_block(model, wrap(raw, ck["preprocess"], vol), box, halo, model.cfg.divisor, torch.device("cpu"))
    got = np.asarray(omezarr.open_multiscale(trained / "jobs" / "r1-predict-1" / "prediction.ome.zarr").levels[0][:])
    assert np.array_equal(got, want)
    unprocessed = predict_block(model, raw, box, halo, model.cfg.divisor, torch.device("cpu"))
    assert not np.array_equal(got, unprocessed)


def test_bad_training_options_are_one_line_and_change_nothing(trained):
    before = db_snapshot(trained)
    grid = train_options.DEFAULT_KERNEL_GRID  # the fixture's model's
    for flags, says in ((["--preprocess", "sharpen"], "--preprocess 'sharpen': choose one of"),
                        (["--augment", "twirl=1"], "--augment 'twirl=1': no augmentation 'twirl'"),
                        (["--validation", "0.9"], "--validation 0.9: give a fraction"),
                        (["--tta", "rotations"], "--tta 'rotations': choose one of none, flips"),
                        (["--choose", "worst"], "--choose 'worst': choose one of final, best"),
                        (["--kernel-grid", "voxels"], "--kernel-grid 'voxels': choose one of stem, input"),
                        (["--preprocess", "clahe"], "was trained on percentile; pass --preprocess percentile"),
                        (["--patch", "7,32,30"], "--patch 7,32,30: each extent must be a multiple of 2,2,2 (the "
                                                 "U-Net's pooling, stem included); try --patch 8,32,30"),
                        (["--stem", "1,2,2"], f"stem 1,2,2, kernel grid {grid}: r1-train-1, the model this training "
                                              f"starts from, has base 4, levels 2, stem 1,1,1, kernel grid {grid}")):
        out = run_cli("round", "train", "--session", trained, "--target", "blob", "--iterations", "5", *flags)
        assert out.returncode != 0 and says in out.stderr, (flags, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1
    assert db_snapshot(trained) == before


def test_validation_is_scored_as_often_as_a_tenth_of_the_run_allows():
    from remote.train import validation_steps
    assert validation_steps(1200, 20.0) == [200, 400, 600, 800, 1000, 1200]   # cheap: the most, 6
    assert validation_steps(1200, 40.0) == [400, 800, 1200]                   # 3 × 40 = a tenth of 1200
    assert validation_steps(1200, 500.0) == [600, 1200]                       # dear: still a rival to the end
    assert validation_steps(1, 500.0) == [1]
    assert validation_steps(30, 0.0, every=10) == [10, 20, 30]                # validate_every wins
    assert validation_steps(25, 0.0, every=10) == [10, 20, 25]


def test_validation_cost_counts_the_halo_a_slab_computes():
    from remote.model import UNet3D, UNetConfig
    from remote.sampling import Validation
    from remote.train import validation_cost
    from sessions.geometry import Box

    model = UNet3D(UNetConfig(voxel_size=(50, 4.6, 4.6), levels=4, base=4))  # halo (2, 56, 56), divisor (1, 8, 8)
    slab = Validation(Box((0, 0, 0), (14, 80, 512)), np.zeros((14, 80, 512), np.uint8))
    cost = validation_cost(model, [slab], batch=2, patch=(4, 192, 192))
    assert cost == pytest.approx(0.7 * 18 * 192 * 624 / (2 * 4 * 192 * 192))
    model.tta = "flips"  # each test-time flip is another pass
    assert validation_cost(model, [slab], batch=2, patch=(4, 192, 192)) == pytest.approx(4 * cost)


def test_the_average_follows_the_weights_and_batchnorm_statistics_over_the_runs_last_tenth():
    from remote.train import averager

    net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 1), torch.nn.BatchNorm3d(2))
    assert averager(net, total=100, horizon=0.0) is None                     # 0: no average, the raw weights
    avg = averager(net, total=100, horizon=0.1)                              # over 10 steps: decay 0.9
    w0 = net[0].weight.detach().clone()
    avg.update_parameters(net)                                               # the first step: a copy
    with torch.no_grad():
        net[0].weight.add_(1.0)
        net[1].running_mean.fill_(1.0)
    avg.update_parameters(net)
    assert torch.allclose(avg.module[0].weight, w0 + 0.1)
    assert torch.allclose(avg.module[1].running_mean, torch.full((2,), 0.1))  # the statistics prediction uses
    assert torch.equal(net[0].weight, w0 + 1.0)                              # the training weights untouched


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.25])
def test_the_threshold_the_slabs_chose_is_folded_into_the_model(threshold):
    from remote.model import UNet3D, UNetConfig
    from remote.train import calibrated

    torch.manual_seed(0)
    net = UNet3D(UNetConfig(voxel_size=(8, 8, 8), levels=2, base=4)).eval()
    x = torch.randn(1, 1, 8, 16, 16)
    with torch.no_grad():
        p = torch.sigmoid(net(x))
        folded = UNet3D(net.cfg).eval()
        folded.load_state_dict(calibrated(net.state_dict(), threshold))
        q = torch.sigmoid(folded(x))
    assert torch.equal(q >= 0.5, p >= threshold)   # what prediction, evaluation and export threshold at 0.5
    assert torch.allclose(torch.logit(q), torch.logit(p) - math.log(threshold / (1 - threshold)), atol=1e-4)
    assert net.state_dict()["head.bias"].data_ptr() != folded.state_dict()["head.bias"].data_ptr()
