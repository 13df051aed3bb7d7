"""Readers for raw volumes: multipage TIFF/BigTIFF, TIFF slice folders, HDF5, N5, zarr/OME-Zarr.

Every reader validates at open (exists, parses, 3D grey levels, supported
dtype, TIFF data not truncated) so a bad source fails before anything is
written, with one FibError line that names the input. `read()` returns
Z,Y,X regions in the native dtype and is safe to call from several threads:
nothing mutable is shared between calls (a file handle or library handle per
call, or a library that is itself thread-safe).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from struct import error as struct_error

import numpy as np
import tifffile

from sessions.errors import FibError

SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "float32")
TIFF_SUFFIXES = (".tif", ".tiff")
_NATIVE = "<" if sys.byteorder == "little" else ">"
FORMATS_HINT = "give a .tif/.tiff file, a folder of TIFF slices, file.h5:/dataset, an N5 or a zarr array"

# length units → nanometres (OME-NGFF uses UDUNITS names; ImageJ writes "micron" or an escaped µ)
_UNITS_NM = {
    "nm": 1.0, "nanometer": 1.0, "nanometre": 1.0, "nanometers": 1.0,
    "um": 1e3, "µm": 1e3, "μm": 1e3, "\\u00b5m": 1e3, "micron": 1e3, "microns": 1e3,
    "micrometer": 1e3, "micrometre": 1e3, "micrometers": 1e3,
    "mm": 1e6, "millimeter": 1e6, "millimetre": 1e6,
    "m": 1e9, "meter": 1e9, "metre": 1e9,
    "angstrom": 0.1, "å": 0.1, "pm": 1e-3, "picometer": 1e-3,
}


def natural_key(p: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def _unit_nm(unit) -> float | None:
    return _UNITS_NM.get(str(unit).strip().lower()) if unit is not None else None


def _voxel(values, unit_nm: float | None) -> tuple[float, float, float] | None:
    """Z,Y,X sizes in nm, or None when any is missing, non-positive or the unit unknown."""
    try:
        vs = tuple(float(v) * unit_nm for v in values)
    except (TypeError, ValueError):
        return None
    return vs if len(vs) == 3 and all(np.isfinite(v) and v > 0 for v in vs) else None


def _check_grey(where, shape, dtype, hint: str = "") -> tuple[tuple[int, int, int], np.dtype]:
    """A Z,Y,X volume of a supported dtype, returned with the dtype in native byte order."""
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise FibError(f"{where}: data type {dtype!r} is not supported; "
                       f"supported: {', '.join(SUPPORTED_DTYPES)} grey levels") from None
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        what = "a 2D image" if len(shape) == 2 else f"{len(shape)}D data"
        raise FibError(f"{where}: shape {shape} is {what}; a Z,Y,X grey-level volume is expected{hint}")
    if dtype.name not in SUPPORTED_DTYPES:
        raise FibError(f"{where}: dtype {dtype.name} is not supported; "
                       f"convert it to one of {', '.join(SUPPORTED_DTYPES)} first")
    if 0 in shape:
        raise FibError(f"{where}: shape {shape} is empty")
    return shape, np.dtype(dtype.name)


class Source:
    """A Z,Y,X grey-level volume read region by region. Subclasses set the attributes and `_read`."""

    path: Path
    kind: str
    shape: tuple[int, int, int]
    dtype: np.dtype
    voxel_size: tuple[float, float, float] | None = None

    def read(self, z0: int, z1: int, y0: int = 0, y1: int | None = None, *, out: np.ndarray | None = None
             ) -> np.ndarray:
        """Voxels [z0:z1, y0:y1, :] as a C-contiguous array in the native dtype.

        `out`, when given, is filled and returned: the ingest reuses one buffer per
        thread, since fresh memory costs a page fault per 4 KB.
        """
        Z, Y, X = self.shape
        y1 = Y if y1 is None else y1
        if not all(isinstance(v, (int, np.integer)) for v in (z0, z1, y0, y1)):
            raise ValueError(f"{self.path}: read bounds must be integers, got z {z0}:{z1}, y {y0}:{y1}")
        if not (0 <= z0 < z1 <= Z and 0 <= y0 < y1 <= Y):
            raise ValueError(f"{self.path}: read z {z0}:{z1}, y {y0}:{y1} is outside the volume {self.shape}")
        shape = (z1 - z0, y1 - y0, X)
        if out is None:
            out = np.empty(shape, self.dtype)
        elif out.shape != shape or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise ValueError(f"{self.path}: out must be a C-contiguous {shape} {self.dtype.name} array, "
                             f"got {out.shape} {out.dtype}")
        self._read(out, int(z0), int(z1), int(y0), int(y1))
        return out

    def _read(self, out: np.ndarray, z0: int, z1: int, y0: int, y1: int) -> None:
        """Fill `out` (C-contiguous, native dtype, already the region's shape)."""
        raise NotImplementedError

    def files(self) -> list[Path]:
        """The files whose bytes are the source, in a fixed order (for checksums and resume)."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


    def _dims(self) -> str:
        return "×".join(str(s) for s in self.shape) + f" {self.dtype.name}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path} {self.shape} {self.dtype.name}>"


# ---------------------------------------------------------------- TIFF

class _Collect(logging.Filter):
    """Holds back tifffile's log records (they would break the one-line error) and keeps its errors."""

    def __init__(self):
        super().__init__()
        self.errors: list[str] = []

    def filter(self, record):
        if record.levelno >= logging.ERROR:
            self.errors.append(record.getMessage())
        return False


@contextmanager
def _tiff(path: Path, hint: str = "give a multipage TIFF or a folder of TIFF slices"):
    """An open TiffFile and the errors tifffile logged while parsing it."""
    log = logging.getLogger("tifffile")
    collect = _Collect()
    log.addFilter(collect)
    try:
        try:
            tif = tifffile.TiffFile(path)
        except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError, struct_error) as e:
            raise FibError(f"{path}: not a readable TIFF ({e}); {hint}") from None
        with tif:
            yield tif, collect.errors
    finally:
        log.removeFilter(collect)


