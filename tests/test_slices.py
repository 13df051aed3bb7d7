"""The viewer's read path on real OME-Zarr volumes and a real session."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr
from zarr.storage import LocalStore, WrapperStore

from sessions import jobs, labels, omezarr, rounds, volumes
from sessions.jobfiles import atomic_write_json
from sessions.slices import AXES, SliceSource, choose_level
from sessions.workspace import init_session

SHAPE, VOXEL = (24, 150, 140), (24.0, 8.0, 8.0)   # anisotropic: z is 3x coarser


def plane(vol: np.ndarray, axis: str, idx: int) -> np.ndarray:
    return np.take(vol, idx, axis=AXES[axis][0])


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """A session with a volume, a crop (round 1), a labelled held-out region, and a prediction."""
    tmp = tmp_path_factory.mktemp("slices")
    s = init_session(tmp / "s")
    raw = np.random.default_rng(0).integers(0, 256, SHAPE, dtype=np.uint8)
    volumes.write_volume(s, "v", SHAPE, VOXEL, [(0, raw)], source="test", sha256="0")
    r = rounds.new_round(s)
    crop = np.zeros((6, 40, 30), np.uint8)
    crop[:, 5:35, 3:27] = 1
    crop[2:4, 10:20, 10:20] = 2
    tifffile.imwrite(tmp / "crop.tif", crop, photometric="minisblack")
    labels.add_crop(s, r["n"], "v", tmp / "crop.tif", (4, 20, 50), classes=["bg", "mito"])
    region = labels.draw_holdout(s, "v", 1, (5, 20, 20), seed=3)[0]
    held = np.full((5, 20, 20), 2, np.uint8)
    tifffile.imwrite(tmp / "held.tif", held, photometric="minisblack")
    labels.label_holdout(s, region["id"], tmp / "held.tif")
    expected = np.zeros(SHAPE, np.uint8)
    expected[4:10, 20:60, 50:80] = crop
    o = tuple(int(v) for v in region["offset"].split(","))
    expected[o[0]:o[0] + 5, o[1]:o[1] + 20, o[2]:o[2] + 20] = held
    job = jobs.create(s, r["n"], "predict", {"volume": {"name": "v"}}, "local")
    pred = omezarr.create(jobs.job_dir(s, job) / "prediction.ome.zarr", SHAPE, VOXEL)
    pred.levels[0][:] = 255 - raw
    omezarr.build_pyramid(pred)
    atomic_write_json(jobs.job_dir(s, job) / "result.json", {"status": "completed", "output": "prediction.ome.zarr"})
    jobs.finish(s, job, "COMPLETED")
    yield s, raw, expected
    s.close()


@pytest.mark.parametrize("axis", ["xy", "xz", "yz"])
def test_read_matches_the_level_arrays(session, axis):
    s, raw, _ = session
    src = SliceSource.open(s, "v")
    assert src.levels >= 2 and src.prediction is not None
    ms = volumes.open_volume(s, "v")
    normal = AXES[axis][0]
    for level in range(src.levels):
        f = src.step(axis, level)
        arr, pred = ms.levels[level][:], src.prediction.levels[level][:]
        rows, cols = src.plane_shape(axis, level)
        for pos in (0, SHAPE[normal] // 2 + 1, SHAPE[normal] - 1):
            for region in ((0, rows, 0, cols), (1, max(2, rows // 3), cols // 2, cols)):
                r0, r1, c0, c1 = region
                got = src.read(axis, pos, level, region)
                assert np.array_equal(got.raw, plane(arr, axis, pos // f)[r0:r1, c0:c1])
                assert np.array_equal(got.prediction, plane(pred, axis, pos // f)[r0:r1, c0:c1])
    assert np.array_equal(src.read(axis, 3, 0, (0, 5, 0, 5)).raw, plane(raw, axis, 3)[:5, :5])


@pytest.mark.parametrize("axis", ["xy", "xz", "yz"])
def test_labels_pasted_in_place(session, axis):
    s, _, expected = session
    src = SliceSource.open(s, "v")
    normal, ra, ca = AXES[axis]
    for pos in range(0, SHAPE[normal], 3):
        rows, cols = src.plane_shape(axis, 0)
        assert np.array_equal(src.read(axis, pos, 0, (0, rows, 0, cols)).labels, plane(expected, axis, pos))
    # coarser levels sample the level-0 voxel at each pixel's centre (nearest, crisp class edges)
    level = src.levels - 1
    fr, fc = (round(src.scales[level][a] / src.scales[0][a]) for a in (ra, ca))
    rows, cols = src.plane_shape(axis, level)
    pos = (6, 30, 60)[normal]  # through the crop
    full = plane(expected, axis, pos)
    assert full.any()
    rr = np.minimum(np.arange(rows) * fr + fr // 2, full.shape[0] - 1)
    cc = np.minimum(np.arange(cols) * fc + fc // 2, full.shape[1] - 1)
    assert np.array_equal(src.read(axis, pos, level, (0, rows, 0, cols)).labels, full[np.ix_(rr, cc)])


def test_read_rejects_outside(session):
    src = SliceSource.open(session[0], "v")
    with pytest.raises(ValueError):
        src.read("xy", SHAPE[0], 0, (0, 1, 0, 1))
    with pytest.raises(ValueError):
        src.read("xy", 0, 0, (0, SHAPE[1] + 1, 0, 1))


def test_choose_level():
    scales = [(24, 8, 8), (24, 16, 16), (24, 32, 32), (48, 64, 64)]
    assert [choose_level(scales, "xy", nm) for nm in (4, 8, 15, 16, 40, 64, 1e6)] == [0, 0, 0, 1, 2, 3, 3]
    # xz: z (24 nm) can get no finer than level 0's, so only x decides until z coarsens
    assert [choose_level(scales, "xz", nm) for nm in (8, 16, 32, 48, 64)] == [0, 1, 2, 2, 3]


class CountingStore(WrapperStore):
    """Records every key read, to see which chunks a slice read touches."""

    def __init__(self, store):
        super().__init__(store)
        self.keys: list[str] = []

    async def get(self, key, prototype, byte_range=None):
        self.keys.append(key)
        return await self._store.get(key, prototype, byte_range)


def test_zoomed_in_read_touches_few_chunks(tmp_path):
    path = tmp_path / "big.ome.zarr"
    ms = omezarr.create(path, (4, 1024, 1024), (8, 8, 8), chunks=(1, 64, 64))
    ms.levels[0][:] = np.broadcast_to(np.arange(1024).astype(np.uint8), (4, 1024, 1024))
    store = CountingStore(LocalStore(str(path), read_only=True))
    group = zarr.open_group(store=store, mode="r")
    counted = omezarr.Multiscale(path, group, [group[str(i)] for i in range(len(ms.levels))], ms.scales)
    src = SliceSource(counted)
    store.keys.clear()
    got = src.read("xy", 2, 0, (300, 310, 700, 720))
    chunks = {k for k in store.keys if "/c/" in k}
    assert np.array_equal(got.raw, np.broadcast_to(np.arange(700, 720).astype(np.uint8), (10, 20)))
    assert 0 < len(chunks) <= 4 < (1024 // 64) ** 2  # one 128x128 tile of 64x64 chunks, not the whole slice
    store.keys.clear()
    src.read("xy", 2, 0, (302, 308, 705, 715))
    assert not [k for k in store.keys if "/c/" in k]  # served from the tile cache
