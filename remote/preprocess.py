"""Preprocessing of the raw volume, the same in training, prediction and preview.

A preprocessing is a *record*: a method and the constants it needs. The
training job resolves it once (the percentiles are measured on the volume
there), stores it in `model.pt`, and every consumer of that model (prediction,
preview, export) applies the stored record, so nothing is re-measured and
nothing can drift between train and predict.

Methods (the vocabulary and defaults are in sessions/train_options.py; all uint8 in, uint8 out, so `remote.model.normalize` stays the one
float mapping):
- `none`: the raw voxels.
- `percentile`: a linear stretch of [p_low, p_high] of the volume to [0, 255],
  pointwise (a lookup table), so any region reads exactly what the whole
  volume would.
- `clahe`: `skimage.exposure.equalize_adapthist`, per z-slice (FIB-SEM and
  ssTEM are acquired slice by slice; the anisotropic axis has no neighbours
  to equalise with), kernel in pixels.
- `denoise`: total-variation denoising (`skimage.restoration.denoise_tv_chambolle`),
  per z-slice.

CLAHE and TV denoising are not local: a voxel's value depends on its whole
slice. To make every reader see the same values they are computed on whole
slices, once per slice, into a cache beside the volume
(`<volume>.ome.zarr.preprocessed/<key>/`), lazily: a reader asking for z
0:14 computes those 14 slices (under a file lock, so two jobs never write the
same slice) and marks each done with a file; the next reader only reads. A
whole slice must fit in memory (float64, ~8 bytes a pixel: 10⁸ pixels ≈ 0.8 GB).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from sessions.train_options import preprocess_record

SAMPLE_VOXELS = 2**24  # percentiles are measured on the finest pyramid level with at most this many voxels


def resolve(record: dict | None, levels: list) -> dict:
    """The record with its measured constants (percentile values) filled in; `levels`: the volume's pyramid."""
    given = dict(record or {"method": "none"})
    method = given.pop("method", "none")
    measured = {k: given.pop(k) for k in ("lo_value", "hi_value") if k in given}
    rec = {**preprocess_record(method, **given), **measured}
    if rec["method"] == "percentile" and "lo_value" not in rec:
        small = next((a for a in levels if int(np.prod(a.shape)) <= SAMPLE_VOXELS), levels[-1])
        lo, hi = np.percentile(np.asarray(small[:]), [rec["low"], rec["high"]])
        rec["lo_value"], rec["hi_value"] = float(lo), float(max(hi, lo + 1.0))
    return rec


def key(record: dict) -> str:
    """A short stable name for a record's cache (same method and parameters → same cache)."""
    return f"{record['method']}-" + hashlib.sha1(json.dumps(record, sort_keys=True).encode()).hexdigest()[:10]


def _lut(rec: dict) -> np.ndarray:
    v = np.arange(256, dtype=np.float64)
    return np.clip((v - rec["lo_value"]) / (rec["hi_value"] - rec["lo_value"]) * 255.0, 0, 255).round().astype(np.uint8)


def slice_filter(rec: dict, img: np.ndarray) -> np.ndarray:
    """One whole z-slice (uint8) → its preprocessed uint8 slice, for the non-local methods."""
    x = img.astype(np.float64) / 255.0
    if rec["method"] == "clahe":
        from skimage.exposure import equalize_adapthist

        k = int(min(rec["kernel"], *img.shape)) or 1
        y = equalize_adapthist(x, kernel_size=k, clip_limit=rec["clip_limit"])
    elif rec["method"] == "denoise":
        from skimage.restoration import denoise_tv_chambolle

        y = denoise_tv_chambolle(x, weight=rec["weight"])
    else:
        raise ValueError(f"{rec['method']} is not a per-slice method")
    return np.clip(y * 255.0, 0, 255).round().astype(np.uint8)


class Preprocessed:
    """`raw` as the model sees it: same shape, uint8, sliced like an array (what `read_padded` needs)."""

    def __init__(self, raw, record: dict, cache: Path | None = None):
        self.raw, self.record = raw, record
        self.shape, self.dtype = tuple(raw.shape), np.dtype(np.uint8)
        self.method = record["method"]
        self._lut = _lut(record) if self.method == "percentile" else None
        self._store = None
        if self.method in ("clahe", "denoise"):
            if cache is None:
                raise ValueError(f"preprocessing {self.method} needs a cache folder for its slices")
            self.cache = Path(cache) / key(record)
            self._open_store()

    def _open_store(self) -> None:
        import zarr

        self.cache.mkdir(parents=True, exist_ok=True)
        (self.cache / "done").mkdir(exist_ok=True)
        with self._locked():
            path = self.cache / "slices.zarr"
            if not path.exists():
                chunks = (1, min(self.shape[1], 512), min(self.shape[2], 512))
                zarr.create_array(path, shape=self.shape, chunks=chunks, dtype="uint8", fill_value=0)
                (self.cache / "record.json").write_text(json.dumps(self.record, sort_keys=True))
            self._store = zarr.open_array(path, mode="r+")

    @contextmanager
    def _locked(self):
        """The cache's file lock: one writer of slices at a time, across processes and nodes."""
        with open(self.cache / "lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def ensure(self, z0: int, z1: int) -> None:
        """Compute the slices z0:z1 not computed yet (by anyone)."""
        todo = [z for z in range(z0, z1) if not (self.cache / "done" / str(z)).exists()]
        if not todo:
            return
        with self._locked():
            for z in todo:
                mark = self.cache / "done" / str(z)
                if mark.exists():
                    continue
                self._store[z] = slice_filter(self.record, np.asarray(self.raw[z]))
                mark.touch()

    def __getitem__(self, sl) -> np.ndarray:
        if self.method == "none":
            return np.asarray(self.raw[sl])
        if self._lut is not None:
            return self._lut[np.asarray(self.raw[sl])]
        zs = sl[0] if isinstance(sl, tuple) else sl
        if isinstance(zs, slice):
            z0, z1, _ = zs.indices(self.shape[0])
        else:
            z0 = int(zs) % self.shape[0]
            z1 = z0 + 1
        self.ensure(z0, z1)
        return np.asarray(self._store[sl])


def cache_dir(volume_path: str | Path) -> Path:
    """Where a volume's per-slice preprocessing caches live: beside its OME-Zarr, never inside it."""
    p = Path(volume_path)
    return p.with_name(p.name + ".preprocessed")


def wrap(raw, record: dict | None, volume_path: str | Path | None) -> Preprocessed:
    """`raw` (level 0 of the volume at `volume_path`) through the resolved `record` (None: none). Without
    `volume_path` only the pointwise methods work (there is nowhere to cache slices)."""
    return Preprocessed(raw, record or {"method": "none"}, cache_dir(volume_path) if volume_path else None)