def _check_ifds(path: Path, errors: list[str]) -> None:
    """An IFD or tag pointing past the end of the file: the file was cut short (tifffile only logs it)."""
    bad = [e for e in errors if "offset" in e or "corrupt" in e]
    if bad:
        why = bad[0].rsplit("> ", 1)[-1].rstrip("')")
        raise FibError(f"{path}: truncated or corrupt TIFF ({why}); copy it again")


def _page_header(path: Path, page) -> tuple[tuple[int, int], np.dtype]:
    """Shape and dtype of a 2D grey page, or a FibError that says what it is instead."""
    if page.dtype is None:
        raise FibError(f"{path}: TIFF pages of {page.bitspersample}-bit samples (format {page.sampleformat}) "
                       f"are not supported; supported: {', '.join(SUPPORTED_DTYPES)} grey levels")
    if page.samplesperpixel > 1:
        raise FibError(f"{path}: pages are RGB/multi-channel ({page.samplesperpixel} samples per pixel, "
                       f"{page.dtype.name}); a Z,Y,X grey-level volume is expected "
                       f"(supported: {', '.join(SUPPORTED_DTYPES)}); convert to greyscale first")
    if len(page.shape) != 2:
        raise FibError(f"{path}: pages have shape {page.shape}; a Z,Y,X volume of 2D grey-level pages is expected")
    return page.shape, page.dtype


def _strips_contiguous(page, nbytes: int) -> int | None:
    """Offset of the page's pixels when they lie in one uncompressed run in raster order, else None."""
    key = getattr(page, "keyframe", None) or page
    if not key.is_final or key.is_tiled or not page.dataoffsets:
        return None
    pos = page.dataoffsets[0]
    for off, cnt in zip(page.dataoffsets, page.databytecounts):
        if off != pos:
            return None
        pos += cnt
    return page.dataoffsets[0] if pos - page.dataoffsets[0] >= nbytes else None


def _check_segments(path: Path, page, size: int, z: int) -> None:
    """Pixel data offsets must lie inside the file: a truncated BigTIFF often still parses."""
    for off, cnt in zip(page.dataoffsets, page.databytecounts):
        if cnt and off + cnt > size:
            raise FibError(f"{path}: page {z} data ends at byte {off + cnt} but the file has {size} bytes; "
                           "the file is truncated or corrupt — copy it again")


def _compression(page) -> str:
    return {1: "uncompressed", 8: "zlib", 32946: "zlib"}.get(int(page.compression), page.compression.name.lower())


def _read_rows(fh, out2d: np.ndarray, offset: int) -> None:
    fh.seek(offset)
    view = memoryview(out2d).cast("B")
    if fh.readinto(view) != len(view):
        raise FibError(f"{fh.name}: file is shorter than when it was opened; was it modified?")


