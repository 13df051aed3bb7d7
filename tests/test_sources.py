"""Raw-volume readers: every format reads back what was written (whole, by y-band, from two threads),
carries its voxel size, and every bad input fails at open with one line that names it."""

import json
import os
import random
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest
import tensorstore as ts
import tifffile
import zarr

from sessions.errors import FibError
from sessions.volumes import catalog
from sessions.volumes.sources import open_source
from sessions.workspace import init_session

SHAPE = (12, 40, 56)


def volume(dtype=np.uint16, shape=SHAPE, seed=0):
    """Distinct-looking values on every axis, so a transposed or shifted read cannot pass."""
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info:
        return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    return rng.normal(0, 100, shape).astype(dtype)


def write_n5_tensorstore(path, vol, **attrs):
    z, y, x = vol.shape
    store = ts.open({"driver": "n5", "kvstore": {"driver": "file", "path": str(path)},
                     "metadata": {"dimensions": [x, y, z], "blockSize": [32, 16, 5], "dataType": vol.dtype.name,
                                  "compression": {"type": "gzip"}}}, create=True).result()
    store[...] = vol.T  # tensorstore indexes N5 in its metadata order, X,Y,Z
    meta = json.loads((path / "attributes.json").read_text())
    (path / "attributes.json").write_text(json.dumps({**meta, **attrs}))


def write_ome_zarr(path, vol, *, version="0.5", scale=(0.01, 0.005, 0.004), unit="micrometer"):
    """A two-level OME-Zarr group; 0.4 is written as zarr v2 with singleton t and c axes."""
    lead = 2 if version == "0.4" else 0
    g = zarr.open_group(str(path), mode="w", zarr_format=3 if version == "0.5" else 2)
    data = vol.reshape((1,) * lead + vol.shape)
    g.create_array("0", data=data, chunks=(1,) * lead + (5, 16, 16))
    g.create_array("1", data=data[..., ::2, ::2, ::2].copy())
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}][:lead] + \
        [{"name": a, "type": "space", "unit": unit} for a in "zyx"]
    datasets = [{"path": str(i), "coordinateTransformations": [
        {"type": "scale", "scale": [1.0] * lead + [s * 2 ** i for s in scale]}]} for i in range(2)]
    ms = [{"axes": axes, "datasets": datasets, "name": "raw"}]
    g.attrs.update({"ome": {"version": "0.5", "multiscales": ms}} if version == "0.5" else {"multiscales": ms})


