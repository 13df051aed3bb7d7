"""Readers for raw volumes: multipage TIFF/BigTIFF, TIFF slice folders, HDF5, N5, zarr/OME-Zarr.

Every reader validates at open (exists, parses, 3D grey levels, supported
dtype, TIFF data not truncated) so a bad source fails before anything is
written, with one FibError line that names the input. `read()` returns
Z,Y,X regions in the native dtype and is safe to call from several threads:
nothing mutable is shared between calls (a file handle or library handle per
call, or a library that is itself thread-safe).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import tifffile

from sessions.errors import FibError
from sessions.volumes.sources.base import (
    FORMATS_HINT,
    SUPPORTED_DTYPES,
    TIFF_SUFFIXES,
    ArraySource,
    Source,
    natural_key,
)
from sessions.volumes.sources.hdf5 import Hdf5Source
from sessions.volumes.sources.n5 import N5Source
from sessions.volumes.sources.tiff import TiffFolder, TiffStack
from sessions.volumes.sources.zarr_array import ZarrSource

__all__ = ["FORMATS_HINT", "SUPPORTED_DTYPES", "TIFF_SUFFIXES", "ArraySource", "Hdf5Source", "N5Source", "Source",
           "TiffFolder", "TiffStack", "ZarrSource", "natural_key", "open_source", "read_labels"]

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
