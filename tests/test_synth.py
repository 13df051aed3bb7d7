"""Behaviour of the synthetic FIB-SEM generator: determinism, slab
independence, ground truth that matches the pixels, and atomic TIFF output."""

import json
import math

import cc3d
import numpy as np
import pytest
import tifffile

from sessions.errors import FibError
from sessions.synth import (
    BACKGROUND,
    CLASS_NAMES,
    ENVELOPE,
    MITO,
    NUCLEUS,
    PORE,
    iter_slabs,
    make_scene,
    write_tiff,
)

SHAPE, VOXEL, SEED = (64, 256, 256), (10.0, 10.0, 10.0), 3


def render(scene, slab=16):
    raws, labs = [], []
    z_expected = 0
    for z0, raw, lab in iter_slabs(scene, slab):
        assert z0 == z_expected and raw.dtype == np.uint8 and lab.dtype == np.uint8
        assert raw.shape == lab.shape == (min(slab, scene.shape[0] - z0), *scene.shape[1:])
        z_expected += raw.shape[0]
        raws.append(raw)
        labs.append(lab)
    assert z_expected == scene.shape[0]
    return np.concatenate(raws), np.concatenate(labs)


@pytest.fixture(scope="module")
def big():
    scene = make_scene(SHAPE, SEED, VOXEL)
    raw, lab = render(scene)
    return scene, raw, lab


def test_constants():
    assert (BACKGROUND, NUCLEUS, ENVELOPE, PORE, MITO) == (0, 1, 2, 3, 4)
    assert CLASS_NAMES == ("background", "nucleus", "envelope", "pore", "mito")


def test_same_seed_same_bytes_other_seed_differs():
    a = render(make_scene((24, 96, 96), 1))
    b = render(make_scene((24, 96, 96), 1))
    c = render(make_scene((24, 96, 96), 2))
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
    assert a[0].tobytes() != c[0].tobytes()
    assert a[1].tobytes() != c[1].tobytes()


def test_slab_size_does_not_change_any_voxel():
    scene = make_scene((40, 96, 128), 5, (9.0, 8.0, 8.0))
    raw7, lab7 = render(scene, 7)
    raw16, lab16 = render(scene, 16)
    raw_all, lab_all = render(scene, 40)
    assert np.array_equal(raw7, raw16) and np.array_equal(raw7, raw_all)
    assert np.array_equal(lab7, lab16) and np.array_equal(lab7, lab_all)
    assert len(np.unique(lab7)) >= 3  # the comparison covered real content


def test_every_class_is_present(big):
    _, _, lab = big
    counts = np.bincount(lab.ravel(), minlength=len(CLASS_NAMES))
    assert len(counts) == len(CLASS_NAMES)
    assert np.all(counts > 0), dict(zip(CLASS_NAMES, counts.tolist()))


def test_pore_components_match_truth(big):
    scene, _, lab = big
    vs = np.asarray(VOXEL)
    comp, n = cc3d.connected_components(lab == PORE, connectivity=26, return_N=True)
    assert n > 5
    idx = np.nonzero(comp)
    ids = comp[idx]
    size = np.bincount(ids, minlength=n + 1)[1:]
    centroids = np.stack([np.bincount(ids, weights=c, minlength=n + 1)[1:] for c in idx], 1) / size[:, None]

    margin = 9  # > pore radius (5.5 voxels) + half the envelope
    hi = np.asarray(SHAPE) - 1 - margin
    centres = np.array([p.centre_nm for p in scene.pores]) / vs - 0.5  # voxel index units
    inner_truth = centres[np.all((centres >= margin) & (centres <= hi), axis=1)]
    inner_cc = centroids[np.all((centroids >= margin) & (centroids <= hi), axis=1)]
    assert len(inner_truth) >= 5
    assert abs(len(inner_cc) - len(inner_truth)) <= 2
    # every pore well inside the volume is drawn where the truth says
    dist = np.linalg.norm(inner_truth[:, None] - centroids[None], axis=2).min(axis=1)
    assert dist.max() < 2.0
    # a whole pore is a 110 nm disc through the 46 nm envelope
    inner_size = size[np.all((centroids >= margin) & (centroids <= hi), axis=1)]
    expected = math.pi * 55.0**2 * 46.0 / vs.prod()
    assert abs(np.median(inner_size) / expected - 1) < 0.2
    # whole volume: truth counts pores whose centre is inside; pores cut by
    # the border add components, but only those within a pore radius of it
    truth = scene.truth()
    assert truth["pore_count"] == sum(nu["pore_count"] for nu in truth["nuclei"])
    outside_by = np.maximum(np.maximum(-0.5 - centres, centres - (np.asarray(SHAPE) - 0.5)), 0).max(axis=1)
    assert truth["pore_count"] == int((outside_by == 0).sum())
    assert truth["pore_count"] - 1 <= n <= int((outside_by < 6.0).sum())


def test_pore_density_and_truth_json(big):
    scene, _, _ = big
    truth = json.loads(json.dumps(scene.truth()))  # JSON-able
    assert 4 <= truth["pore_density_per_um2"] <= 12
    assert truth["shape"] == list(SHAPE) and truth["voxel_size_nm"] == list(VOXEL)
    assert truth["seed"] == SEED and truth["version"]
    assert truth["mitochondria_count"] == len(scene.mitochondria) > 0
    assert 1 <= len(truth["nuclei"]) <= 3
    for nu in truth["nuclei"]:
        assert all(1000 <= r <= 3000 for r in nu["radii_nm"])
        assert 0 < nu["envelope_area_um2"] <= nu["envelope_area_total_um2"]
    # pores keep their minimum spacing
    c = np.array([p.centre_nm for p in scene.pores])
    d = np.linalg.norm(c[:, None] - c[None], axis=2)
    np.fill_diagonal(d, np.inf)
    assert d.min() >= 130.0


