"""TIFF readers: one multipage TIFF/BigTIFF (`TiffStack`) and a folder of 2D slices (`TiffFolder`),
with the validation that catches truncated or non-grey files at open."""

from __future__ import annotations

import logging
import sys
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from pathlib import Path
from struct import error as struct_error

import numpy as np
import tifffile

from sessions.errors import FibError
from sessions.volumes.sources.base import (
    FORMATS_HINT,
    SUPPORTED_DTYPES,
    TIFF_SUFFIXES,
    Source,
    _check_grey,
    _unit_nm,
    _unreadable,
    _voxel,
    natural_key,
)

_NATIVE = "<" if sys.byteorder == "little" else ">"


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


def _layout(page) -> str:
    """Compression and, when compressed, how the page is cut: what a band read has to decode."""
    name = _compression(page)
    if int(page.compression) == 1:
        return name
    if len(page.dataoffsets) == 1:
        return f"{name}, one strip per page"
    h, w = page.chunks[-2:]
    return f"{name}, {h}×{w} tiles" if page.is_tiled else f"{name}, {h}-row strips"


def _read_rows(fh, out2d: np.ndarray, offset: int) -> None:
    fh.seek(offset)
    view = memoryview(out2d).cast("B")
    if fh.readinto(view) != len(view):
        raise FibError(f"{fh.name}: file is shorter than when it was opened; was it modified?")


def _check_decodable(path: Path, page) -> None:
    """Decode the first row of a compressed page now, so an unsupported codec fails before any work."""
    if int(page.compression) != 1:
        _decode_rows(path, page, 0, 0, 1, np.empty((1, page.shape[1]), page.dtype))


def _decode_rows(path: Path, page, z: int, y0: int, y1: int, out2d: np.ndarray) -> None:
    """Decode rows y0:y1 of compressed page `z` into out2d, touching only the strips or tiles that hold them.

    A 512-row band of an 8192-row page then costs 1/16 of the page, not all of it. Pages that
    are one segment, or whose segments are not plain 2D strips/tiles, are decoded whole. Any
    failure is one line naming the page: a corrupt file, or a codec this machine lacks.
    """
    try:
        _decode_segments(page, y0, y1, out2d)
    except Exception as e:  # tifffile and imagecodecs raise many types for an unknown codec or bad data
        raise _unreadable(f"{path}: page {z} ({_compression(page)})", e,
                          "the file is corrupt or uses a compression this machine cannot decode — copy it again, "
                          "or convert it to an uncompressed or zlib TIFF") from None


def _decode_segments(page, y0: int, y1: int, out2d: np.ndarray) -> None:
    chunked, (h, w) = page.chunked, page.chunks[-2:]
    if len(chunked) != 2 or len(page.chunks) != 2 or len(page.dataoffsets) == 1:
        out2d[...] = page.asarray()[y0:y1]
        return
    Y, X = page.shape
    nx = chunked[1]
    index = [r * nx + c for r in range(y0 // h, (y1 - 1) // h + 1) for c in range(nx)]
    decode = page.decode  # before reading: building the decoder moves the file position
    segments = page.parent.filehandle.read_segments([page.dataoffsets[i] for i in index],
                                                    [page.databytecounts[i] for i in index], index)
    for data, i in segments:
        yy, xx = i // nx * h, i % nx * w
        ya, yb, xb = max(yy, y0), min(yy + h, y1, Y), min(xx + w, X)
        region = out2d[ya - y0: yb - y0, xx: xb]
        if not data:  # byte count 0 (None, or b"" within a merged read): a missing segment reads as 0
            region[...] = 0
            continue
        a = decode(data, i, jpegtables=page.jpegtables)[0]
        region[...] = a[0, ya - yy: yb - yy, : xb - xx, 0]


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


def _voxel_size_from_ome(tif: tifffile.TiffFile) -> tuple[float, float, float] | None:
    """OME-TIFF: PhysicalSize{Z,Y,X} of the first image's Pixels, each in its unit (µm by the schema)."""
    try:
        root = ET.fromstring(tif.ome_metadata or "")
    except ET.ParseError:
        return None
    pixels = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None
    units = [_unit_nm(pixels.get(f"PhysicalSize{ax}Unit", "µm")) for ax in "ZYX"]
    if None in units:
        return None
    try:  # each axis may have its own unit: to nm first
        return _voxel([float(pixels.get(f"PhysicalSize{ax}")) * u for ax, u in zip("ZYX", units)], 1.0)
    except (TypeError, ValueError):
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
            _check_decodable(path, tif.pages.first)
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
            flavour = " (ImageJ)" if meta else " (OME)" if tif.is_ome else ""
            self._desc = (f"{'BigTIFF' if tif.is_bigtiff else 'TIFF'}{flavour}, "
                          f"{Z} pages of {Y}×{X} {self.dtype.name}, {_layout(tif.pages.first)}")
            self.voxel_size = _voxel_size_from_imagej(tif) or _voxel_size_from_ome(tif)

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
                    _decode_rows(self.path, tifffile.TiffPage(tif, index=z), z, y0, y1, out[z - z0])

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
        codecs_checked: set[int] = set()
        for f in self._files:
            with _tiff(f, "every file in a slice folder must be a TIFF") as (tif, errors):
                page = tif.pages.first
                if shape2 is None:
                    shape2, dtype = _page_header(f, page)
                    self.shape, self.dtype = _check_grey(f, (len(self._files), *shape2), dtype)
                    compression = _layout(page)
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
                if int(page.compression) not in codecs_checked:  # one decode per compression in the folder
                    _check_decodable(f, page)
                    codecs_checked.add(int(page.compression))
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
                    _decode_rows(f, tif.pages.first, 0, y0, y1, out[i])

    def files(self):
        return list(self._files)

    def describe(self):
        return self._desc
