"""Blockwise objects (remote.objects) against whole-volume cc3d, and measurements against the generator's truth."""

import json

import cc3d
import numpy as np
import pytest

from remote import objects
from sessions import measure, synth


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


def truth_spec(tmp_path, shape, vs, seed, block=(32, 96, 96), **scene_kw) -> tuple[dict, dict]:
    """A generated volume's label TIFF as both pores and envelope of a measure spec, and its truth.json."""
    scene = synth.make_scene(shape, seed, voxel_size=(vs,) * 3, **scene_kw)
    synth.write_tiff(scene, tmp_path / "v.tif", tmp_path / "v.labels.tif")
    truth = json.loads((tmp_path / "v.truth.json").read_text())
    lab = str(tmp_path / "v.labels.tif")
    spec = {"voxel_size": [vs] * 3, "block": list(block), "shape": list(shape),
            "envelope": {"paths": [lab], "kind": "labels", "classes": [synth.ENVELOPE, synth.PORE]},
            "pores": {"paths": [lab], "kind": "labels", "classes": [synth.PORE]}}
    return spec, truth


def _measure_truth(tmp_path, shape, vs, seed, block=(32, 96, 96), **scene_kw):
    spec, truth = truth_spec(tmp_path, shape, vs, seed, block, **scene_kw)
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
    lab = np.asarray(measure.open_volume(str(tmp_path / "v.labels.tif")))
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


# ----------------------------------------------------------------- splitting touching pores (--split)
def _spheres(shape, vs, centres_nm, r_nm):
    """uint8 probabilities (230 inside) of balls of radius r_nm at centres_nm, on voxels of size vs."""
    zz, yy, xx = np.ogrid[:shape[0], :shape[1], :shape[2]]
    m = np.zeros(shape, bool)
    for c in centres_nm:
        m |= ((zz + .5) * vs[0] - c[0]) ** 2 + ((yy + .5) * vs[1] - c[1]) ** 2 + ((xx + .5) * vs[2] - c[2]) ** 2 \
            <= r_nm ** 2
    return np.where(m, 230, 10).astype(np.uint8)


def _table(tmp_path, vol, vs, block, split, name):
    table, _ = objects.label_volume(vol, tmp_path / name, vs, block=block, split=split)
    order = np.lexsort((table["x"], table["y"], table["z"]))
    return {k: np.asarray(v)[order] for k, v in table.items() if k != "id"}