def _voxel_size_from_imagej(tif: tifffile.TiffFile) -> tuple[float, float, float] | None:
    """ImageJ: z from `spacing`, y/x from the X/YResolution tags (pixels per unit), in `unit`."""
    meta = tif.imagej_metadata or {}
    unit = _unit_nm(meta.get("unit"))
    if unit is None or "spacing" not in meta:
        return None
    try:
        xres = tif.pages.first.tags["XResolution"].value
        yres = tif.pages.first.tags["YResolution"].value
        return _voxel((meta["spacing"], yres[1] / yres[0], xres[1] / xres[0]), unit)
    except (KeyError, ZeroDivisionError, TypeError):
        return None


class TiffStack(Source):
    """One multipage TIFF or BigTIFF, a page per z.

    Uncompressed pages stored in one run are read with plain seeks and
    `readinto` straight into the output (a y-band reads only its rows); other
    pages are decoded one at a time by tifffile and cropped. The IFD chain is
    parsed once, at open; reads re-parse only the IFDs of the pages they
    decode, through a TiffFile of their own (tifffile handles are not
    thread-safe).
    """

    kind = "tiff"

    def __init__(self, path: Path):
        self.path = path
        with _tiff(path) as (tif, errors):
            size = tif.filehandle.size
            try:
                series = tif.series[0]
                npages = len(tif.pages)  # walks the IFD chain (offsets only)
            except (tifffile.TiffFileError, ValueError, IndexError, OSError) as e:
                raise FibError(f"{path}: corrupt TIFF ({e}); copy it again") from None
            _check_ifds(path, errors)
            (Y, X), dtype = _page_header(path, tif.pages.first)
            self.shape, self.dtype = _check_grey(path, series.shape, dtype)
            Z = self.shape[0]
            self._swap = tif.byteorder != _NATIVE and self.dtype.itemsize > 1
            self._pagebytes = Y * X * self.dtype.itemsize
            meta = tif.imagej_metadata
            if meta and int(meta.get("images", Z)) != Z:
                raise FibError(f"{path}: ImageJ metadata says {meta.get('images')} images but {Z} pages were found; "
                               "the file is truncated or corrupt — copy it again")
            offset = series.dataoffset
            self._base: int | None = None  # whole series in one run
            self._offsets: list[int | None] = []  # per page: pixel run offset, or None to decode
            self._ifds: list[int] = []
            if offset is not None and npages in (1, Z):  # ImageJ >4 GB and truncate=True files hold one IFD
                if offset + Z * self._pagebytes > size:
                    raise FibError(f"{path}: {Z} pages of {Y}×{X} {self.dtype.name} need "
                                   f"{offset + Z * self._pagebytes} bytes but the file has {size}; "
                                   "the file is truncated or corrupt — copy it again")
                self._base = offset
            elif npages != Z:
                raise FibError(f"{path}: the TIFF describes {Z} pages of {Y}×{X} {self.dtype.name} but holds {npages} "
                               "pages; the file is truncated or corrupt, or its pages differ in shape or dtype")
            else:
                for z, page in enumerate(series.pages):
                    if page is None:
                        raise FibError(f"{path}: page {z} is unreadable; the file is corrupt — copy it again")
                    _check_segments(path, page, size, z)
                    self._ifds.append(page.offset)
                    self._offsets.append(_strips_contiguous(page, self._pagebytes))
            self._desc = (f"{'BigTIFF' if tif.is_bigtiff else 'TIFF'}{' (ImageJ)' if meta else ''}, "
                          f"{Z} pages of {Y}×{X} {self.dtype.name}, {_compression(tif.pages.first)}")
            self.voxel_size = _voxel_size_from_imagej(tif)

    def _read(self, out, z0, z1, y0, y1):
        _, Y, X = self.shape
        rowbytes = X * self.dtype.itemsize
        if self._base is not None:
            with open(self.path, "rb", buffering=0) as fh:
                if y0 == 0 and y1 == Y:  # whole pages: one sequential read
                    _read_rows(fh, out, self._base + z0 * self._pagebytes)
                else:
                    for i in range(z1 - z0):
                        _read_rows(fh, out[i], self._base + (z0 + i) * self._pagebytes + y0 * rowbytes)
            if self._swap:
                out.byteswap(inplace=True)
            return
        raw = [z for z in range(z0, z1) if self._offsets[z] is not None]
        decode = [z for z in range(z0, z1) if self._offsets[z] is None]
        if raw:
            with open(self.path, "rb", buffering=0) as fh:
                for z in raw:
                    _read_rows(fh, out[z - z0], self._offsets[z] + y0 * rowbytes)
                    if self._swap:
                        out[z - z0].byteswap(inplace=True)
        if decode:
            with tifffile.TiffFile(self.path) as tif:
                for z in decode:  # parse just this page's IFD, at the offset found at open
                    tif.filehandle.seek(self._ifds[z])
                    out[z - z0] = tifffile.TiffPage(tif, index=z).asarray()[y0:y1]

    def files(self):
        return [self.path]

    def describe(self):
        return self._desc


