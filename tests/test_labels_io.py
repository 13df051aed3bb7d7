"""Labels in from napari/Paintera formats, out as OME-Zarr labels/ that ome-zarr-py (napari's reader) reads."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr
from conftest import run_cli

from fibtui.actions import Context, invoke
from sessions import interventions, jobs, labels, rounds
from sessions.errors import FibError
from sessions.geometry import Box
from sessions.jobfiles import atomic_write_json
from sessions.volumes import catalog, labels_io, omezarr
from sessions.workspace import init_session, open_session

SHAPE = (16, 64, 64)


@pytest.fixture
def sess(tmp_path):
    s = init_session(tmp_path / "s")
    raw = np.random.default_rng(0).integers(0, 256, SHAPE, dtype=np.uint8)
    catalog.write_volume(s, "vol", raw, (8, 8, 8), source="test")
    rounds.new_round(s)
    labels.draw_holdout(s, "vol", 1, (4, 16, 16), within=Box((12, 48, 48), (4, 16, 16)), seed=0)
    yield s
    s.close()


def crops(s) -> list[dict]:
    return list(s.db["crops"].rows_where(order_by="id"))


def crop_array(s, row) -> np.ndarray:
    return zarr.open_array(str(s.path(row["path"])), mode="r")[:]


def test_a_napari_full_volume_label_image_becomes_one_crop_per_labelled_group(sess, tmp_path):
    full = np.zeros(SHAPE, np.uint8)
    full[2, 4:10, 4:12] = 1          # a thin slice on one side
    full[2, 6:8, 6:8] = 2
    full[9, 40:50, 20:30] = 2        # another, elsewhere
    tifffile.imwrite(tmp_path / "napari.tif", full, photometric="minisblack")
    out = invoke(sess, "import_labels", {"source": str(tmp_path / "napari.tif"), "classes": "bg,mito"}, Context())
    rows = crops(sess)
    assert len(rows) == 2 and out["summary"].startswith("2 crops imported from TIFF")
    assert [r["offset"] for r in rows] == ["2,4,4", "9,40,20"] and [r["shape"] for r in rows] == ["1,6,8", "1,10,10"]
    back = np.zeros(SHAPE, np.uint8)
    for r in rows:
        o = tuple(int(v) for v in r["offset"].split(","))
        a = crop_array(sess, r)
        back[o[0]:o[0] + a.shape[0], o[1]:o[1] + a.shape[1], o[2]:o[2] + a.shape[2]] = a
    assert np.array_equal(back, full)
    assert [e["action"] for e in interventions.entries(sess)][-2:] == ["crop imported", "crop imported"]


def test_an_ome_zarr_labels_group_and_a_paintera_n5_dataset_import(sess, tmp_path):
    import tensorstore as ts

    # an OME-Zarr image with labels/ (as napari-ome-zarr writes it) holding a crop-sized label image with a translation
    img = zarr.open_group(str(tmp_path / "img.ome.zarr"), mode="w", zarr_format=3)
    lab = img.require_group("labels")
    lab.attrs["ome"] = {"version": "0.5", "labels": ["cells"]}
    g = lab.create_group("cells")
    g.create_array("0", shape=(2, 8, 8), dtype="uint8", fill_value=0)[:] = 1
    g.attrs["ome"] = {"version": "0.5", "image-label": {}, "multiscales": [{"axes": [], "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [8, 8, 8]},
                                                    {"type": "translation", "translation": [32, 80, 160]}]}]}]}
    invoke(sess, "import_labels", {"source": str(tmp_path / "img.ome.zarr"), "classes": "bg,mito"}, Context())
    assert crops(sess)[-1]["offset"] == "4,10,20" and crops(sess)[-1]["source"].startswith("OME-Zarr labels:")
    # a Paintera label dataset: a group with painteraData and data/s0 (uint64 ids that are classes here)
    n5 = tmp_path / "paintera.n5"
    n5.mkdir()
    (n5 / "attributes.json").write_text('{"painteraData": {"type": "label"}}')
    arr = ts.open({"driver": "n5", "kvstore": {"driver": "file", "path": str(n5 / "data" / "s0")},
                   "metadata": {"dimensions": [8, 4, 2], "blockSize": [8, 4, 2], "dataType": "uint64",
                                "compression": {"type": "raw"}}}, create=True).result()
    want = np.zeros((8, 4, 2), np.uint64)
    want[1:3, 1:3, :] = 2
    arr.write(want).result()
    invoke(sess, "import_labels", {"source": str(n5), "offset": "0,30,0"}, Context())
    row = crops(sess)[-1]
    assert row["shape"] == ",".join(map(str, np.asarray(arr.read().result()).shape))
    assert np.array_equal(crop_array(sess, row), np.asarray(arr.read().result()).astype(np.uint8))


def test_imports_are_checked_all_before_any_is_written(sess, tmp_path):
    full = np.zeros(SHAPE, np.uint8)
    full[2, 4:10, 4:12] = 1
    full[13, 50:52, 50:52] = 1       # inside the held-out region
    tifffile.imwrite(tmp_path / "bad.tif", full, photometric="minisblack")
    with pytest.raises(FibError, match="overlaps held-out region 1"):
        invoke(sess, "import_labels", {"source": str(tmp_path / "bad.tif"), "classes": "bg,mito"}, Context())
    tifffile.imwrite(tmp_path / "small.tif", np.ones((2, 4, 4), np.uint8), photometric="minisblack")
    with pytest.raises(FibError, match="--offset: required"):
        invoke(sess, "import_labels", {"source": str(tmp_path / "small.tif"), "classes": "bg,mito"}, Context())
    tifffile.imwrite(tmp_path / "ids.tif", np.full((2, 4, 4), 70000, np.uint32), photometric="minisblack")
    with pytest.raises(FibError, match=r"labels must be integers 0..255"):
        labels_io.read_any(tmp_path / "ids.tif")
    assert crops(sess) == []


def test_export_writes_ngff_labels_that_ome_zarr_py_reads_over_the_image(sess, tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    crop = np.ones((2, 8, 8), np.uint8)
    crop[:, 2:4, 2:4] = 2
    tifffile.imwrite(tmp_path / "c.tif", crop, photometric="minisblack")
    labels.add_crop(sess, 1, "vol", tmp_path / "c.tif", (3, 10, 20), classes=["bg", "mito"])
    tifffile.imwrite(tmp_path / "h.tif", np.full((4, 16, 16), 2, np.uint8), photometric="minisblack")
    labels.label_holdout(sess, 1, tmp_path / "h.tif")
    job = jobs.create(sess, 1, "predict", {"volume": {"name": "vol"}}, "local")
    pred = omezarr.create(jobs.job_dir(sess, job) / "p.ome.zarr", SHAPE, (8, 8, 8))
    p = np.zeros(SHAPE, np.uint8)
    p[5:9, 30:40, 30:40] = 200
    pred.levels[0][:] = p
    omezarr.build_pyramid(pred)
    atomic_write_json(jobs.job_dir(sess, job) / "result.json", {"status": "completed", "output": "p.ome.zarr"})
    jobs.finish(sess, job, "COMPLETED")
    out = invoke(sess, "export_labels", {}, Context())
    assert len(out["paths"]) == 3
    image = catalog.volume_dir(sess, "vol")
    ms = catalog.open_volume(sess, "vol")
    want = {"crops": np.zeros(SHAPE, np.uint8), "holdout": np.zeros(SHAPE, np.uint8),
            "prediction": (p >= 128).astype(np.uint8)}
    want["crops"][3:5, 10:18, 20:28] = crop
    want["holdout"][12:16, 48:64, 48:64] = 2
    nodes = list(Reader(parse_url(str(image)))())   # the image, then its labels/ (as napari-ome-zarr reads it)
    assert np.array_equal(np.asarray(nodes[0].data[0]), np.asarray(ms.levels[0][:]))
    where = {n: str(n.zarr).split(" [")[0].rstrip("/") for n in nodes}
    found = {w.rsplit("/", 1)[-1]: n for n, w in where.items() if "/labels/" in w}
    assert set(found) == set(want)
    for name, arr in want.items():
        node = found[name]
        attrs = node.zarr.root_attrs
        assert "image-label" in attrs.get("ome", attrs)
        level0 = np.asarray(node.data[0])
        assert np.array_equal(level0, arr), name
        assert len(node.data) == len(ms.levels)
        f = ms.factor(1, base=0)
        assert np.array_equal(np.asarray(node.data[1]), arr[::f[0], ::f[1], ::f[2]][tuple(slice(0, n) for n in
                                                                                         ms.levels[1].shape)])
    s2 = open_session(sess.root)
    assert [e["action"] for e in interventions.entries(s2)][-1] == "labels exported"
    s2.close()


def test_cli_labels_import_and_export(sess, tmp_path):
    full = np.zeros(SHAPE, np.uint8)
    full[1, 1:3, 1:3] = 1
    tifffile.imwrite(tmp_path / "n.tif", full, photometric="minisblack")
    r = run_cli("labels", "import", "--session", str(sess.root), "--from", str(tmp_path / "n.tif"),
                "--classes", "bg,mito")
    assert r.returncode == 0 and "1 crop imported from TIFF" in r.stdout
    r = run_cli("labels", "export", "--session", str(sess.root), "--what", "crops")
    assert r.returncode == 0 and "labels/crops" in r.stdout
    r = run_cli("labels", "export", "--session", str(sess.root), "--what", "prediction")
    assert r.returncode == 2 and "no completed prediction yet" in r.stderr and "\n" not in r.stderr.strip()