def make(fmt, tmp_path, vol):
    """Write `vol` in format `fmt`; return the spec a user would type, and the voxel size it carries."""
    p = tmp_path / "src"
    if fmt.startswith("tiff"):
        kw = {"tiff": {}, "tiff-zlib": {"compression": "zlib"}, "tiff-zlib-predictor": {"compression": "zlib",
              "predictor": True}, "tiff-bigendian": {"byteorder": ">"}, "tiff-tiled": {"tile": (16, 16)},
              "tiff-strips": {"rowsperstrip": 7, "metadata": None},
              # compressed, many segments: a band decodes only the strips or tiles it needs
              "tiff-zlib-strips": {"compression": "zlib", "rowsperstrip": 3, "predictor": True, "byteorder": ">"},
              "tiff-zlib-tiled": {"compression": "zlib", "tile": (16, 32)},
              # what vendor exports and Bio-Formats write (decoded by imagecodecs)
              "tiff-lzw": {"compression": "lzw", "predictor": True, "rowsperstrip": 8},
              "tiff-jpeg-tiled": {"compression": "jpeg", "tile": (16, 16), "photometric": "minisblack"}}[fmt]
        tifffile.imwrite(p.with_suffix(".tif"), vol, bigtiff=True, **kw)
        return p.with_suffix(".tif"), None
    if fmt == "folder":
        p.mkdir()
        for z in range(vol.shape[0]):
            tifffile.imwrite(p / f"s{z + 1}.tif", vol[z], compression="zlib" if z % 2 else None,
                             rowsperstrip=4 if z % 4 == 1 else None)
        return p, None
    if fmt == "hdf5":
        with h5py.File(p.with_suffix(".h5"), "w") as f:
            ds = f.create_dataset("a/b", data=vol, chunks=(4, 16, 16), compression="gzip")
            ds.attrs["resolution"] = [10.0, 5.0, 4.0]
            f.create_dataset("a/c", data=vol[0])  # a 2D neighbour must not confuse the lookup
        return f"{p.with_suffix('.h5')}:/a/b", (10.0, 5.0, 4.0)
    if fmt == "hdf5-blosc":  # a filter h5py reads only through hdf5plugin
        import hdf5plugin
        with h5py.File(p.with_suffix(".h5"), "w") as f:
            f.create_dataset("raw", data=vol, chunks=(4, 16, 16), **hdf5plugin.Blosc(cname="zstd"))
        return p.with_suffix(".h5"), None
    if fmt == "hdf5-bare":
        with h5py.File(p.with_suffix(".hdf5"), "w") as f:
            f.create_dataset("volume", data=vol.astype(vol.dtype.newbyteorder(">")))
            f["volume"].attrs["element_size_um"] = [0.01, 0.005, 0.004]
            f.create_dataset("labels_2d", data=vol[0])
        return p.with_suffix(".hdf5"), (10.0, 5.0, 4.0)
    if fmt == "n5":
        write_n5_tensorstore(tmp_path / "c.n5" / "raw", vol, resolution=[4.0, 5.0, 10.0])
        return tmp_path / "c.n5" / "raw", (10.0, 5.0, 4.0)
    if fmt == "n5-container":
        write_n5_tensorstore(tmp_path / "c.n5" / "raw", vol, pixelResolution={"dimensions": [0.004, 0.005, 0.01],
                                                                                "unit": "um"})
        (tmp_path / "c.n5" / "attributes.json").write_text('{"n5": "2.0.0"}')
        return tmp_path / "c.n5", (10.0, 5.0, 4.0)
    if fmt in ("zarr2", "zarr3"):
        zarr.create_array(str(p.with_suffix(".zarr")), data=vol, chunks=(5, 16, 16), zarr_format=int(fmt[-1]))
        return p.with_suffix(".zarr"), None
    if fmt == "bioformats2raw":  # its layout 3: the image in group 0 (5D, t and c of size 1) under a marked group
        zarr.open_group(str(p.with_suffix(".zarr")), mode="w", zarr_format=2).attrs["bioformats2raw.layout"] = 3
        write_ome_zarr(p.with_suffix(".zarr") / "0", vol, version="0.4")
        return p.with_suffix(".zarr"), (10.0, 5.0, 4.0)
    if fmt in ("ome-zarr-0.5", "ome-zarr-0.4"):
        write_ome_zarr(p.with_suffix(".ome.zarr"), vol, version=fmt[-3:])
        return p.with_suffix(".ome.zarr"), (10.0, 5.0, 4.0)
    raise AssertionError(fmt)


FORMATS = ["tiff", "tiff-zlib", "tiff-zlib-predictor", "tiff-bigendian", "tiff-tiled", "tiff-strips",
           "tiff-zlib-strips", "tiff-zlib-tiled", "tiff-lzw", "folder",
           "hdf5", "hdf5-bare", "hdf5-blosc", "n5", "n5-container", "zarr2", "zarr3", "ome-zarr-0.5", "ome-zarr-0.4",
           "bioformats2raw"]


def kind_of(fmt):
    return {"folder": "tiff-folder", "tiff": "tiff", "hdf5": "hdf5", "n5": "n5"}.get(fmt.split("-")[0], "zarr")