class TiffFolder(Source):
    """A folder of single-page 2D TIFFs, one per z, in natural order (s2 before s10)."""

    kind = "tiff-folder"

    def __init__(self, path: Path):
        self.path = path
        self._files = sorted((p for p in path.iterdir() if p.suffix.lower() in TIFF_SUFFIXES and p.is_file()),
                             key=natural_key)
        if not self._files:
            raise FibError(f"{path}: folder holds no .tif/.tiff slices; {FORMATS_HINT}")
        self._offsets: list[int | None] = []  # per file: pixel run offset, or None to decode
        self._swap: list[bool] = []
        shape2 = dtype = None
        for f in self._files:
            with _tiff(f, "every file in a slice folder must be a TIFF") as (tif, errors):
                page = tif.pages.first
                if shape2 is None:
                    shape2, dtype = _page_header(f, page)
                    self.shape, self.dtype = _check_grey(f, (len(self._files), *shape2), dtype)
                    compression = _compression(page)
                elif (page.shape, page.dtype, page.samplesperpixel) != (shape2, dtype, 1):
                    got = (f"{page.shape} {page.dtype.name if page.dtype is not None else '?'}"
                           + (f" ×{page.samplesperpixel} samples" if page.samplesperpixel > 1 else ""))
                    raise FibError(f"{f}: slice is {got}, but {self._files[0].name} is {shape2} {dtype.name}; "
                                   f"all slices must match — fix or remove {f.name}")
                if tif.pages.is_multipage:
                    raise FibError(f"{f}: holds several pages; a slice folder needs one 2D page per file "
                                   "(give a multipage TIFF on its own instead)")
                _check_ifds(f, errors)
                _check_segments(f, page, tif.filehandle.size, 0)
                self._offsets.append(_strips_contiguous(page, page.nbytes))
                self._swap.append(tif.byteorder != _NATIVE and dtype.itemsize > 1)
        self._desc = (f"folder of {len(self._files)} TIFF slices of {shape2[0]}×{shape2[1]} {self.dtype.name}, "
                      f"{compression} (first slice)")

    def _read(self, out, z0, z1, y0, y1):
        X = self.shape[2]
        for i, z in enumerate(range(z0, z1)):
            f, offset = self._files[z], self._offsets[z]
            if offset is not None:
                with open(f, "rb", buffering=0) as fh:
                    _read_rows(fh, out[i], offset + y0 * X * self.dtype.itemsize)
                if self._swap[z]:
                    out[i].byteswap(inplace=True)
            else:
                with tifffile.TiffFile(f) as tif:
                    out[i] = tif.pages.first.asarray()[y0:y1]

    def files(self):
        return list(self._files)

    def describe(self):
        return self._desc


# ---------------------------------------------------------------- HDF5

def _h5_datasets(f) -> list[tuple[str, tuple, np.dtype]]:
    import h5py
    found = []
    f.visititems(lambda name, obj: found.append(("/" + name, obj.shape, obj.dtype))
                 if isinstance(obj, h5py.Dataset) else None)
    return found


def _list5(names) -> str:
    names = list(names)
    return ", ".join(names[:5]) + (f" (and {len(names) - 5} more)" if len(names) > 5 else "")


