"""The viewer's read path: 2D views of a session volume, with labels and prediction.

`SliceSource.view` takes what the screen shows (a region of the level-0
plane and its size in screen pixels), picks the pyramid level and reads only
that level's chunks under the region. The unit of I/O is the (inner) chunk:
zarr reads one chunk of a shard with byte ranges, but must decode all of it.
So decoded chunks are kept whole, in an LRU bounded in bytes, and planes are
cut from them in memory: stepping through the slices of a chunk or panning
back re-reads nothing, and a cold frame reads each chunk it touches once.
Label crops and held-out labels are pasted per read, nearest-neighbour at
coarser levels so class edges stay crisp.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import zarr

from sessions import jobs
from sessions.errors import FibError
from sessions.geometry import unfmt
from sessions.volumes import catalog, omezarr
from sessions.workspace import Session

# axis name -> (normal axis, row axis, column axis) in Z,Y,X
AXES: dict[str, tuple[int, int, int]] = {"xy": (0, 1, 2), "xz": (1, 0, 2), "yz": (2, 0, 1)}
DEFAULT_CACHE_BYTES = 256 << 20
# How much larger than a screen pixel a level's pixel may be. √2 picks the level nearest in log
# scale: at the viewer's zooms it reads 1.4-6x fewer bytes than "never coarser than the screen"
# (1.0), for a slight softening of the half-block image (benchmarks/viewer_read.py).
MAX_UPSAMPLE = math.sqrt(2)
EPS = 1e-6


@dataclass(frozen=True)
class SliceData:
    raw: np.ndarray                 # uint8 (rows, cols)
    labels: np.ndarray | None       # uint8, 0 = unlabelled; None when the volume has no labels
    prediction: np.ndarray | None   # uint8 p×255; None when there is no prediction
    origin: tuple[int, int]         # (row, col) of [0, 0] in the level's plane


@dataclass(frozen=True)
class LabelBlock:
    """A labelled box (crop or held-out region) at level-0 `offset`."""

    path: str
    offset: tuple[int, int, int]
    shape: tuple[int, int, int]


def choose_level(scales: Sequence[Sequence[float]], axis: str, out_nm: float,
                 max_upsample: float = MAX_UPSAMPLE) -> int:
    """The coarsest level whose in-plane pixels are at most `max_upsample` × `out_nm`.

    An axis that is already coarser than that at level 0 (z of an
    anisotropic volume) cannot get finer, so it only must not get coarser.
    """
    _, ra, ca = AXES[axis]
    limit = out_nm * max_upsample
    best = 0
    for lvl, s in enumerate(scales):
        if all(s[a] <= max(limit, scales[0][a]) * (1 + EPS) for a in (ra, ca)):
            best = lvl
    return best


def latest_prediction(session: Session, volume: str) -> omezarr.Multiscale | None:
    """The newest COMPLETED predict job's output for `volume`, if any."""
    for job in session.db["jobs"].rows_where("kind = 'predict' and state = 'COMPLETED'", order_by="rowid desc"):
        d = jobs.job_dir(session, job)
        try:
            spec = json.loads((d / "spec.json").read_text())
        except (OSError, ValueError):
            continue
        res = jobs.result(session, job) or {}
        if spec.get("volume", {}).get("name") == volume and res.get("output"):
            try:
                return omezarr.open_multiscale(d / res["output"])
            except FibError:  # deleted or damaged output: fall back to an older prediction
                continue
    return None