@pytest.mark.parametrize("fmt", FORMATS)
def test_reads_back_what_was_written(fmt, tmp_path):
    vol = volume(np.uint16)
    spec, vs = make(fmt, tmp_path, vol)
    src = open_source(spec)
    assert src.kind == kind_of(fmt)
    assert src.shape == vol.shape and src.dtype == np.uint16 and src.dtype.isnative
    assert src.voxel_size == pytest.approx(vs) if vs else src.voxel_size is None
    full = src.read(0, vol.shape[0])
    np.testing.assert_array_equal(full, vol)
    assert full.flags.c_contiguous
    band = src.read(3, 9, 11, 29)  # a y-band, as the ingest reads very wide slices
    np.testing.assert_array_equal(band, vol[3:9, 11:29])
    np.testing.assert_array_equal(src.read(11, 12, 39), vol[11:12, 39:40])
    assert src.describe() and "\n" not in src.describe()


@pytest.mark.parametrize("fmt", ["tiff", "tiff-zlib", "tiff-zlib-strips", "tiff-zlib-tiled", "folder", "hdf5", "n5",
                                 "zarr3", "ome-zarr-0.5"])
def test_two_threads_read_correct_regions(fmt, tmp_path):
    vol = volume(np.uint16)
    src = open_source(make(fmt, tmp_path, vol)[0])
    rng = random.Random(1)
    regions = []
    for _ in range(60):
        z0, y0 = rng.randrange(12), rng.randrange(40)
        regions.append((z0, rng.randrange(z0 + 1, 13), y0, rng.randrange(y0 + 1, 41)))
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda r: src.read(*r), regions))
    for (z0, z1, y0, y1), got in zip(regions, results):
        np.testing.assert_array_equal(got, vol[z0:z1, y0:y1])


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_native_dtypes_kept(dtype, tmp_path):
    vol = volume(dtype)
    for fmt in ("tiff", "hdf5", "zarr3"):
        (tmp_path / fmt).mkdir()
        src = open_source(make(fmt, tmp_path / fmt, vol)[0])
        assert src.dtype == dtype
        np.testing.assert_array_equal(src.read(2, 5, 1, 30), vol[2:5, 1:30])


def test_bioformats2raw_with_several_images_asks_which(tmp_path):
    vol = volume(np.uint16)
    top = make("bioformats2raw", tmp_path, vol)[0]
    write_ome_zarr(top / "1", vol[:, :20], version="0.4")
    with pytest.raises(FibError, match=r"bioformats2raw container with 2 images \(0, 1\); name one, e.g. .*/0"):
        open_source(top)
    second = open_source(top / "1")
    assert second.shape == (12, 20, 56) and second.voxel_size == pytest.approx((10.0, 5.0, 4.0))


def test_jpeg_tiles_decode_with_their_tables(tmp_path):
    vol = volume(np.uint8)  # lossy: compare with tifffile's own decoding, bands included
    path = make("tiff-jpeg-tiled", tmp_path, vol)[0]
    expected = tifffile.imread(path)
    src = open_source(path)
    np.testing.assert_array_equal(src.read(0, 12), expected)
    np.testing.assert_array_equal(src.read(2, 7, 17, 33), expected[2:7, 17:33])


def test_a_slice_in_a_compression_nothing_here_decodes_is_named_at_open(tmp_path):
    vol = volume(np.uint8)
    d = tmp_path / "slices"
    d.mkdir()
    for z in range(vol.shape[0]):
        tifffile.imwrite(d / f"s{z}.tif", vol[z], compression="zlib")
    with tifffile.TiffFile(d / "s7.tif", mode="r+b") as tif:
        tif.pages[0].tags["Compression"].overwrite(np.uint16(34661))  # JBIG
    with pytest.raises(FibError, match=r"s7\.tif: page 0 \(jbig\): cannot read the data"):
        open_source(d)


def corrupt_hdf5_chunk(path: Path, dataset: str, index: int) -> None:
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info(index)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\xff" * info.size)