class Hdf5Source(Source):
    """One 3D dataset of an HDF5 file (h5py).

    Voxel size from the dataset's attributes: `resolution` is taken as nm in
    Z,Y,X order (the CREMI convention), `element_size_um` as µm in Z,Y,X
    order (ilastik / the Fiji HDF5 plugin).
    """

    kind = "hdf5"

    def __init__(self, path: Path, dataset: str | None):
        import h5py
        self.path = path
        if not path.is_file():
            raise FibError(f"{path}: no such file; {FORMATS_HINT}")
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise FibError(f"{path}: not a readable HDF5 file ({e}); give file.h5:/dataset") from None
        with f:
            if not dataset:
                cands = [d for d in _h5_datasets(f) if len(d[1]) == 3]
                if len(cands) != 1:
                    names = [d[0] for d in (cands or _h5_datasets(f))]
                    what = (f"holds {len(cands)} 3D datasets ({_list5(names)})" if cands else
                            f"holds no 3D dataset (found: {_list5(names) or 'none'})")
                    raise FibError(f"{path}: {what}; name one as {path}:/path/to/dataset")
                dataset = cands[0][0]
            dataset = "/" + dataset.strip("/")
            ds = f.get(dataset)
            if not isinstance(ds, h5py.Dataset):
                names = [d[0] for d in _h5_datasets(f)]
                what = "is a group, not a dataset" if ds is not None else "not found"
                raise FibError(f"{path}:{dataset}: {what}; datasets in the file: {_list5(names) or 'none'}")
            self.dataset = dataset
            self.shape, self.dtype = _check_grey(f"{path}:{dataset}", ds.shape, ds.dtype,
                                                 " (one channel; multi-channel data must be split first)")
            attrs = ds.attrs
            if "resolution" in attrs:
                self.voxel_size = _voxel(np.ravel(attrs["resolution"]), 1.0)
            elif "element_size_um" in attrs:
                self.voxel_size = _voxel(np.ravel(attrs["element_size_um"]), 1e3)
            comp = ds.compression or "uncompressed"
            self._desc = (f"HDF5 dataset {dataset}, {self._dims()}, "
                          + (f"chunks {'×'.join(map(str, ds.chunks))}, {comp}" if ds.chunks else "contiguous"))

    def _read(self, out, z0, z1, y0, y1):
        import h5py
        with h5py.File(self.path, "r") as f:  # a handle per call; h5py serialises calls on its own lock
            f[self.dataset].read_direct(out, np.s_[z0:z1, y0:y1, :])

    def files(self):
        return [self.path]

    def describe(self):
        return self._desc


# ---------------------------------------------------------------- N5 and zarr

def _tree_files(root: Path) -> list[Path]:
    """Every file under root, sorted by relative (posix) path."""
    found = [Path(d) / n for d, _, names in os.walk(root) for n in names]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise FibError(f"{path}: unreadable metadata ({e}); the store is corrupt") from None


def _n5_voxel(attrs: dict) -> tuple[float, float, float] | None:
    """N5 `resolution` (list, X,Y,Z; unit from `units`/`unit`, nm if absent) or `pixelResolution`."""
    res, unit = attrs.get("resolution"), attrs.get("units", attrs.get("unit", "nm"))
    if isinstance(attrs.get("pixelResolution"), dict):
        res, unit = attrs["pixelResolution"].get("dimensions"), attrs["pixelResolution"].get("unit", "nm")
    elif res is None:
        res = attrs.get("pixelResolution")
    if not isinstance(res, list) or len(res) != 3:
        return None
    if isinstance(unit, list):
        unit = unit[0] if len(set(unit)) == 1 else None
    return _voxel(res[::-1], _unit_nm(unit))


def _n5_dataset(path: Path) -> Path:
    """The dataset directory to read: `path` itself, `s0` of a multiscale group, or a group's only 3D dataset."""
    if "dimensions" in _read_json(path / "attributes.json"):
        return path
    if (path / "s0" / "attributes.json").is_file():
        return path / "s0"
    found = []
    for d, subdirs, names in os.walk(path):
        dims = _read_json(Path(d) / "attributes.json").get("dimensions") if "attributes.json" in names else None
        if dims is not None:
            subdirs.clear()  # a dataset: below are only its blocks, maybe millions of them
            if len(dims) == 3:
                found.append(Path(d))
    if len(found) != 1:
        names = sorted(str(p.relative_to(path)) for p in found)
        raise FibError(f"{path}: N5 group with {len(found)} 3D datasets ({_list5(names) or 'none'}); "
                       f"name one, e.g. {path / (names[0] if names else 'raw')}")
    return found[0]


