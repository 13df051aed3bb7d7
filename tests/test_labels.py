"""Crops and held-out regions: validation, storage, random frozen draws."""

import numpy as np
import pytest
import tifffile

from sessions import labels, rounds
from sessions.errors import FibError
from sessions.geometry import Box, unfmt


def _tif(tmp_path, arr, name="lab.tif"):
    tifffile.imwrite(tmp_path / name, arr)
    return tmp_path / name


def test_crop_stored_and_indexed(ingested, tmp_path):
    session, _, gt = ingested
    rnd = rounds.new_round(session)
    lab = np.zeros((8, 16, 16), np.uint8)
    lab[2:4] = 1
    lab[4:6] = 2
    row = labels.add_crop(session, rnd["n"], "blobs", _tif(tmp_path, lab), (3, 4, 5), ["bg", "blob"])
    import zarr
    stored = zarr.open_array(str(session.path(row["path"])), mode="r")
    np.testing.assert_array_equal(stored[:], lab)
    assert row["labelled_voxels"] == int((lab > 0).sum()) and row["offset"] == "3,4,5"


def test_crop_outside_volume(ingested, tmp_path):
    session, _, _ = ingested
    rnd = rounds.new_round(session)
    with pytest.raises(FibError, match="outside volume"):
        labels.add_crop(session, rnd["n"], "blobs", _tif(tmp_path, np.ones((8, 16, 16), np.uint8)),
                        (30, 0, 0), ["bg", "blob"])
    assert session.db["crops"].count == 0


def test_crop_labels_beyond_classes_and_empty(ingested, tmp_path):
    session, _, _ = ingested
    rnd = rounds.new_round(session)
    with pytest.raises(FibError, match="label value 3"):
        labels.add_crop(session, rnd["n"], "blobs", _tif(tmp_path, np.full((2, 4, 4), 3, np.uint8)),
                        (0, 0, 0), ["bg", "blob"])
    with pytest.raises(FibError, match="unlabelled"):
        labels.add_crop(session, rnd["n"], "blobs", _tif(tmp_path, np.zeros((2, 4, 4), np.uint8)),
                        (0, 0, 0), ["bg", "blob"])


def test_classes_are_fixed_by_first_crop(ingested, tmp_path):
    session, _, _ = ingested
    rnd = rounds.new_round(session)
    labels.add_crop(session, rnd["n"], "blobs", _tif(tmp_path, np.ones((2, 4, 4), np.uint8)), (0, 0, 0), ["bg", "blob"])
    with pytest.raises(FibError, match="session's classes are bg,blob"):
        labels.add_crop(session, rnd["n"], "blobs", _tif(tmp_path, np.ones((2, 4, 4), np.uint8)),
                        (4, 0, 0), ["a", "b"])


def test_holdout_random_frozen_and_clear_of_crops(ingested, tmp_path):
    session, _, _ = ingested
    rnd = rounds.new_round(session)
    labels.add_crop(session, rnd["n"], "blobs", _tif(tmp_path, np.ones((16, 48, 48), np.uint8)), (0, 0, 0), ["bg", "blob"])
    regions = labels.draw_holdout(session, "blobs", 4, (8, 24, 24), seed=3)
    boxes = [Box(unfmt(r["offset"]), unfmt(r["shape"])) for r in regions]
    crop = Box((0, 0, 0), (16, 48, 48))
    assert len(boxes) == 4
    assert not any(b.overlaps(crop) for b in boxes)
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    with pytest.raises(FibError, match="frozen"):
        labels.draw_holdout(session, "blobs", 4, (8, 24, 24), seed=4)
    # and a later crop may not overlap them
    b = boxes[0]
    with pytest.raises(FibError, match="overlaps held-out region"):
        labels.add_crop(session, rnd["n"], "blobs", _tif(tmp_path, np.ones(b.shape, np.uint8)), b.offset)


def test_holdout_draw_depends_on_seed(tmp_path):
    from sessions.workspace import init_session
    from sessions.volumes import catalog
    raw = np.zeros((32, 96, 96), np.uint8)
    tifffile.imwrite(tmp_path / "v.tif", raw)
    offsets = []
    for i, seed in enumerate((1, 1, 2)):
        s = init_session(tmp_path / f"s{i}")
        catalog.ingest(s, tmp_path / "v.tif", voxel_size=(8, 8, 8))
        offsets.append([r["offset"] for r in labels.draw_holdout(s, "v", 3, (8, 16, 16), seed=seed)])
    assert offsets[0] == offsets[1] and offsets[0] != offsets[2]


def test_holdout_label_shape_must_match(ingested, tmp_path):
    session, _, _ = ingested
    r = labels.draw_holdout(session, "blobs", 1, (8, 16, 16), seed=0)[0]
    with pytest.raises(FibError, match="shape 8,16,17"):
        labels.label_holdout(session, r["id"], _tif(tmp_path, np.ones((8, 16, 17), np.uint8)), ["bg", "blob"])
    labels.label_holdout(session, r["id"], _tif(tmp_path, np.ones((8, 16, 16), np.uint8)), ["bg", "blob"])
    with pytest.raises(FibError, match="frozen"):
        labels.label_holdout(session, r["id"], _tif(tmp_path, np.ones((8, 16, 16), np.uint8)))