def test_hdf5_corrupt_chunk_fails_at_open_or_names_the_region(tmp_path):
    vol = volume(np.uint16)
    spec = make("hdf5", tmp_path, vol)[0]
    path = Path(str(spec).split(":")[0])
    assert open_source(spec).describe().endswith("deflate")  # HDF5's name for gzip
    (tmp_path / "b").mkdir()
    assert "blosc" in open_source(make("hdf5-blosc", tmp_path / "b", vol)[0]).describe()
    corrupt_hdf5_chunk(path, "a/b", 13)  # chunks of 4×16×16 in a 3×3×4 grid: z 4:8, y 0:16, x 16:32
    src = open_source(spec)  # chunk 0 is sound
    np.testing.assert_array_equal(src.read(0, 4), vol[0:4])
    with pytest.raises(FibError, match=r"a/b \[z 3:6, y 0:40\]: cannot read the data"):
        src.read(3, 6)
    corrupt_hdf5_chunk(path, "a/b", 0)
    with pytest.raises(FibError, match="cannot read the data .*copy it again"):
        open_source(spec)


@pytest.mark.parametrize("fmt", ["zarr2", "zarr3", "n5"])
def test_a_corrupt_chunk_names_the_region(fmt, tmp_path):
    vol = volume(np.uint16)
    spec = make(fmt, tmp_path, vol)[0]
    chunks = sorted(f for f in Path(spec).rglob("*") if f.is_file() and f.name not in
                    ("zarr.json", ".zarray", ".zattrs", ".zgroup", "attributes.json"))
    chunks[-1].write_bytes(b"\xff" * 64)  # not what its codec wrote
    src = open_source(spec)
    with pytest.raises(FibError, match=r"\[z 0:12, y 0:40\]: cannot read the data .*copy the store again"):
        src.read(0, 12)


def test_a_missing_tile_reads_as_zero(tmp_path):
    vol = volume(np.uint8)
    path = tmp_path / "sparse.tif"  # writers leave empty tiles out: offset and byte count 0
    tifffile.imwrite(path, vol, compression="zlib", tile=(16, 16), metadata=None)
    with tifffile.TiffFile(path, mode="r+b") as tif:
        for name in ("TileOffsets", "TileByteCounts"):
            tag = tif.pages[1].tags[name]
            values = np.array(tag.value, dtype={3: np.uint16, 4: np.uint32, 16: np.uint64}[int(tag.dtype)])
            values[4] = 0  # a grid of 3×4 tiles: tile 4 is rows 16:32, columns 0:16
            tag.overwrite(values)  # in the tag's own type, so it stays in place
    expected = vol.copy()
    expected[1, 16:32, 0:16] = 0
    np.testing.assert_array_equal(tifffile.imread(path), expected)  # tifffile agrees
    src = open_source(path)
    np.testing.assert_array_equal(src.read(0, 12), expected)
    np.testing.assert_array_equal(src.read(1, 2, 20, 35), expected[1:2, 20:35])


def test_imagej_tiff_voxel_size(tmp_path):
    vol = volume(np.uint8)
    path = tmp_path / "ij.tif"  # ImageJ stores x/y as pixels per unit, z as spacing
    tifffile.imwrite(path, vol, imagej=True, resolution=(1 / 0.004, 1 / 0.005),
                     metadata={"spacing": 0.01, "unit": "micron"})
    src = open_source(path)
    assert src.voxel_size == pytest.approx((10.0, 5.0, 4.0))
    np.testing.assert_array_equal(src.read(0, 12), vol)
    assert "ImageJ" in src.describe()


def test_folder_natural_order_and_files(tmp_path):
    vol = volume(np.uint8)
    make("folder", tmp_path, vol)
    src = open_source(tmp_path / "src")
    names = [f.name for f in src.files()]
    assert names[:3] == ["s1.tif", "s2.tif", "s3.tif"] and names.index("s2.tif") < names.index("s10.tif")
    np.testing.assert_array_equal(src.read(0, 12), vol)  # s10 is z 9, not z 1


