"""What every reader shares: the `Source` interface, the in-memory `ArraySource`,
and the checks and conversions the readers apply at open (grey-level Z,Y,X
shape and dtype, voxel sizes and their units, file listing and JSON metadata).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from sessions.errors import FibError

SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "float32")
TIFF_SUFFIXES = (".tif", ".tiff")
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


def _list5(names) -> str:
    names = list(names)
    return ", ".join(names[:5]) + (f" (and {len(names) - 5} more)" if len(names) > 5 else "")


def _tree_files(root: Path) -> list[Path]:
    """Every file under root, sorted by relative (posix) path."""
    found = [Path(d) / n for d, _, names in os.walk(root) for n in names]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


CHUNK_REMEDY = "a chunk is corrupt or uses a codec this machine lacks — copy the store again"


def _unreadable(where: str, e: Exception, remedy: str) -> FibError:
    """One line for data the format's library could not decode: a corrupt file or a codec missing here."""
    return FibError(f"{where}: cannot read the data ({type(e).__name__}: {e}); {remedy}")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise FibError(f"{path}: unreadable metadata ({e}); the store is corrupt") from None


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
