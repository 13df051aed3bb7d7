"""The viewer's read path on real OME-Zarr volumes and a real session."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tifffile
import zarr
from zarr.storage import LocalStore, WrapperStore

from sessions import jobs, labels, rounds
from sessions.volumes import catalog, omezarr
from sessions.jobfiles import atomic_write_json
from sessions.volumes.slices import AXES, MAX_UPSAMPLE, SliceSource, choose_level
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
    catalog.write_volume(s, "v", raw, VOXEL, source="test")
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
    ms = catalog.open_volume(s, "v")
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
    # view = the level it picks, then read: overlays come along
    data, level = src.view(axis, 3, (0, 5, 0, 5), (5, 5))
    again = src.read(axis, 3, level, (0, 5, 0, 5))
    assert level == 0 and all(np.array_equal(a, b) for a, b in
                              ((data.raw, again.raw), (data.labels, again.labels), (data.prediction, again.prediction)))


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
    nms = (4, 8, 12, 15, 16, 40, 64, 1e6)
    # never coarser than the screen pixel
    assert [choose_level(scales, "xy", nm, 1.0) for nm in nms] == [0, 0, 0, 0, 1, 2, 3, 3]
    # nearest in log scale: a level pixel may be up to √2 screen pixels
    assert [choose_level(scales, "xy", nm) for nm in nms] == [0, 0, 1, 1, 1, 2, 3, 3]
    # xz: z (24 nm) can get no finer than level 0's, so only x decides until z coarsens
    assert [choose_level(scales, "xz", nm, 1.0) for nm in (8, 16, 32, 48, 64)] == [0, 1, 2, 2, 3]
    assert [choose_level(scales, "xz", nm) for nm in (8, 16, 32, 34, 48)] == [0, 1, 2, 2, 3]


@pytest.mark.parametrize("rule, expected", [
    (MAX_UPSAMPLE, {"xy": [0, 1, 1, 2, 2], "xz": [0, 1, 1, 1, 2]}),
    (1.0, {"xy": [0, 0, 1, 1, 2], "xz": [0, 0, 1, 1, 1]}),
])
def test_view_picks_the_level(session, rule, expected):
    """576 × 1152 nm on screens of 8, 12, 16, 24, 36 nm pixels; levels are (24,8,8), (24,16,16), (48,32,32) nm."""
    src = SliceSource(catalog.open_volume(session[0], "v"), max_upsample=rule)
    assert src.scales == [(24, 8, 8), (24, 16, 16), (48, 32, 32)]
    rows0 = {"xy": 72, "xz": 24}   # 576 nm of y, or of z
    for axis, levels in expected.items():
        got = [src.view(axis, 3, (0, rows0[axis], 0, 144), (576 // nm, 1152 // nm))[1] for nm in (8, 12, 16, 24, 36)]
        assert got == levels, axis


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """Small chunks (4,16,16) in shards (8,32,32), so views cross both; a prediction on another, unsharded grid."""
    tmp = tmp_path_factory.mktemp("sharded")
    shape, vs = (40, 150, 130), (8, 8, 8)
    rng = np.random.default_rng(1)
    paths = tmp / "v.ome.zarr", tmp / "p.ome.zarr"
    for path, kw in zip(paths, ({"chunks": (4, 16, 16), "shards": (8, 32, 32)}, {"chunks": (8, 24, 40)})):
        ms = omezarr.create(path, shape, vs, **kw)
        ms.levels[0][:] = rng.integers(1, 256, shape, dtype=np.uint8)
        omezarr.build_pyramid(ms)
    return paths


def span(lo: float, hi: float, f: int, n: int) -> tuple[int, int]:
    return max(math.floor(lo / f), 0), min(math.ceil(hi / f), n)


@pytest.mark.parametrize("axis", ["xy", "xz", "yz"])
def test_view_returns_the_level_pixels(sharded, axis):
    ms, pred = (omezarr.open_multiscale(p) for p in sharded)
    src = SliceSource(ms, prediction=pred)
    normal, ra, ca = AXES[axis]
    region0 = (13.5, 63.5, 29.25, 89.25)   # unaligned; past the plane's end for yz (z is 40 deep)
    for out, want in (((50, 60), 0), ((25, 30), 1), ((12, 15), 2)):
        f = 2 ** want
        levels = ms.levels[want][:], pred.levels[want][:]
        for pos in (0, 13, ms.shape[normal] - 1):
            data, level = src.view(axis, pos, region0, out)
            r0, r1 = span(*region0[:2], f, levels[0].shape[ra])
            c0, c1 = span(*region0[2:], f, levels[0].shape[ca])
            assert level == want and data.origin == (r0, c0)
            for got, arr in zip((data.raw, data.prediction), levels):
                assert np.array_equal(got, plane(arr, axis, pos // f)[r0:r1, c0:c1])


class CountingStore(WrapperStore):
    """Records every key read, to see which chunks a slice read touches."""

    def __init__(self, store):
        super().__init__(store)
        self.keys: list[str] = []

    async def get(self, key, prototype, byte_range=None):
        self.keys.append(key)
        return await self._store.get(key, prototype, byte_range)


def test_stepping_and_panning_read_only_new_chunks(sharded):
    path = sharded[0]
    store = CountingStore(LocalStore(str(path), read_only=True))
    group = zarr.open_group(store=store, mode="r")
    ms = omezarr.open_multiscale(path)
    src = SliceSource(omezarr.Multiscale(path, group, [group[str(i)] for i in range(len(ms.levels))], ms.scales))
    ch = ms.levels[0].chunks

    def look(z: int, c0: int) -> tuple[int, int]:
        """Chunks loaded and storage reads for a 40×40 xy view at level 0."""
        store.keys.clear()
        loads = src.cache.reads
        data, level = src.view("xy", z, (20, 60, c0, c0 + 40), (40, 40))
        assert level == 0 and np.array_equal(data.raw, ms.levels[0][z, 20:60, c0:c0 + 40])
        return src.cache.reads - loads, len([k for k in store.keys if "/c/" in k])

    def under(lo: int, hi: int, c: int) -> set[int]:
        return set(range(lo // c, (hi - 1) // c + 1))

    rows = len(under(20, 60, ch[1]))
    loads, reads = look(5, 20)
    assert loads == rows * len(under(20, 60, ch[2])) and reads > 0
    assert look(6, 20) == look(7, 20) == (0, 0)    # z 4..7 is one chunk deep: no storage read at all
    loads, reads = look(8, 20)                       # the next chunk layer
    assert loads == rows * len(under(20, 60, ch[2])) and reads > 0
    loads, reads = look(8, 30)                       # a pan loads only the chunk column it uncovers
    assert loads == rows * len(under(30, 70, ch[2]) - under(20, 60, ch[2])) > 0 and reads > 0
    assert look(8, 25) == (0, 0)                     # panning back


def test_cache_stays_within_its_byte_bound(sharded):
    ms = omezarr.open_multiscale(sharded[0])
    vol = ms.levels[0][:]
    chunk = math.prod(ms.levels[0].chunks)
    src = SliceSource(ms, cache_bytes=5 * chunk)
    rng = np.random.default_rng(2)
    views = [(int(rng.integers(0, 40)), int(rng.integers(0, 100)), int(rng.integers(0, 80))) for _ in range(60)]

    def look(v):
        z, r0, c0 = v
        data, _ = src.view("xy", z, (r0, r0 + 40, c0, c0 + 40), (40, 40))
        assert np.array_equal(data.raw, vol[z, r0:r0 + 40, c0:c0 + 40])
        assert src.cache.nbytes <= src.cache.max_bytes

    with ThreadPoolExecutor(4) as pool:   # the TUI's frame worker and a cancelled one may overlap
        list(pool.map(look, views))
    assert 0 < src.cache.nbytes <= 5 * chunk < src.cache.reads * chunk
    tiny = SliceSource(ms, cache_bytes=chunk - 1)   # a chunk larger than the bound is used, not kept
    assert np.array_equal(tiny.view("xy", 3, (0, 40, 0, 40), (40, 40))[0].raw, vol[3, :40, :40])
    assert tiny.cache.nbytes == 0
