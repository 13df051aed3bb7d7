"""Blockwise objects (remote.objects) against whole-volume cc3d, and measurements against the generator's truth."""

import json

import cc3d
import numpy as np
import pytest

from remote import objects
from sessions import synth


def _blobs(shape=(40, 50, 60), seed=0):
    rng = np.random.default_rng(seed)
    from scipy.ndimage import gaussian_filter

    p = gaussian_filter(rng.random(shape), 2.0)
    p = (p - p.min()) / (p.max() - p.min())
    return (p * 255).astype(np.uint8)


def _canonical(lab):
    """A partition as a set of frozensets of flat indices (label values do not matter)."""
    flat = lab.ravel()
    order = np.argsort(flat, kind="stable")
    cuts = np.flatnonzero(np.diff(flat[order])) + 1
    return {frozenset(g.tolist()) for g in np.split(order, cuts) if flat[g[0]] != 0}


@pytest.mark.parametrize("block", [(8, 16, 16), (7, 13, 11), (40, 50, 60)])
def test_blockwise_components_equal_whole_volume_cc3d(tmp_path, block):
    vol = _blobs()
    table, lut = objects.label_volume(vol, tmp_path, (8, 8, 8), block=block, keep_labels=True)
    ref, n = cc3d.connected_components(vol >= 128, connectivity=26, return_N=True)
    assert len(table["id"]) == n
    gl = objects.GlobalLabels(tmp_path, lut, block)
    from sessions.geometry import Box

    mine = gl.read(Box((0, 0, 0), vol.shape))
    assert _canonical(mine) == _canonical(ref)
    sizes = np.bincount(ref.ravel())[1:]
    assert sorted(table["voxels"].tolist()) == sorted(sizes.tolist())
    k = int(np.argmax(table["voxels"]))  # centroid and bbox of the largest object
    zz = np.argwhere(mine == table["id"][k])
    assert np.allclose([table["z"][k], table["y"][k], table["x"][k]], zz.mean(0))
    assert [table["bbox_z0"][k], table["bbox_z1"][k]] == [zz[:, 0].min(), zz[:, 0].max() + 1]
    assert np.isclose(table["mean_prob"][k], vol[mine == table["id"][k]].mean() / 255)


def test_resume_size_filter_and_hysteresis(tmp_path):
    vol = _blobs(seed=1)
    full, _ = objects.label_volume(vol, tmp_path / "a", (8, 8, 8), block=(10, 20, 20), min_voxels=20)
    assert full["voxels"].min() >= 20
    for f in sorted((tmp_path / "a").glob("*.npz"))[::3]:  # a killed job: some blocks missing
        f.unlink()
    again, _ = objects.label_volume(vol, tmp_path / "a", (8, 8, 8), block=(10, 20, 20), min_voxels=20)
    assert all(np.array_equal(full[k], again[k]) for k in full)
    hyst, _ = objects.label_volume(vol, tmp_path / "b", (8, 8, 8), block=(10, 20, 20),
                                   mask_fn=objects.threshold_mask(0.55), high=0.7)
    low, _ = objects.label_volume(vol, tmp_path / "c", (8, 8, 8), block=(10, 20, 20),
                                  mask_fn=objects.threshold_mask(0.55))
    assert 0 < len(hyst["id"]) < len(low["id"]) and hyst["max_prob"].min() >= 0.6


def _measure_truth(tmp_path, shape, vs, seed, block=(32, 96, 96), **scene_kw):
    scene = synth.make_scene(shape, seed, voxel_size=(vs,) * 3, **scene_kw)
    synth.write_tiff(scene, tmp_path / "v.tif", tmp_path / "v.labels.tif")
    truth = json.loads((tmp_path / "v.truth.json").read_text())
    lab = str(tmp_path / "v.labels.tif")
    spec = {"voxel_size": [vs] * 3, "block": list(block),
            "envelope": {"paths": [lab], "kind": "labels", "classes": [synth.ENVELOPE, synth.PORE]},
            "pores": {"paths": [lab], "kind": "labels", "classes": [synth.PORE]}}
    job = tmp_path / "job"
    job.mkdir()
    return objects.measure(spec, job), truth, job