def test_files_cover_the_array(tmp_path):
    vol = volume(np.uint8)
    src = open_source(make("tiff", tmp_path, vol)[0])
    assert src.files() == [src.path]
    ome = open_source(make("ome-zarr-0.5", tmp_path, vol)[0])
    rel = [f.relative_to(ome.path).as_posix() for f in ome.files()]
    assert rel[0] == "zarr.json" and all(r.startswith("0/") for r in rel[1:]) and len(rel) > 10
    assert not any(r.startswith("1/") for r in rel)  # the pyramid is not the source
    assert rel[1:] == sorted(rel[1:])


def test_n5_axis_order_from_a_hand_written_block(tmp_path):
    """N5 lists dimensions X,Y,Z and stores blocks X-fastest: check against the format itself, not tensorstore."""
    vol = volume(np.uint16, shape=(3, 4, 5))
    d = tmp_path / "hand.n5"
    (d / "0" / "0").mkdir(parents=True)
    (d / "attributes.json").write_text(json.dumps({"dimensions": [5, 4, 3], "blockSize": [5, 4, 3],
                                                   "dataType": "uint16", "compression": {"type": "raw"}}))
    header = struct.pack(">HHIII", 0, 3, 5, 4, 3)  # mode, ndim, block size X,Y,Z
    (d / "0" / "0" / "0").write_bytes(header + vol.astype(">u2").tobytes())
    src = open_source(d)
    assert src.shape == (3, 4, 5)
    np.testing.assert_array_equal(src.read(0, 3), vol)


# ---------------------------------------------------------------- refusals


def refused(spec, *needles):
    """Open must fail with one line naming the input and each needle."""
    with pytest.raises(FibError) as e:
        open_source(spec)
    msg = str(e.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert str(n) in msg, (n, msg)
    return msg


def test_missing_and_unknown(tmp_path):
    refused(tmp_path / "nope.tif", "nope.tif", "no such file")
    (tmp_path / "notes.txt").write_text("hello")
    refused(tmp_path / "notes.txt", "notes.txt", "file.h5:/dataset", "zarr")
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", "empty", "folder of TIFF slices")


def test_garbage_with_tif_name(tmp_path):
    (tmp_path / "bad.tif").write_bytes(os.urandom(4096))
    refused(tmp_path / "bad.tif", "bad.tif", "not a readable TIFF")


@pytest.mark.parametrize("compression", [None, "zlib"])
@pytest.mark.parametrize("cut", [700, 6000, 40000])
def test_truncated_bigtiff(tmp_path, compression, cut):
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, volume(np.uint8, shape=(30, 64, 64)), bigtiff=True, compression=compression)
    size = path.stat().st_size
    os.truncate(path, max(1000, size - cut))
    refused(path, "cut.tif", "truncated")


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_page_data_past_end_of_file(tmp_path, compression):
    """Intact IFDs whose strips point past EOF (a cut file with its IFDs up front): found from offsets alone."""
    path = tmp_path / "holes.tif"
    tifffile.imwrite(path, volume(np.uint8), bigtiff=True, compression=compression, metadata=None)
    size = path.stat().st_size
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[7].tags["StripOffsets"].overwrite([size - 10])
    refused(path, "holes.tif", "page 7", "truncated")


def test_ome_tiff_voxel_size_each_axis_in_its_unit(tmp_path):
    vol = volume(np.uint8)
    path = tmp_path / "v.ome.tif"  # z without a unit: µm, the OME schema's default
    tifffile.imwrite(path, vol, ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeZ": 0.01, "PhysicalSizeY": 5, "PhysicalSizeYUnit": "nm",
        "PhysicalSizeX": 40, "PhysicalSizeXUnit": "Å"})
    src = open_source(path)
    assert src.voxel_size == pytest.approx((10.0, 5.0, 4.0))
    assert "OME" in src.describe()
    np.testing.assert_array_equal(src.read(0, 12), vol)