def test_shading_darkens_high_x(big):
    _, raw, lab = big
    bg = lab == BACKGROUND
    left = raw[:, :, :32][bg[:, :, :32]].mean()
    right = raw[:, :, -32:][bg[:, :, -32:]].mean()
    assert left > 1.2 * right


def test_no_shading_keeps_sides_level():
    scene = make_scene((24, 128, 128), SEED, VOXEL, shading=0.0)
    raw, lab = render(scene)
    bg = lab == BACKGROUND
    left = raw[:, :, :16][bg[:, :, :16]].mean()
    right = raw[:, :, -16:][bg[:, :, -16:]].mean()
    assert abs(left - right) < 0.1 * left


def test_mitochondria_darker_than_background(big):
    _, raw, lab = big
    assert raw[lab == MITO].mean() < raw[lab == BACKGROUND].mean() - 30


@pytest.mark.parametrize("voxel", [8.0, 40.0])
def test_envelope_seals_nucleus_at_any_voxel_size(voxel):
    scene = make_scene((16, 96, 96), SEED, (voxel,) * 3)
    _, lab = render(scene)
    assert (lab == NUCLEUS).any() and (lab == ENVELOPE).any()
    for ax in range(3):
        a = np.moveaxis(lab, ax, 0)
        pair = {(int(x), int(y)) for x, y in zip(a[:-1].ravel(), a[1:].ravel()) if x != y}
        outside = {BACKGROUND, MITO}
        assert not any((x == NUCLEUS and y in outside) or (y == NUCLEUS and x in outside) for x, y in pair)


def test_same_cell_at_finer_sampling():
    fine = make_scene((32, 128, 128), 11, (8.0, 8.0, 8.0))
    coarse = make_scene((16, 64, 64), 11, (16.0, 16.0, 16.0))
    assert [n.centre_nm for n in fine.nuclei] == [n.centre_nm for n in coarse.nuclei]
    assert len(fine.pores) == len(coarse.pores) and len(fine.mitochondria) == len(coarse.mitochondria)
    fl, cl = render(fine)[1], render(coarse)[1]
    assert abs((fl == NUCLEUS).mean() - (cl == NUCLEUS).mean()) < 0.03


def test_write_tiff_round_trip(tmp_path):
    scene = make_scene((20, 64, 80), 4, VOXEL)
    raw_path, lab_path = tmp_path / "vol.tif", tmp_path / "vol_labels.tif"
    calls = []
    write_tiff(scene, raw_path, lab_path, slab=6, progress=lambda d, t: calls.append((d, t)))
    raw, lab = render(scene)
    for path, want in ((raw_path, raw), (lab_path, lab)):
        with tifffile.TiffFile(path) as tf:
            assert tf.is_bigtiff and len(tf.pages) == 20
            got = tf.asarray()
        assert got.dtype == np.uint8 and got.shape == (20, 64, 80)
        assert np.array_equal(got, want)
    assert calls == [(6, 20), (12, 20), (18, 20), (20, 20)]
    assert not list(tmp_path.glob("*.partial"))
    truth = json.loads((tmp_path / "vol.truth.json").read_text())
    assert truth == json.loads(json.dumps(scene.truth()))


def test_write_tiff_interrupted_leaves_nothing_complete(tmp_path):
    scene = make_scene((20, 64, 64), 4, VOXEL)

    def boom(done, total):
        if done >= 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_tiff(scene, tmp_path / "vol.tif", tmp_path / "lab.tif", slab=5, progress=boom)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs, name, bad",
    [
        ({"shape": (8, 256, 256)}, "shape", "(8, 256, 256)"),
        ({"shape": (64, 256)}, "shape", "(64, 256)"),
        ({"shape": (64.0, 256, 256)}, "shape", "64.0"),
        ({"voxel_size": (0.0, 8.0, 8.0)}, "voxel_size", "0.0"),
        ({"voxel_size": (8.0, math.nan, 8.0)}, "voxel_size", "nan"),
        ({"voxel_size": (8.0, 8.0, math.inf)}, "voxel_size", "inf"),
        ({"pore_density": 0}, "pore_density", "0"),
        ({"pore_density": -2.0}, "pore_density", "-2.0"),
        ({"shading": 1.0}, "shading", "1.0"),
        ({"shading": -0.1}, "shading", "-0.1"),
        ({"seed": -1}, "seed", "-1"),
    ],
)
def test_bad_input_raises_fib_error_naming_it(kwargs, name, bad):
    args = {"shape": (32, 64, 64), "seed": 0} | kwargs
    with pytest.raises(FibError) as exc:
        make_scene(**args)
    msg = str(exc.value)
    assert f"{name}=" in msg and bad in msg and "\n" not in msg


def test_bad_slab_raises_fib_error():
    scene = make_scene((16, 32, 32), 0)
    with pytest.raises(FibError, match="slab=0"):
        next(iter_slabs(scene, 0))
