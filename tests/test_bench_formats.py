"""`fibtui bench formats`: real files in every format, real reads, numbers that make sense."""

import json

import numpy as np
import pytest
import tifffile

from fibtui import bench_formats as bf

SMALL = ["--shape", "40,300,200", "--crop", "8,64,64", "--slice-size", "100", "--crops", "3", "--slices", "3"]


def fibtui(capsys, *args):
    """The real entry point in-process: exit code, stdout, stderr."""
    from fibtui.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def source(tmp_path):
    """A small uint8 stack whose sides do not divide the chunks, so tiling and edge chunks are exercised."""
    vol = np.random.default_rng(1).normal(128, 30, (20, 90, 70)).clip(0, 255).astype(np.uint8)
    path = tmp_path / "src.tif"
    tifffile.imwrite(path, vol)
    return path, vol


def test_json_rows_for_all_four_formats(capsys, tmp_path, source):
    work = tmp_path / "work"
    rc, out, err = fibtui(capsys, "bench", "formats", *SMALL, "--source", source[0], "--workdir", work, "--json")
    assert rc == 0, err
    rows = json.loads(out)
    assert [r["format"] for r in rows] == ["TIFF", "HDF5", "Zarr", "Parquet"]
    for r in rows:
        assert r["verified"] is True and r["size_bytes"] > 0 and r["files"] >= 1 and r["write_s"] > 0
        assert min(r["crops_per_s"], r["crop_mb_per_s"], r["xy_per_s"], r["xz_per_s"]) > 0
        assert r["shape"] == [40, 300, 200] and "src.tif" in r["data"]
        if r["cache"] == "cold":  # eviction worked: every request went to disk
            assert r["disk_bytes_per_crop"] > 0 and r["disk_bytes_per_xz"] > 0
    assert rows[0]["compression_ratio"] == pytest.approx(1.0, abs=0.05)  # TIFF is stored raw
    assert list(work.iterdir()) == []  # temporary folder removed


def test_table_names_formats_data_and_cache(capsys, tmp_path, source):
    rc, out, _ = fibtui(capsys, "bench", "formats", *SMALL, "--source", source[0], "--workdir", tmp_path / "w",
                        "--keep", "--warm")
    assert rc == 0
    for word in ("TIFF", "HDF5", "Zarr", "Parquet", "gzip-1", "row group", "matched", "Cache: warm", "src.tif"):
        assert word in out
    kept = next((tmp_path / "w").iterdir())
    assert {p.name for p in kept.iterdir()} == {"volume.tif", "volume.h5", "volume.ome.zarr", "volume.parquet"}


@pytest.mark.parametrize("fmt", bf.FORMATS, ids=lambda f: f.name)
def test_every_reader_returns_exact_boxes_including_edges(tmp_path, fmt):
    vol = np.random.default_rng(2).integers(0, 256, (37, 150, 140), dtype=np.uint8)
    f = fmt(tmp_path, vol.shape)
    f.write(vol, lambda z: None)
    boxes = [(slice(0, 37), slice(0, 150), slice(0, 140)), (slice(30, 37), slice(120, 150), slice(130, 140)),
             (slice(5, 6), slice(3, 131), slice(0, 129)), (slice(0, 37), slice(149, 150), slice(11, 140))]
    with f.reader() as reader:
        for box in boxes:
            bf.check(f.name, box, reader.read(box), vol)


def test_a_wrong_read_fails_loudly():
    vol = np.zeros((4, 4, 4), np.uint8)
    box = (slice(0, 2), slice(0, 2), slice(0, 2))
    with pytest.raises(AssertionError, match="differs from the source"):
        bf.check("X", box, np.ones((2, 2, 2), np.uint8), vol)


def test_source_is_tiled_and_synthetic_fallback_is_cheap():
    vol = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    t = bf.tile(vol, (5, 2, 6))
    assert t.shape == (5, 2, 6) and np.array_equal(t[2], vol[0, :2, [0, 1, 2, 3, 0, 1]].T)
    syn = bf.synthetic((20, 40, 8), 3, lambda z: None)  # below synth's 16-voxel minimum on x
    assert syn.shape == (20, 40, 8) and syn.dtype == np.uint8 and syn.std() > 0


@pytest.mark.parametrize("args, message", [
    (["--shape", "0,64,64"], "--shape '0,64,64': every value must be > 0"),
    (["--shape", "16,64"], "expected three comma-separated numbers"),
    (["--shape", "16,64,64", "--crop", "32,32,32"], "--crop 32,32,32 does not fit"),
    (["--shape", "16,64,64", "--crop", "8,8,8", "--slice-size", "65"], "--slice-size 65"),
    (["--shape", "16,64,64", "--crop", "8,8,8", "--slice-size", "8", "--crops", "0"], "must be ≥ 1"),
    (["--source", "/no/such.tif"], "no such file"),
])
def test_bad_options_are_one_line_errors(capsys, args, message):
    rc, out, err = fibtui(capsys, "bench", "formats", *args)
    assert rc == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1


def test_source_must_be_3d_uint8(capsys, tmp_path):
    tifffile.imwrite(tmp_path / "u16.tif", np.zeros((4, 32, 32), np.uint16), photometric="minisblack")
    tifffile.imwrite(tmp_path / "2d.tif", np.zeros((32, 32), np.uint8))
    for name in ("u16.tif", "2d.tif"):
        rc, _, err = fibtui(capsys, "bench", "formats", "--source", tmp_path / name)
        assert rc == 2 and "need a 3D uint8 stack" in err and len(err.strip().splitlines()) == 1