@pytest.mark.parametrize("metadata", [{"axes": "ZYX"},  # no physical sizes
                                      {"axes": "ZYX", "PhysicalSizeZ": 8, "PhysicalSizeY": 8},  # x missing
                                      {"axes": "ZYX", "PhysicalSizeZ": 8, "PhysicalSizeY": 8, "PhysicalSizeX": 8,
                                       "PhysicalSizeXUnit": "furlong"}])  # a unit we cannot convert
def test_ome_tiff_without_a_usable_voxel_size_asks_for_one(tmp_path, metadata):
    path = tmp_path / "v.ome.tif"
    tifffile.imwrite(path, volume(np.uint8), ome=True, metadata=metadata)
    assert open_source(path).voxel_size is None
    s = init_session(tmp_path / "s")
    try:
        with pytest.raises(FibError, match="--voxel-size"):
            catalog.ingest(s, path)
    finally:
        s.close()


def test_imagej_image_count_disagrees(tmp_path):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, volume(np.uint8), imagej=True)
    desc = tifffile.TiffFile(path).pages.first.description
    tifffile.tiffcomment(path, desc.replace("images=12", "images=14").replace("slices=12", "slices=14").encode())
    refused(path, "ij.tif", "corrupt")


def test_mismatched_slices_name_the_odd_file(tmp_path):
    d = tmp_path / "slices"
    d.mkdir()
    for i in range(1, 12):
        tifffile.imwrite(d / f"s{i}.tif", np.zeros((20, 30), np.uint8))
    tifffile.imwrite(d / "s7.tif", np.zeros((20, 31), np.uint8))
    tifffile.imwrite(d / "s9.tif", np.zeros((20, 30), np.uint16))
    refused(d, "s7.tif", "(20, 31)", "(20, 30)", "s1.tif")  # the first odd one, in natural order
    tifffile.imwrite(d / "s7.tif", np.zeros((20, 30), np.uint8))
    refused(d, "s9.tif", "uint16", "uint8")


@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.uint32])
def test_unsupported_dtypes(tmp_path, dtype):
    tifffile.imwrite(tmp_path / "v.tif", np.zeros((4, 20, 20), dtype), photometric="minisblack")
    refused(tmp_path / "v.tif", "v.tif", np.dtype(dtype).name, "uint8, uint16, int16, float32")
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f["x"] = np.zeros((4, 20, 20), dtype)
    refused(f"{tmp_path / 'v.h5'}:/x", "v.h5", np.dtype(dtype).name, "uint16")


def test_rgb_and_2d_refused(tmp_path):
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((4, 20, 20, 3), np.uint8), photometric="rgb")
    refused(tmp_path / "rgb.tif", "rgb.tif", "RGB", "grey-level")
    tifffile.imwrite(tmp_path / "one.tif", np.zeros((20, 30), np.uint8))
    refused(tmp_path / "one.tif", "one.tif", "(20, 30)", "Z,Y,X")
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f["img"] = np.zeros((20, 30), np.uint8)
        f["multi"] = np.zeros((2, 4, 20, 30), np.uint8)
    refused(f"{tmp_path / 'm.h5'}:/img", "m.h5:/img", "(20, 30)", "Z,Y,X")
    refused(f"{tmp_path / 'm.h5'}:/multi", "m.h5:/multi", "(2, 4, 20, 30)", "Z,Y,X")


def test_hdf5_dataset_lookup_errors(tmp_path):
    path = tmp_path / "two.h5"
    with h5py.File(path, "w") as f:
        f["raw"] = np.zeros((3, 8, 8), np.uint8)
        f["pred/mito"] = np.zeros((3, 8, 8), np.uint8)
    refused(f"{path}:/missing", "two.h5:/missing", "not found", "/raw", "/pred/mito")
    refused(path, "two.h5", "2 3D datasets", "/raw", "/pred/mito", ":/")
    refused(tmp_path / "absent.h5", "absent.h5", "no such file")
    np.testing.assert_array_equal(open_source(f"{path}:pred/mito").read(0, 3), 0)