class N5Source(Source):
    """An N5 dataset via tensorstore. N5 lists dimensions X,Y,Z; reads are returned Z,Y,X."""

    kind = "n5"

    def __init__(self, path: Path):
        import tensorstore as ts
        self.path = path
        self.array_dir = _n5_dataset(path)
        attrs = _read_json(self.array_dir / "attributes.json")
        try:
            store = ts.open({"driver": "n5", "kvstore": {"driver": "file", "path": str(self.array_dir)}},
                            read=True, open=True).result()
        except (ValueError, RuntimeError) as e:
            raise FibError(f"{self.array_dir}: not a readable N5 dataset ({e})") from None
        self._store = store.T  # X,Y,Z → Z,Y,X; the bytes of a block are X-fastest, i.e. C order here
        self.shape, self.dtype = _check_grey(self.array_dir, self._store.shape, store.dtype.numpy_dtype)
        self.voxel_size = _n5_voxel(attrs) or (_n5_voxel(_read_json(path / "attributes.json"))
                                               if self.array_dir != path else None)
        block = "×".join(map(str, attrs.get("blockSize", [])[::-1]))
        comp = (attrs.get("compression") or {}).get("type", attrs.get("compressionType", "raw"))
        self._desc = f"N5 dataset, {self._dims()}, blocks {block}, {comp}"

    def _read(self, out, z0, z1, y0, y1):
        out[...] = self._store[z0:z1, y0:y1].read().result()

    def files(self):
        return _tree_files(self.array_dir)

    def describe(self):
        return self._desc


def _zarr_attrs(path: Path) -> dict:
    if (path / "zarr.json").is_file():
        return _read_json(path / "zarr.json").get("attributes", {})
    return _read_json(path / ".zattrs") if (path / ".zattrs").is_file() else {}


def _ome_voxel(ms: dict, ndim: int, level: int = 0) -> tuple[float, float, float] | None:
    """A level's scale (times any multiscale-wide scale) on the last three axes, in nm."""
    scale = np.ones(ndim)
    for t in ms["datasets"][level].get("coordinateTransformations", []) + ms.get("coordinateTransformations", []):
        if t.get("type") == "scale" and len(t.get("scale", [])) == ndim:
            scale = scale * np.asarray(t["scale"], float)
    axes = ms.get("axes", [])[-3:]
    units = {a.get("unit") for a in axes if isinstance(a, dict)}
    if len(axes) != 3 or len(units) != 1:
        return None
    return _voxel(scale[-3:], _unit_nm(units.pop()))


def _multiscales(path: Path) -> list | None:
    attrs = _zarr_attrs(path)
    return (attrs.get("ome") or {}).get("multiscales") or attrs.get("multiscales")


class ZarrSource(Source):
    """A zarr v2/v3 array (zarr-python 3), or level 0 of an OME-Zarr group with its voxel size.

    An array named inside an OME-Zarr group (vol.ome.zarr/0) takes its level's
    scale from the group. Leading axes of size 1 (OME-Zarr's t and c) are dropped.
    """

    kind = "zarr"

    def __init__(self, path: Path):
        import zarr
        self.path = path
        ms = _multiscales(path)
        self._meta_files: list[Path] = []
        if ms:
            self.array_dir = path / ms[0]["datasets"][0]["path"]
            self._meta_files = [path / n for n in ("zarr.json", ".zgroup", ".zattrs") if (path / n).is_file()]
        else:
            self.array_dir = path
        try:
            self._arr = zarr.open_array(store=str(self.array_dir), mode="r")
        except Exception as e:  # zarr raises several types for a group or bad metadata
            if not ms and _is_zarr_group(path):
                names = sorted(zarr.open_group(store=str(path), mode="r").array_keys())
                raise FibError(f"{path}: a zarr group, not an array (arrays: {_list5(names) or 'none'}); "
                               f"name one, e.g. {path / (names[0] if names else 'raw')}") from None
            raise FibError(f"{self.array_dir}: not a readable zarr array ({e}); {FORMATS_HINT}") from None
        shape = self._arr.shape
        self._lead = max(0, len(shape) - 3)
        if any(s != 1 for s in shape[: self._lead]):
            self._lead = 0  # let _check_grey name the real shape
        self.shape, self.dtype = _check_grey(self.array_dir, shape[self._lead:], self._arr.dtype)
        if ms:
            self.voxel_size = _ome_voxel(ms[0], len(shape))
        elif (parent := _multiscales(path.parent) if path.parent != path else None):
            levels = [d.get("path") for d in parent[0].get("datasets", [])]
            if path.name in levels:
                self.voxel_size = _ome_voxel(parent[0], len(shape), levels.index(path.name))
        fmt = self._arr.metadata.zarr_format
        comp = ", ".join(type(c).__name__ for c in (self._arr.compressors or ())) or "uncompressed"
        what = (f"OME-Zarr level {ms[0]['datasets'][0]['path']!r} of {len(ms[0]['datasets'])}" if ms
                else f"zarr v{fmt} array")
        chunks = "×".join(map(str, self._arr.chunks[self._lead:]))
        shards = self._arr.shards and ", shards " + "×".join(map(str, self._arr.shards[self._lead:]))
        self._desc = f"{what}, {self._dims()}, chunks {chunks}{shards or ''}, {comp}"

    def _read(self, out, z0, z1, y0, y1):
        out[...] = self._arr[(0,) * self._lead + (slice(z0, z1), slice(y0, y1))]

    def files(self):
        return self._meta_files + _tree_files(self.array_dir)

    def describe(self):
        return self._desc


