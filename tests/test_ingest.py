"""Ingest: TIFF and slice folders → OME-Zarr pyramid, provenance, and every refusal."""

import hashlib

import numpy as np
import pytest
import tifffile
import zarr

from sessions import omezarr, volumes
from sessions.errors import FibError


def test_multipage_tiff_becomes_ome_zarr_pyramid(ingested):
    session, raw, _ = ingested
    row = volumes.get_volume(session, "blobs")
    ms = volumes.open_volume(session, "blobs")
    assert len(ms.levels) >= 2 and row["levels"] == len(ms.levels)
    np.testing.assert_array_equal(ms.levels[0][:], raw)
    # level 1 is the 2×2×2 block mean of level 0 (isotropic voxels)
    expect = np.rint(raw.reshape(16, 2, 48, 2, 48, 2).astype(np.float32).mean(axis=(1, 3, 5)))
    np.testing.assert_array_equal(ms.levels[1][:], expect.astype(np.uint8))
    assert ms.scales[1] == (16.0, 16.0, 16.0)
    meta = zarr.open_group(str(ms.path), mode="r").attrs["ome"]
    assert meta["version"] == "0.5"
    assert meta["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [8.0, 8.0, 8.0]


def test_source_checksum_recorded(ingested, blobs):
    session, _, _ = ingested
    path = blobs[0]
    assert volumes.get_volume(session, "blobs")["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_anisotropic_pyramid_keeps_coarse_axis():
    plan = omezarr.pyramid_plan((20, 1024, 1024), (50, 4.6, 4.6))
    vs = [50, 4.6, 4.6]
    for f in plan:  # z (50 nm) is halved only once xy has caught up to within 2x
        if f[0] == 2:
            assert vs[0] < 2 * vs[1], (plan, vs)
        vs = [v * k for v, k in zip(vs, f)]
    assert plan[:3] == [(1, 2, 2)] * 3


def test_folder_of_slices_natural_order(session, tmp_path):
    folder = tmp_path / "slices"
    folder.mkdir()
    data = np.arange(12 * 40 * 40, dtype=np.uint32).reshape(12, 40, 40).astype(np.uint8)
    for z in range(12):  # slice_10 must come after slice_9
        tifffile.imwrite(folder / f"slice_{z}.tif", data[z])
    volumes.ingest(session, folder, name="fold", voxel_size=(10, 5, 5))
    np.testing.assert_array_equal(volumes.open_volume(session, "fold").levels[0][:], data)


@pytest.mark.parametrize("make, match", [
    (lambda p: p / "missing.tif", "no such file"),
    (lambda p: (p / "text.tif").write_text("not an image") and p / "text.tif", "not a readable TIFF"),
])
def test_bad_sources(session, tmp_path, make, match):
    with pytest.raises(FibError, match=match):
        volumes.ingest(session, make(tmp_path), voxel_size=(8, 8, 8))
    assert session.db["volumes"].count == 0


def test_missing_voxel_size(session, blobs):
    with pytest.raises(FibError, match="--voxel-size"):
        volumes.ingest(session, blobs[0])
    assert not any(session.path("volumes").iterdir())


def test_mismatched_slices_named(session, tmp_path):
    folder = tmp_path / "slices"
    folder.mkdir()
    tifffile.imwrite(folder / "a1.tif", np.zeros((20, 20), np.uint8))
    tifffile.imwrite(folder / "a2.tif", np.zeros((20, 21), np.uint8))
    with pytest.raises(FibError, match="a2.tif"):
        volumes.ingest(session, folder, voxel_size=(8, 8, 8))


def test_unsupported_dtype(session, tmp_path):
    tifffile.imwrite(tmp_path / "f.tif", np.zeros((4, 20, 20), np.float64), photometric="minisblack")
    with pytest.raises(FibError, match="float64"):
        volumes.ingest(session, tmp_path / "f.tif", voxel_size=(8, 8, 8))


def test_failed_write_leaves_nothing(session, blobs, monkeypatch):
    """A crash mid-ingest leaves neither a volume row nor a complete-looking store."""
    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(omezarr, "build_pyramid", boom)
    with pytest.raises(RuntimeError):
        volumes.ingest(session, blobs[0], name="x", voxel_size=(8, 8, 8))
    assert session.db["volumes"].count == 0
    assert list(session.path("volumes").iterdir()) == []


def test_duplicate_name_refused(ingested, blobs):
    session, _, _ = ingested
    with pytest.raises(FibError, match="already exists"):
        volumes.ingest(session, blobs[0], name="blobs", voxel_size=(8, 8, 8))
