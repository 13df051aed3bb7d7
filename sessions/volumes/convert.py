"""Explicit, recorded conversion of a source's grey levels to the stored uint8.

Volumes are stored as uint8. A uint16/int16/float32 source is never narrowed
silently: the user picks a mapping (`--convert`), and the Conversion, with
how its bounds were found, goes into the provenance so the stored voxels can
be explained and reproduced.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from sessions.errors import FibError
from sessions.volumes.sources import Source

DEFAULT_PERCENTILES = (0.1, 99.9)  # CDeep3M's clipping of the intensity histogram
SAMPLE_SLICES = 32
SAMPLE_VOXELS = 4 << 20  # in all, across the sampled slices
PIECE = 1 << 20  # elements per float32 temporary in apply (4 MB: stays in cache, bounded per thread)
BAND_BYTES = 64 << 20  # a sampled slice is read in y-bands of at most this many bytes
FORMULA = "uint8(rint(clip((x - low) * 255 / (high - low), 0, 255))), NaN -> 0"
SPEC_FORMS = ("none, percentile, percentile:LO,HI (percents, 0 <= LO < HI <= 100) "
              "or range:LO,HI (source values, LO < HI)")


@dataclass(frozen=True)
class Conversion:
    """A linear map of source values [low, high] onto 0..255, clipped outside."""

    method: str  # "none" | "percentile" | "range"
    low: float  # source value mapped to 0
    high: float  # source value mapped to 255
    params: dict = field(default_factory=dict)  # how low/high were found
    source_dtype: str = "uint8"

    def apply(self, block: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The block as uint8, same shape; float32 temporaries stay ≤ PIECE elements whatever the block size.

        `out` (uint8, C-contiguous, the block's shape) is filled and returned: reusing
        a buffer saves the page faults of fresh memory, which cost more than the arithmetic.
        """
        if out is not None and (out.shape != block.shape or out.dtype != np.uint8 or not out.flags.c_contiguous):
            raise ValueError(f"out must be a C-contiguous uint8 array of shape {block.shape}, "
                             f"got {out.shape} {out.dtype}")
        if self.method == "none":
            if block.dtype != np.uint8:
                raise ValueError(f"conversion 'none' applies to uint8 only, got {block.dtype}")
            if out is None:
                return block
            np.copyto(out, block)
            return out
        result = np.empty(block.shape, np.uint8) if out is None else out
        src = np.ascontiguousarray(block).reshape(-1)  # sources return C-contiguous blocks: a view
        out = result.reshape(-1)
        low, scale = np.float32(self.low), np.float32(255.0 / (self.high - self.low))
        tmp = np.empty(min(PIECE, src.size), np.float32)
        isfloat = src.dtype.kind == "f"
        for a in range(0, src.size, PIECE):
            b = min(a + PIECE, src.size)
            t = tmp[: b - a]
            np.subtract(src[a:b], low, out=t, dtype=np.float32)
            np.multiply(t, scale, out=t)
            np.clip(t, 0, 255, out=t)
            np.rint(t, out=t)
            if isfloat:
                np.nan_to_num(t, copy=False, nan=0.0)
            np.copyto(out[a:b], t, casting="unsafe")
        return result

    def to_json(self) -> dict:
        return {"method": self.method, "low": self.low, "high": self.high, "params": self.params,
                "source_dtype": self.source_dtype, "formula": "identity" if self.method == "none" else FORMULA}


def _numbers(text: str, spec: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise FibError(f"--convert {spec!r}: expected two numbers LO,HI; accepted forms: {SPEC_FORMS}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise FibError(f"--convert {spec!r}: need finite LO < HI; accepted forms: {SPEC_FORMS}")
    return lo, hi


def plan_conversion(source: Source, spec: str | None) -> Conversion:
    """The conversion `spec` asks for, with percentile bounds measured on a sample of `source`."""
    dtype = np.dtype(source.dtype).name
    if spec is None:
        if dtype == "uint8":
            return Conversion("none", 0.0, 255.0, {}, dtype)
        raise FibError(f"{source.path}: dtype {dtype} needs an explicit conversion to uint8: pass --convert "
                       "percentile (clip at the 0.1/99.9 percentiles of a sample, as CDeep3M does) "
                       "or --convert range:LO,HI")
    m = re.fullmatch(r"\s*(none|percentile|range)\s*(?::\s*(.*))?", spec, re.IGNORECASE)
    if not m:
        raise FibError(f"--convert {spec!r}: not understood; accepted forms: {SPEC_FORMS}")
    method, args = m[1].lower(), m[2]
    if method == "none":
        if args is not None:
            raise FibError(f"--convert {spec!r}: 'none' takes no values; accepted forms: {SPEC_FORMS}")
        if dtype != "uint8":
            raise FibError(f"{source.path}: --convert none keeps the values, but dtype {dtype} does not fit uint8; "
                           "pass --convert percentile or --convert range:LO,HI")
        return Conversion("none", 0.0, 255.0, {}, dtype)
    if method == "range":
        if args is None:
            raise FibError(f"--convert {spec!r}: range needs its bounds, e.g. range:100,4000; "
                           f"accepted forms: {SPEC_FORMS}")
        lo, hi = _numbers(args, spec)
        return Conversion("range", lo, hi, {"range": [lo, hi]}, dtype)
    plo, phi = DEFAULT_PERCENTILES if args is None else _numbers(args, spec)
    if not (0 <= plo < phi <= 100):
        raise FibError(f"--convert {spec!r}: percentiles must satisfy 0 <= LO < HI <= 100")
    sample, info = _sample(source)
    if sample.size == 0:
        raise FibError(f"{source.path}: the sampled slices hold no finite values; pass --convert range:LO,HI")
    low, high = (float(v) for v in np.percentile(sample, [plo, phi]))
    params = {"percentiles": [plo, phi], "sample": info}
    if high <= low:  # a constant sample: widen so apply does not divide by zero
        params["widened"] = f"sample is constant at {low}; high set to low + 1"
        high = low + 1.0
    return Conversion("percentile", low, high, params, dtype)


def _sample(source: Source) -> tuple[np.ndarray, dict]:
    """A deterministic, bounded sample: up to 32 evenly spaced slices, each subsampled on a fixed grid.

    Slices are read one at a time, in y-bands, so memory stays at one band plus the sample.
    """
    Z, Y, X = source.shape
    zs = sorted({int(round(z)) for z in np.linspace(0, Z - 1, min(SAMPLE_SLICES, Z))})
    stride = max(1, math.ceil(math.sqrt(Y * X * len(zs) / SAMPLE_VOXELS)))
    band = max(stride, (BAND_BYTES // max(1, X * source.dtype.itemsize)) // stride * stride)
    parts, dropped = [], 0
    for z in zs:
        for y0 in range(0, Y, band):  # band is a multiple of stride: rows 0, stride, 2·stride… in every band
            part = source.read(z, z + 1, y0, min(Y, y0 + band))[0, ::stride, ::stride].ravel()
            if part.dtype.kind == "f":
                keep = np.isfinite(part)
                dropped += int(part.size - keep.sum())
                part = part[keep]
            parts.append(part)
    sample = np.concatenate(parts) if parts else np.empty(0)
    info = {"slices": len(zs), "z": zs, "stride": [stride, stride], "voxels": int(sample.size)}
    if dropped:
        info["non_finite_ignored"] = dropped
    return sample, info
