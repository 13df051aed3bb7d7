"""Readers for raw volumes that stream z-slabs: a multipage TIFF or a folder of slices.

Each reader validates up front (exists, is TIFF, consistent shape/dtype) so
a bad source fails before anything is written.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile

from sessions.errors import FibError

SUPPORTED_DTYPES = ("uint8",)
TIFF_SUFFIXES = (".tif", ".tiff")


def natural_key(p: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


@dataclass
class TiffSource:
    """A ZYX volume stored as one multipage TIFF or as a folder of 2D TIFFs."""

    path: Path
    shape: tuple[int, int, int]
    dtype: np.dtype
    files: list[Path] = field(default_factory=list)  # folder of slices
    voxel_size: tuple[float, float, float] | None = None  # from metadata, nm

    def read(self, z0: int, z1: int) -> np.ndarray:
        if self.files:
            return np.stack([tifffile.imread(f) for f in self.files[z0:z1]])
        with tifffile.TiffFile(self.path) as tif:
            pages = tif.pages
            return np.stack([pages[i].asarray() for i in range(z0, z1)])

    def sha256(self, chunk: int = 1 << 22) -> str:
        """Streaming checksum of the source bytes (all files, in order)."""
        h = hashlib.sha256()
        for f in self.files or [self.path]:
            with open(f, "rb") as fh:
                while buf := fh.read(chunk):
                    h.update(buf)
        return h.hexdigest()


_UNITS_NM = {"nm": 1.0, "nanometer": 1.0, "um": 1000.0, "µm": 1000.0, "micron": 1000.0, "\\u00B5m": 1000.0}


def _voxel_size_from_imagej(tif: tifffile.TiffFile) -> tuple[float, float, float] | None:
    meta = tif.imagej_metadata or {}
    unit = _UNITS_NM.get(str(meta.get("unit", "")).lower())
    if unit is None or "spacing" not in meta:
        return None
    try:
        xres = tif.pages[0].tags["XResolution"].value
        yres = tif.pages[0].tags["YResolution"].value
        return (float(meta["spacing"]) * unit, yres[1] / yres[0] * unit, xres[1] / xres[0] * unit)
    except (KeyError, ZeroDivisionError):
        return None


def _check_dtype(dtype: np.dtype, where) -> np.dtype:
    if np.dtype(dtype).name not in SUPPORTED_DTYPES:
        raise FibError(f"{where}: dtype {np.dtype(dtype).name} is not supported yet; "
                       f"convert to {', '.join(SUPPORTED_DTYPES)} first")
    return np.dtype(dtype)


def _open_tiff(path: Path) -> tifffile.TiffFile:
    try:
        return tifffile.TiffFile(path)
    except (tifffile.TiffFileError, ValueError, OSError) as e:
        raise FibError(f"{path}: not a readable TIFF ({e}); give a multipage TIFF or a folder of TIFF slices") from None


def open_source(path: str | Path) -> TiffSource:
    path = Path(path).expanduser()
    if not path.exists():
        raise FibError(f"{path}: no such file or directory")
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.suffix.lower() in TIFF_SUFFIXES), key=natural_key)
        if not files:
            raise FibError(f"{path}: folder holds no .tif/.tiff slices")
        with _open_tiff(files[0]) as tif:
            first = tif.pages[0]
            shape2, dtype = first.shape, first.dtype
        if len(shape2) != 2:
            raise FibError(f"{files[0]}: slice has shape {shape2}; expected a 2D grey-level image")
        for f in files[1:]:
            with _open_tiff(f) as tif:
                p = tif.pages[0]
                if p.shape != shape2 or p.dtype != dtype:
                    raise FibError(f"{f}: slice is {p.shape} {p.dtype}, but {files[0].name} is {shape2} {dtype}; "
                                   "all slices must match")
        return TiffSource(path, (len(files), *shape2), _check_dtype(dtype, path), files=files)
    with _open_tiff(path) as tif:
        pages = tif.pages
        first = pages[0]
        if len(first.shape) != 2:
            raise FibError(f"{path}: pages have shape {first.shape}; expected 2D grey-level pages (Z pages of Y×X)")
        n = len(pages)
        vs = _voxel_size_from_imagej(tif)
        return TiffSource(path, (n, *first.shape), _check_dtype(first.dtype, path), voxel_size=vs)


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