@pytest.mark.parametrize("shape,vs,seed", [((48, 192, 192), 12.0, 7), ((96, 320, 320), 10.0, 11)])
def test_measure_on_truth_masks_matches_truth_json(tmp_path, shape, vs, seed):
    res, truth, job = _measure_truth(tmp_path, shape, vs, seed)
    r = res["readout"]
    assert r["pores"] == truth["pore_count"]  # exactly
    assert r["envelope_um2"] == pytest.approx(truth["envelope_area_um2"], rel=0.05)
    assert r["density_per_um2"] == pytest.approx(truth["pore_density_per_um2"], rel=0.05)
    by_count = sorted((n["pores"], n["envelope_um2"]) for n in r["nuclei"])
    want = sorted((n["pore_count"], n["envelope_area_um2"]) for n in truth["nuclei"] if n["envelope_area_um2"] > 0)
    assert [c for c, _ in by_count] == [c for c, _ in want]
    for (_, a), (_, b) in zip(by_count, want):
        assert a == pytest.approx(b, rel=0.05)
    import pyarrow.parquet as pq

    pores = pq.read_table(job / "pores.parquet").to_pydict()
    assert set(objects.COLUMNS) | {"nucleus", "envelope_distance_nm"} <= set(pores)
    assert (job / "pores.csv").read_text().startswith('"id"')
    assert all(n > 0 for n, c in zip(pores["nucleus"], pores["counted"]) if c)
    assert max(pores["envelope_distance_nm"]) < vs  # on labels, pores sit in the envelope band


def test_two_nuclei_of_different_densities_are_told_apart(tmp_path):
    res, truth, _ = _measure_truth(tmp_path, (96, 320, 320), 10.0, 11, nucleus_densities=(4.0, 16.0))
    nuc = sorted(res["readout"]["nuclei"], key=lambda n: n["density_per_um2"])
    assert len(nuc) == 2
    lo, hi = nuc
    assert lo["ci95"][1] < hi["ci95"][0]  # the intervals do not overlap
    want = sorted(n["pore_density_per_um2"] for n in truth["nuclei"])
    assert lo["density_per_um2"] == pytest.approx(want[0], rel=0.05)
    assert hi["density_per_um2"] == pytest.approx(want[1], rel=0.05)


def test_object_matching_by_centroid_and_blockwise_whole_volume_stats(tmp_path):
    from remote import evaluate

    vs = (8.0, 8.0, 8.0)
    true_c = np.array([[10.0, 10, 10], [30, 30, 30], [50, 50, 50]])
    true_n = np.array([500, 500, 500])  # equivalent radius ~4.9 voxels
    pred_c = np.array([[11.0, 10, 10], [30, 33, 30], [80, 80, 80], [12, 10, 10]])  # 2 hits, 1 far, 1 duplicate
    m = evaluate.match_objects(pred_c, true_c, true_n, vs)
    assert m == 2
    sc = evaluate.object_scores(m, len(pred_c), len(true_c))
    assert sc["object_precision"] == 0.5 and sc["object_recall"] == pytest.approx(2 / 3)
    assert sc["count_error"] == pytest.approx(1 / 3)
    vol = _blobs(seed=3)
    thr = 128
    whole = evaluate.object_stats(vol >= thr, vs, 10)
    block = evaluate.blockwise_object_stats(vol, thr, vs, 10, tmp_path / "w")
    assert block == pytest.approx(whole)


def test_measure_on_probability_volumes_equals_labels(tmp_path):
    import zarr

    res, truth, _ = _measure_truth(tmp_path, (48, 192, 192), 12.0, 7)
    lab = np.asarray(objects.open_volume(str(tmp_path / "v.labels.tif")))
    paths = {}
    for name, cls in (("pore", synth.PORE), ("envelope", synth.ENVELOPE)):
        z = zarr.create_array(tmp_path / f"{name}.zarr", shape=lab.shape, chunks=(16, 64, 64), dtype="uint8")
        z[:] = np.where(lab == cls, 230, 10).astype(np.uint8)
        paths[name] = str(tmp_path / f"{name}.zarr")
    spec = {"voxel_size": [12.0] * 3, "block": [24, 64, 64],
            "envelope": {"paths": [paths["envelope"], paths["pore"]], "kind": "prob", "threshold": 0.5},
            "pores": {"paths": [paths["pore"]], "kind": "prob", "threshold": 0.5}}
    (tmp_path / "job2").mkdir()
    prob = objects.measure(spec, tmp_path / "job2")["readout"]
    assert prob["pores"] == res["readout"]["pores"] == truth["pore_count"]
    assert prob["envelope_um2"] == pytest.approx(res["readout"]["envelope_um2"], rel=1e-6)
