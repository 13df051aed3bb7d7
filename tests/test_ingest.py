"""Ingest: any source → sharded OME-Zarr pyramid; resume after kill -9; provenance; every refusal (as the CLI gives it)."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
import zarr

from conftest import db_snapshot, run_cli
from fibtui import __version__
from sessions.volumes import catalog, omezarr
from sessions.errors import FibError
from sessions.volumes.ingest import layout


def _mean_pyramid_level(a: np.ndarray, f) -> np.ndarray:
    """Reference: block mean (odd edges replicated), rounded half up, in float64."""
    pad = [(0, (-s) % k) for s, k in zip(a.shape, f)]
    a = np.pad(a.astype(np.float64), pad, mode="edge")
    z, y, x = a.shape
    m = a.reshape(z // f[0], f[0], y // f[1], f[1], x // f[2], f[2]).mean(axis=(1, 3, 5))
    return np.floor(m + 0.5).astype(np.uint8)


def _tree(path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_multipage_tiff_becomes_sharded_ome_zarr_pyramid(ingested):
    session, raw, _ = ingested
    row = catalog.get_volume(session, "blobs")
    ms = catalog.open_volume(session, "blobs")
    assert len(ms.levels) >= 2 and row["levels"] == len(ms.levels)
    np.testing.assert_array_equal(ms.levels[0][:], raw)
    expect = raw
    for i in range(1, len(ms.levels)):
        f = tuple(int(b // a) for a, b in zip(ms.scales[i - 1], ms.scales[i]))
        expect = _mean_pyramid_level(expect, f)
        np.testing.assert_array_equal(ms.levels[i][:], expect, err_msg=f"level {i}")
    assert ms.scales[1] == (16.0, 16.0, 16.0)
    assert ms.levels[0].shards is not None
    meta = zarr.open_group(str(ms.path), mode="r").attrs
    assert meta["ome"]["version"] == "0.5"
    assert meta["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [8.0, 8.0, 8.0]
    assert meta["fibtui"]["conversion"]["method"] == "none"
    assert meta["fibtui"]["code"]["fibtui"] == __version__ and meta["fibtui"]["code"]["zarr"]  # which code made it


def test_source_checksum_covers_the_voxels_whatever_the_container(ingested, blobs, tmp_path):
    """Hashed by the tasks as they read (the source is read once); same voxels in HDF5 → same checksum."""
    import h5py

    from sessions.volumes.ingest import recompute_checksum
    from sessions.volumes.sources import open_source

    session, raw, _ = ingested
    row = catalog.get_volume(session, "blobs")
    assert row["source_checksum"].startswith("blake3-voxels:")
    assert row["source_checksum"] == recompute_checksum(open_source(blobs[0]))
    assert row["source_format"] == "tiff" and row["source_dtype"] == "uint8"
    with h5py.File(tmp_path / "same.h5", "w") as f:
        f["raw"] = raw
    assert recompute_checksum(open_source(f"{tmp_path / 'same.h5'}:/raw")) == row["source_checksum"]
    changed = raw.copy()
    changed[31, 95, 95] ^= 1
    tifffile.imwrite(tmp_path / "changed.tif", changed)
    assert recompute_checksum(open_source(tmp_path / "changed.tif")) != row["source_checksum"]


def test_output_validates_as_ome_zarr_and_opens_in_ome_zarr_py(ingested):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from ome_zarr_models.v05.image import Image

    session, raw, _ = ingested
    path = catalog.open_volume(session, "blobs").path
    image = Image.from_zarr(zarr.open_group(str(path), mode="r"))
    assert [d.path for d in image.attributes.ome.multiscales[0].datasets][:2] == ["0", "1"]
    nodes = list(Reader(parse_url(str(path)))())
    assert np.array_equal(np.asarray(nodes[0].data[0]), raw)
    assert len(nodes[0].data) == catalog.get_volume(session, "blobs")["levels"]


def test_slabs_cross_shards_and_pyramid_levels_in_several_stages(session, tmp_path):
    """A volume deeper than one slab, odd extents, a pyramid deep enough to need a second stage."""
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 255, (150, 200, 130), dtype=np.uint8)
    raw[:, :90, :70] = 0   # whole zero chunks are left out, as zarr-python does
    _, _, stages = layout(raw.shape, (8, 8, 8))
    assert len(stages) >= 1
    tifffile.imwrite(tmp_path / "v.tif", raw)
    catalog.ingest(session, tmp_path / "v.tif", voxel_size=(8, 8, 8), workers=2)
    ms = catalog.open_volume(session, "v")
    expect = raw
    for i, level in enumerate(ms.levels):
        if i:
            f = tuple(int(b // a) for a, b in zip(ms.scales[i - 1], ms.scales[i]))
            expect = _mean_pyramid_level(expect, f)
        np.testing.assert_array_equal(level[:], expect, err_msg=f"level {i}")


def test_wide_slices_go_in_bands_with_the_same_bytes(tmp_path, monkeypatch):
    """Slices too wide for one task are cut into bands of whole shard rows; the store is unchanged."""
    from sessions.volumes import ingest
    from sessions.workspace import init_session

    raw = np.random.default_rng(5).integers(0, 255, (70, 1100, 300), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "w.tif", raw)
    trees = []
    for task_bytes in (ingest.TASK_BYTES, 1):
        monkeypatch.setattr(ingest, "TASK_BYTES", task_bytes)
        s = init_session(tmp_path / f"s{task_bytes}")
        catalog.ingest(s, tmp_path / "w.tif", voxel_size=(8, 8, 8), workers=2)
        trees.append(_tree(catalog.open_volume(s, "w").path))
    assert ingest.band_rows(raw.shape) == 512                         # banded on the second run
    assert trees[0] == trees[1]
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "s1" / "volumes" / "w.ome.zarr" / "0"))[:], raw)


def test_deep_isotropic_pyramid_uses_two_stages():
    _, _, stages = layout((4096, 4096, 4096), (8, 8, 8))
    assert len(stages) == 2 and stages[0].first == 0 and stages[1].first == stages[0].last + 1


def test_anisotropic_pyramid_keeps_coarse_axis():
    plan = omezarr.pyramid_plan((20, 1024, 1024), (50, 4.6, 4.6))
    vs = [50, 4.6, 4.6]
    for f in plan:  # z (50 nm) is halved only once xy has caught up to within 2x
        if f[0] == 2:
            assert vs[0] < 2 * vs[1], (plan, vs)
        vs = [v * k for v, k in zip(vs, f)]
    assert plan[:3] == [(1, 2, 2)] * 3


def test_same_command_again_is_a_no_op_and_other_content_is_refused(ingested, blobs, tmp_path):
    session, raw, _ = ingested
    before = _tree(catalog.open_volume(session, "blobs").path)
    again = catalog.ingest(session, blobs[0], name="blobs", voxel_size=(8, 8, 8))
    assert again["status"] == "exists"
    tifffile.imwrite(tmp_path / "other.tif", raw[::-1].copy())
    with pytest.raises(FibError, match="already exists in this session with different content"):
        catalog.ingest(session, tmp_path / "other.tif", name="blobs", voxel_size=(8, 8, 8))
    assert _tree(catalog.open_volume(session, "blobs").path) == before
    assert session.db["volumes"].count == 1


def test_uint16_needs_an_explicit_conversion_which_is_recorded(session, tmp_path):
    data = np.random.default_rng(0).integers(1000, 3000, (8, 40, 40)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "w.tif", data)
    with pytest.raises(FibError, match="--convert"):
        catalog.ingest(session, tmp_path / "w.tif", voxel_size=(8, 8, 8))
    assert not any(session.path("volumes").iterdir())
    row = catalog.ingest(session, tmp_path / "w.tif", voxel_size=(8, 8, 8), convert="range:1000,3000")
    conv = json.loads(row["conversion"])
    assert conv["method"] == "range" and (conv["low"], conv["high"]) == (1000, 3000)
    assert row["source_dtype"] == "uint16"
    expect = np.rint(np.clip((data.astype(np.float32) - 1000) * (255 / 2000), 0, 255)).astype(np.uint8)
    np.testing.assert_array_equal(catalog.open_volume(session, "w").levels[0][:], expect)


# ---------------------------------------------------------------- the CLI: kill -9 and resume, refusals
def _big_tiff(path, shape=(320, 512, 512)):
    rng = np.random.default_rng(7)
    base = rng.normal(128, 30, (16, *shape[1:])).clip(0, 255).astype(np.uint8)
    tifffile.imwrite(path, (np.roll(base, z, axis=1)[z % 16] for z in range(shape[0])), shape=shape,
                     dtype=np.uint8, bigtiff=True)


def test_the_cli_says_what_it_read_before_the_work_and_json_stays_clean(tmp_path):
    src = tmp_path / "em.tif"
    tifffile.imwrite(src, np.full((16, 64, 64), 7, np.uint16), compression="zlib")
    s = tmp_path / "s"
    run_cli("init", s, check=True)
    args = ["ingest", src, "--session", s, "--voxel-size", "8,8,30", "--convert", "range:0,255"]
    proc = run_cli(*args, "--name", "a", check=True)  # beside the progress bars on stderr; the result on stdout
    first = proc.stderr.splitlines()[0]
    assert first.startswith("TIFF, 16 pages of 64×64 uint16, zlib, one strip per page @ 8,8,30 nm → "), proc.stderr
    assert proc.stdout.startswith("volume a ingested")
    assert "conversion range 0–255" in first and "workers" in first
    row = json.loads(run_cli(*args, "--name", "b", "--json", check=True).stdout)
    assert row["status"] == "ingested"


def test_kill_9_then_same_command_resumes_to_identical_bytes(tmp_path):
    src = tmp_path / "big.tif"
    _big_tiff(src)
    src_bytes = hashlib.sha256(src.read_bytes()).hexdigest()
    for s in ("a", "b"):
        run_cli("init", tmp_path / s, check=True)
    args = ["ingest", src, "--voxel-size", "8,8,8", "--name", "v", "--workers", "1", "--json"]
    run_cli(*args, "--session", tmp_path / "a", check=True)            # uninterrupted

    partial = tmp_path / "b" / "volumes" / "v.ome.zarr.partial"
    proc = subprocess.Popen([sys.executable, "-m", "fibtui", *map(str, args), "--session", tmp_path / "b"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any((partial / ".fibtui-ingest" / "done").glob("0-*")) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)                                   # mid-run: some slabs done, some not
    proc.wait()
    done = {p.name for p in (partial / ".fibtui-ingest" / "done").iterdir()}
    assert done and len(done) < 5, done                                   # interrupted part-way (5 slabs)
    assert not (tmp_path / "b" / "volumes" / "v.ome.zarr").exists()      # nothing looks complete
    assert json.loads(run_cli("status", "--session", tmp_path / "b", "--json", check=True).stdout)["volumes"] == []

    row = json.loads(run_cli(*args, "--session", tmp_path / "b", check=True).stdout)
    assert row["status"] == "ingested"
    a, b = (_tree(tmp_path / s / "volumes" / "v.ome.zarr") for s in ("a", "b"))
    assert a.keys() == b.keys() and a == b
    assert hashlib.sha256(src.read_bytes()).hexdigest() == src_bytes    # the source is only read


def _truncated(tmp):
    p = tmp / "trunc.tif"
    tifffile.imwrite(p, np.full((16, 64, 64), 9, np.uint8), bigtiff=True)
    p.write_bytes(p.read_bytes()[:-5000])
    return p


def _mismatched(tmp):
    d = tmp / "slices"
    d.mkdir()
    for i, w in enumerate((64, 64, 65, 64)):
        tifffile.imwrite(d / f"s{i}.tif", np.zeros((64, w), np.uint8))
    return d


def _float64(tmp):
    p = tmp / "f64.tif"
    tifffile.imwrite(p, np.zeros((4, 20, 20), np.float64), photometric="minisblack")
    return p


def _plain(tmp):
    p = tmp / "plain.tif"
    tifffile.imwrite(p, np.zeros((4, 20, 20), np.uint8), photometric="minisblack")
    return p


def _unknown_codec(tmp):
    p = tmp / "jbig.tif"  # a compression no codec here decodes (JBIG): refused at open
    tifffile.imwrite(p, np.full((16, 64, 64), 9, np.uint8), compression="zlib", metadata=None)
    with tifffile.TiffFile(p, mode="r+b") as tif:
        for page in tif.pages:
            page.tags["Compression"].overwrite(np.uint16(34661))
    return p


def _corrupt_page(tmp):
    p = tmp / "zlib.tif"  # page 9's compressed bytes garbled: found while ingesting
    tifffile.imwrite(p, np.full((16, 64, 64), 9, np.uint8), compression="zlib", metadata=None)
    with tifffile.TiffFile(p) as tif:
        off, n = tif.pages[9].dataoffsets[0], tif.pages[9].databytecounts[0]
    with open(p, "r+b") as fh:
        fh.seek(off)
        fh.write(b"\xff" * n)
    return p


BAD = {
    "truncated TIFF": (_truncated, ["--voxel-size", "8,8,8"], "trunc.tif"),
    "unknown TIFF compression": (_unknown_codec, ["--voxel-size", "8,8,8"], "page 0 (jbig): cannot read the data"),
    "corrupt compressed page": (_corrupt_page, ["--voxel-size", "8,8,8"], "page 9 (zlib): cannot read the data"),
    "corrupt TIFF": (lambda t: (t / "x.tif").write_bytes(b"II*\x00" + os.urandom(300)) and t / "x.tif",
                     ["--voxel-size", "8,8,8"], "x.tif"),
    "mismatched slices": (_mismatched, ["--voxel-size", "8,8,8"], "s2.tif"),
    "unsupported dtype": (_float64, ["--voxel-size", "8,8,8"], "float64"),
    "missing voxel size": (_plain, [], "--voxel-size"),
    "unknown conversion": (_plain, ["--voxel-size", "8,8,8", "--convert", "gamma"], "gamma"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_one_line_nonzero_nothing_written(tmp_path, case):
    make, extra, expect = BAD[case]
    s = tmp_path / "s"
    run_cli("init", s, check=True)
    before = db_snapshot(s)
    proc = run_cli("ingest", make(tmp_path), "--session", s, *extra)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]  # a failure mid-run follows the progress bar
    errors = [line for line in lines if line.startswith("fibtui: error:")]
    assert proc.returncode == 2 and errors == lines[-1:] and "Traceback" not in proc.stderr, proc.stderr
    assert expect in errors[0], errors[0]
    after = db_snapshot(s)  # a failure mid-run keeps its `.partial` store for the next run, nothing complete
    after["_files"] = [f for f in after["_files"] if ".partial" not in f]
    assert after == before


def test_destination_on_disk_with_other_content_is_refused(tmp_path):
    s = tmp_path / "s"
    run_cli("init", s, check=True)
    stray = s / "volumes" / "plain.ome.zarr"
    omezarr.create(stray, (4, 8, 8), (8, 8, 8))
    before = db_snapshot(s)
    proc = run_cli("ingest", _plain(tmp_path), "--session", s, "--voxel-size", "8,8,8")
    assert proc.returncode == 2 and "exists with different content" in proc.stderr.strip(), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert db_snapshot(s) == before


@pytest.fixture
def small_fs(tmp_path):
    """A real 2 MB filesystem (tmpfs), so the free-space check meets a real limit."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the free-space test mounts a tmpfs and needs root in CI")
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_not_enough_free_disk_is_checked_before_starting(tmp_path, small_fs):
    s = small_fs / "s"
    run_cli("init", s, check=True)
    src = tmp_path / "v.tif"
    tifffile.imwrite(src, np.random.default_rng(0).integers(0, 255, (32, 256, 256), dtype=np.uint8))
    before = db_snapshot(s)
    proc = run_cli("ingest", src, "--session", s, "--voxel-size", "8,8,8")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and " MB is free" in lines[0], proc.stderr
    assert db_snapshot(s) == before and not any((s / "volumes").iterdir())