class ChunkCache:
    """Decoded chunks, least recently used out first, bounded in bytes; thread-safe.

    Loads run outside the lock, so two threads missing the same chunk may
    both read it: rare (one frame worker at a time) and harmless.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.reads = 0      # chunks loaded from storage
        self._blocks: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, load: Callable[[], np.ndarray]) -> np.ndarray:
        with self._lock:
            block = self._blocks.get(key)
            if block is not None:
                self._blocks.move_to_end(key)
                return block
            self.reads += 1
        block = load()
        with self._lock:
            if key not in self._blocks and block.nbytes <= self.max_bytes:
                self._blocks[key] = block
                self.nbytes += block.nbytes
                while self.nbytes > self.max_bytes:
                    self.nbytes -= self._blocks.popitem(last=False)[1].nbytes
        return block


class SliceSource:
    """2D reads of one volume; thread-safe, holds no SQLite connection."""

    def __init__(self, raw: omezarr.Multiscale, labels: Sequence[LabelBlock] = (),
                 prediction: omezarr.Multiscale | None = None, name: str = "",
                 cache_bytes: int = DEFAULT_CACHE_BYTES, max_upsample: float = MAX_UPSAMPLE):
        self.name = name
        self.raw = raw
        self.prediction = prediction
        self.label_blocks = list(labels)
        self.max_upsample = max_upsample
        self.scales = [tuple(float(v) for v in s) for s in raw.scales]
        self._factors = [raw.factor(level, base=0) for level in range(len(raw.levels))]
        self.cache = ChunkCache(cache_bytes)

    @classmethod
    def open(cls, session: Session, volume: str) -> "SliceSource":
        """Collect everything from SQLite now, so reads can run in any thread."""
        rows = list(session.db["crops"].rows_where("volume = ?", [volume], order_by="id"))
        rows += list(session.db["holdout"].rows_where("volume = ? and labels_path is not null", [volume],
                                                      order_by="id"))
        blocks = [LabelBlock(str(session.path(r.get("labels_path") or r["path"])), unfmt(r["offset"]),
                             unfmt(r["shape"])) for r in rows]
        return cls(catalog.open_volume(session, volume), blocks, latest_prediction(session, volume), name=volume)

    @property
    def levels(self) -> int:
        return len(self.raw.levels)

    def shape(self, level: int) -> tuple[int, int, int]:
        return tuple(self.raw.levels[level].shape)

    def plane_shape(self, axis: str, level: int) -> tuple[int, int]:
        _, ra, ca = AXES[axis]
        s = self.shape(level)
        return s[ra], s[ca]

    def depth(self, axis: str) -> int:
        """Number of level-0 slices along the axis normal to the view."""
        return self.shape(0)[AXES[axis][0]]

    def pixel_nm(self, axis: str, level: int) -> tuple[float, float]:
        _, ra, ca = AXES[axis]
        return self.scales[level][ra], self.scales[level][ca]

    def step(self, axis: str, level: int) -> int:
        """Level-0 slices per slice of `level` along the view's normal: one visible step."""
        return self._factors[level][AXES[axis][0]]

    def choose_level(self, axis: str, out_nm: float) -> int:
        return choose_level(self.scales, axis, out_nm, self.max_upsample)

    def locate(self, axis: str, region0, out_shape: tuple[int, int]) -> tuple[int, tuple[int, int, int, int]]:
        """The level for showing level-0 `region0` on `out_shape` screen pixels, and the region there.

        `region0` = (r0, r1, c0, c1) may be fractional and reach past the
        plane (a view at its edge); the level's region is clipped to it.
        """
        _, ra, ca = AXES[axis]
        r0, r1, c0, c1 = region0
        s0 = self.scales[0]
        out_nm = min((r1 - r0) * s0[ra] / out_shape[0], (c1 - c0) * s0[ca] / out_shape[1])
        level = self.choose_level(axis, out_nm)
        rows, cols = self.plane_shape(axis, level)
        fr, fc = self._factors[level][ra], self._factors[level][ca]
        return level, (*_span(r0 / fr, r1 / fr, rows), *_span(c0 / fc, c1 / fc, cols))

    def view(self, axis: str, pos: int, region0, out_shape: tuple[int, int]) -> tuple[SliceData, int]:
        """What a screen of `out_shape` pixels needs to show `region0` of the slice at level-0 `pos`:
        the chosen level's pixels under it (the caller resamples them to the screen), and that level."""
        level, region = self.locate(axis, region0, out_shape)
        return self.read(axis, pos, level, region), level

    def read(self, axis: str, pos: int, level: int, region: tuple[int, int, int, int]) -> SliceData:
        """Pixels of rows r0:r1, cols c0:c1 of `level`'s slice through level-0 `pos`."""
        normal = AXES[axis][0]
        if not 0 <= pos < self.depth(axis):
            raise ValueError(f"slice {pos} outside 0..{self.depth(axis) - 1} along {axis}")
        rows, cols = self.plane_shape(axis, level)
        r0, r1, c0, c1 = region
        if not (0 <= r0 < r1 <= rows and 0 <= c0 < c1 <= cols):
            raise ValueError(f"region {region} outside the {rows}x{cols} slice of level {level}")
        idx = pos // self._factors[level][normal]
        pred = self.prediction
        has_pred = pred is not None and level < len(pred.levels) and pred.levels[level].shape == self.shape(level)
        return SliceData(
            raw=self._plane("raw", self.raw.levels[level], level, axis, idx, region),
            labels=self._labels(axis, level, pos, region) if self.label_blocks else None,
            prediction=self._plane("pred", pred.levels[level], level, axis, idx, region) if has_pred else None,
            origin=(r0, c0),
        )

    def _plane(self, kind: str, arr: zarr.Array, level: int, axis: str, idx: int, region) -> np.ndarray:
        """Cut the region of plane `idx` out of the chunks under it."""
        normal, ra, ca = AXES[axis]
        ch = arr.chunks
        r0, r1, c0, c1 = region
        out = np.empty((r1 - r0, c1 - c0), np.uint8)
        for i in range(r0 // ch[ra], (r1 - 1) // ch[ra] + 1):
            for j in range(c0 // ch[ca], (c1 - 1) // ch[ca] + 1):
                at = [0, 0, 0]
                at[normal], at[ra], at[ca] = idx // ch[normal], i, j
                block = self.cache.get((kind, level, *at), lambda: _read_chunk(arr, at))
                plane = np.take(block, idx % ch[normal], axis=normal)
                y0, x0 = i * ch[ra], j * ch[ca]
                ys, ye = max(r0, y0), min(r1, y0 + plane.shape[0])
                xs, xe = max(c0, x0), min(c1, x0 + plane.shape[1])
                out[ys - r0: ye - r0, xs - c0: xe - c0] = plane[ys - y0: ye - y0, xs - x0: xe - x0]
        return out

    def _labels(self, axis: str, level: int, pos: int, region) -> np.ndarray:
        """Level-`level` pixels sample the level-0 voxel at their centre; later blocks win."""
        normal, ra, ca = AXES[axis]
        f = self._factors[level]
        r0, r1, c0, c1 = region
        rr = np.arange(r0, r1) * f[ra] + f[ra] // 2
        cc = np.arange(c0, c1) * f[ca] + f[ca] // 2
        out = np.zeros((rr.size, cc.size), np.uint8)
        for block in self.label_blocks:
            o, s = block.offset, block.shape
            if not o[normal] <= pos < o[normal] + s[normal]:
                continue
            ri, ci = rr - o[ra], cc - o[ca]
            rm, cm = (ri >= 0) & (ri < s[ra]), (ci >= 0) & (ci < s[ca])
            if not rm.any() or not cm.any():
                continue
            plane = np.take(_block_array(block.path), pos - o[normal], axis=normal)
            vals = plane[np.ix_(ri[rm], ci[cm])]
            patch = out[np.ix_(rm, cm)]
            out[np.ix_(rm, cm)] = np.where(vals > 0, vals, patch)
        return out


def _span(lo: float, hi: float, n: int) -> tuple[int, int]:
    """Whole pixels [i0, i1) covering [lo, hi), clipped to 0..n."""
    return min(max(math.floor(lo + EPS), 0), n), min(max(math.ceil(hi - EPS), 0), n)


def _read_chunk(arr: zarr.Array, at: Sequence[int]) -> np.ndarray:
    """One chunk-aligned read: zarr fetches and decodes exactly this chunk (of its shard)."""
    sel = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(at, arr.chunks, arr.shape))
    return np.asarray(arr[sel], dtype=np.uint8)


@lru_cache(maxsize=16)
def _block_array(path: str) -> np.ndarray:
    """Label blocks are small and stored as one chunk: decode each once."""
    return np.asarray(zarr.open_array(path, mode="r")[:])