def _is_zarr_group(path: Path) -> bool:
    if (path / ".zgroup").is_file():
        return True
    try:
        return json.loads((path / "zarr.json").read_text()).get("node_type") == "group"
    except (OSError, ValueError):
        return False


class ArraySource(Source):
    """An in-memory Z,Y,X array (tests, generated data): the same interface, and no files."""

    kind = "array"

    def __init__(self, array: np.ndarray, name: str = "array"):
        self.path = Path(name)
        self.shape, self.dtype = _check_grey(name, array.shape, array.dtype)
        self._array = array

    def _read(self, out, z0, z1, y0, y1):
        out[...] = self._array[z0:z1, y0:y1]

    def files(self):
        return []

    def describe(self):
        return f"in-memory array, {self._dims()}"


# ---------------------------------------------------------------- detection

_HDF5_SPEC = re.compile(r"^(?P<file>.+?\.(?:h5|hdf5|hdf))(?::(?P<dataset>.*))?$", re.IGNORECASE)


def open_source(spec: str | Path) -> Source:
    """Open a raw volume by what the user typed: a file, a folder, or file.h5:/dataset."""
    m = _HDF5_SPEC.match(str(spec))
    if m:
        return Hdf5Source(Path(m["file"]).expanduser(), m["dataset"])
    path = Path(spec).expanduser()
    if not path.exists():
        raise FibError(f"{path}: no such file or directory; {FORMATS_HINT}")
    if path.is_dir():
        if (path / "attributes.json").is_file():
            return N5Source(path)
        if any((path / n).is_file() for n in ("zarr.json", ".zarray", ".zgroup", ".zattrs")):
            return ZarrSource(path)
        if any(p.suffix.lower() in TIFF_SUFFIXES for p in path.iterdir()):
            return TiffFolder(path)
        raise FibError(f"{path}: folder is neither TIFF slices, N5 nor zarr; {FORMATS_HINT}")
    if path.suffix.lower() in TIFF_SUFFIXES:
        return TiffStack(path)
    try:
        import h5py
        if h5py.is_hdf5(path):
            return Hdf5Source(path, None)
    except OSError:
        pass
    raise FibError(f"{path}: unknown format; {FORMATS_HINT}")


def read_labels(path: str | Path) -> np.ndarray:
    """A small dense label array (crop or held-out region) from TIFF or zarr."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FibError(f"{path}: no such labels file")
    if path.suffix.lower() in TIFF_SUFFIXES:
        try:
            arr = tifffile.imread(path)
        except (tifffile.TiffFileError, ValueError, OSError) as e:
            raise FibError(f"{path}: not a readable TIFF ({e})") from None
    else:
        import zarr
        try:
            node = zarr.open(str(path), mode="r")
            arr = node[:] if isinstance(node, zarr.Array) else node["0"][:]
        except Exception as e:
            raise FibError(f"{path}: not a readable zarr array ({e}); give a .tif or a .zarr label array") from None
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise FibError(f"{path}: labels have {arr.ndim} dimensions; expected a 3D (Z,Y,X) or 2D (Y,X) array")
    if not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() > 255:
        raise FibError(f"{path}: labels must be integers 0..255 (0 = unlabelled, 1..n = classes); got {arr.dtype}")
    return arr.astype(np.uint8)