def test_read_bounds_checked(tmp_path):
    src = open_source(make("tiff", tmp_path, volume(np.uint8))[0])
    for bad in [(0, 13), (-1, 2), (5, 5), (0, 1, 0, 41), (0, 1, 30, 20)]:
        with pytest.raises(ValueError):
            src.read(*bad)


@pytest.mark.parametrize("fmt", ["tiff", "tiff-zlib", "folder", "hdf5", "n5", "zarr3"])
def test_read_into_a_reused_buffer(fmt, tmp_path):
    vol = volume(np.uint16)
    src = open_source(make(fmt, tmp_path, vol)[0])
    buf = np.full((4, 40, 56), 7, np.uint16)
    assert src.read(2, 6, out=buf) is buf
    np.testing.assert_array_equal(buf, vol[2:6])
    np.testing.assert_array_equal(src.read(6, 9, out=buf[:3]), vol[6:9])  # a leading slice stays contiguous
    band = buf.reshape(-1)[: 4 * 20 * 56].reshape(4, 20, 56)
    np.testing.assert_array_equal(src.read(6, 10, 5, 25, out=band), vol[6:10, 5:25])
    with pytest.raises(ValueError):
        src.read(0, 4, out=np.empty((4, 40, 56), np.uint8))  # wrong dtype
    with pytest.raises(ValueError):
        src.read(0, 4, out=np.empty((4, 40, 57), np.uint16)[..., :56])  # not contiguous


def test_array_source_has_the_same_interface():
    from sessions.volumes.sources import ArraySource

    vol = volume(np.uint8)
    src = ArraySource(vol, "generated")
    assert (src.kind, src.shape, src.dtype, src.files()) == ("array", vol.shape, np.uint8, [])
    np.testing.assert_array_equal(src.read(1, 4, 2, 9), vol[1:4, 2:9])
    with pytest.raises(FibError, match="float64"):
        ArraySource(vol.astype(np.float64))


def test_ome_zarr_level_named_directly_keeps_its_scale(tmp_path):
    vol = volume(np.uint8)
    group, _ = make("ome-zarr-0.5", tmp_path, vol)
    level1 = open_source(group / "1")
    assert level1.voxel_size == pytest.approx((20.0, 10.0, 8.0))
    np.testing.assert_array_equal(level1.read(0, level1.shape[0]), vol[::2, ::2, ::2])


def test_groups_without_a_single_volume_name_their_arrays(tmp_path):
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("raw", shape=(2, 8, 8), dtype="uint8")
    g.create_array("mito", shape=(2, 8, 8), dtype="uint8")
    refused(tmp_path / "g.zarr", "g.zarr", "group", "mito, raw")
    for name in ("raw", "pred"):
        write_n5_tensorstore(tmp_path / "c.n5" / name, volume(np.uint8))
    (tmp_path / "c.n5" / "attributes.json").write_text('{"n5": "2.0.0"}')
    refused(tmp_path / "c.n5", "c.n5", "2 3D datasets", "pred, raw")


def test_single_ifd_contiguous_stack(tmp_path):
    """ImageJ above 4 GB (and tifffile's truncate=True) write one IFD and the pages back to back: valid, read whole."""
    vol = volume(np.uint16)
    tifffile.imwrite(tmp_path / "one_ifd.tif", vol, truncate=True)
    src = open_source(tmp_path / "one_ifd.tif")
    assert src.shape == vol.shape
    np.testing.assert_array_equal(src.read(3, 9, 11, 29), vol[3:9, 11:29])
    os.truncate(tmp_path / "one_ifd.tif", (tmp_path / "one_ifd.tif").stat().st_size - 100)
    refused(tmp_path / "one_ifd.tif", "one_ifd.tif", "truncated")