@pytest.mark.parametrize("vs", [(8.0, 8.0, 8.0), (8.0, 4.0, 4.0)])  # anisotropic voxels: spacing in nm
def test_split_touching_pores(tmp_path, vs):
    from sessions.measure import split_settings

    split = split_settings()
    shape = tuple(int(400 / v) for v in vs)
    whole = shape
    count = lambda vol, sp, block=whole, name="x": len(_table(tmp_path, vol, vs, block, sp, name)["voxels"])  # noqa
    pair = _spheres(shape, vs, [(200, 200, 135), (200, 200, 265)], 70)  # 130 nm apart, overlapping by 10 nm
    assert count(pair, None, name="a") == 1 and count(pair, split, name="b") == 2
    one = _spheres(shape, vs, [(200, 200, 200)], 70)
    assert count(one, split, name="c") == 1
    close = _spheres(shape, vs, [(200, 200, 150), (200, 200, 250)], 70)  # 100 nm apart: closer than any two pores
    assert count(close, split, name="d") == 1
    fat = _spheres(shape, vs, [(200, 200, 120), (200, 200, 280)], 110)  # peaks 160 nm apart, a wide neck
    assert count(fat, split, name="e") == 2
    # the pair straddling block faces (between the pores along x, through both along y): the same table
    ref = _table(tmp_path, pair, vs, whole, split, "f")
    for block in [(shape[0], shape[1], shape[2] // 2), (shape[0] // 2 + 1, shape[1] // 2 - 3, shape[2] // 3)]:
        got = _table(tmp_path, pair, vs, block, split, f"g{block}")
        assert all(np.allclose(ref[k], got[k]) for k in ref), block
    assert sorted(ref["voxels"]) == [int((pair > 128).sum()) // 2] * 2  # two mirror halves


def test_split_tables_do_not_depend_on_the_blocks(tmp_path):
    """Many pores, some touching, some clumps too large to split, cut by block faces of several shapes:
    with --split the object table is the same as in one block; large clumps stay whole and merge."""
    from sessions.measure import split_settings

    rng = np.random.default_rng(4)
    vs, shape = (10.0, 10.0, 10.0), (60, 120, 140)
    centres = []
    for _ in range(10):  # pairs 130 nm apart in a random direction
        c = rng.uniform(80, np.array(shape) * 10 - 80)
        d = rng.normal(size=3)
        centres += [c, c + 130 * d / np.linalg.norm(d)]
    centres += [rng.uniform(60, np.array(shape) * 10 - 60) for _ in range(6)]
    vol = _spheres(shape, vs, centres, 68)
    rod = _spheres(shape, vs, [(300, 450, x) for x in (200, 330, 460, 590)], 75)  # 540 nm long: more than 400
    vol = np.maximum(vol, rod)
    split = split_settings()
    ref = _table(tmp_path, vol, vs, shape, split, "one")
    plain = _table(tmp_path, vol, vs, shape, None, "plain")
    assert len(ref["voxels"]) > len(plain["voxels"])  # touching pairs were split
    # the rod (and whatever touches it) is whole: too large to be a clump of pores
    assert ref["voxels"].max() == plain["voxels"].max() >= (rod > 128).sum()
    for block in [(16, 32, 32), (25, 41, 37), (60, 120, 70)]:
        got = _table(tmp_path, vol, vs, block, split, f"b{block}")
        assert len(got["voxels"]) == len(ref["voxels"]), block
        assert all(np.allclose(ref[k], got[k]) for k in ref), block
    with pytest.raises(ValueError, match="split the pores, not the envelope"):
        objects.label_volume(vol, tmp_path / "k", vs, block=shape, split=split, keep_labels=True)


# ----------------------------------------------------------------- the measure job as array tasks + final step
def test_measure_as_array_tasks_equals_one_job_and_a_killed_task_resumes(tmp_path):
    """prepare → 3 tasks (any order; one killed part-way and rerun) → finalize: the same tables and readout as
    the single job; each task's ledger (npz per block and pass) in its own tasks/<i>/; progress from them."""
    import pyarrow.parquet as pq

    from remote import job_array
    from remote.run import main
    from sessions import jobs
    from sessions.jobfiles import atomic_write_json
    from sessions.measure import split_settings

    spec, truth = truth_spec(tmp_path, (48, 192, 192), 12.0, 7)  # 2×2×2 blocks of 32×96×96
    spec = {**spec, "kind": "measure", "job_id": "m", "pores": {**spec["pores"], "split": split_settings()}}
    one = tmp_path / "one"
    one.mkdir()
    single = objects.measure(spec, one)
    d = tmp_path / "arr"
    d.mkdir()
    atomic_write_json(d / "spec.json", spec)
    assert job_array.prepare(spec, d, 3) == {"tasks": 3, "blocks": 8, "passes": 2}
    assert jobs.array_info(d)["tasks"] == 3 and jobs.blocks_done(d) == 0
    for t in (2, 0):
        assert main([str(d), "--task", str(t)]) == 0
    assert main([str(d), "--finalize"]) == 1  # task 1 has not run
    assert "6 of 16 blocks were not labelled" in json.loads((d / "result.json").read_text())["error"]
    assert main([str(d), "--task", "1"]) == 0
    assert jobs.blocks_done(d) == 16
    # task 0 killed part-way: two of its ledger entries missing; a rerun labels only those
    ledger = sorted((d / "tasks" / "0").glob("*/*.npz"))
    kept = {f: f.stat().st_mtime_ns for f in ledger[1:-1]}
    for f in (ledger[0], ledger[-1]):
        f.unlink()
    assert jobs.blocks_done(d) == 14
    assert main([str(d), "--task", "0"]) == 0
    assert all(f.exists() for f in ledger) and all(f.stat().st_mtime_ns == m for f, m in kept.items())
    assert main([str(d), "--finalize"]) == 0
    res = json.loads((d / "result.json").read_text())
    assert res["status"] == "completed" and res["tasks"] == 3 and res["readout"] == single["readout"]
    assert res["readout"]["pores"] == truth["pore_count"]
    for name in ("pores", "nuclei"):
        assert pq.read_table(d / f"{name}.parquet").equals(pq.read_table(one / f"{name}.parquet")), name
    assert not (d / "work").exists() and not list(d.glob("tasks/*/*/*.npz"))  # scratch gone, logs kept
    assert all((d / "tasks" / str(t) / "result.json").is_file() for t in range(3))
