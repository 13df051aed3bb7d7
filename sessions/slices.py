"""The viewer's read path: 2D slices of a session volume, with labels and prediction.

Reads touch only the requested region of one pyramid level, in fixed 2D
tiles kept in a small LRU cache, so panning and stepping back and forth
re-read nothing and a zoomed-in view of a TB volume reads a few chunks.
Label crops and held-out labels are pasted into the same tiles,
nearest-neighbour at coarser levels so class edges stay crisp.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import zarr

from sessions import jobs, omezarr, volumes
from sessions.errors import FibError
from sessions.geometry import unfmt
from sessions.workspace import Session

# axis name -> (normal axis, row axis, column axis) in Z,Y,X
AXES: dict[str, tuple[int, int, int]] = {"xy": (0, 1, 2), "xz": (1, 0, 2), "yz": (2, 0, 1)}
TILE = 128


@dataclass(frozen=True)
class SliceData:
    raw: np.ndarray                 # uint8 (rows, cols)
    labels: np.ndarray | None       # uint8, 0 = unlabelled; None when the volume has no labels
    prediction: np.ndarray | None   # uint8 p×255; None when there is no prediction


@dataclass(frozen=True)
class LabelBlock:
    """A labelled box (crop or held-out region) at level-0 `offset`."""

    path: str
    offset: tuple[int, int, int]
    shape: tuple[int, int, int]


def choose_level(scales: Sequence[Sequence[float]], axis: str, out_nm: float) -> int:
    """The coarsest level whose in-plane pixels are no coarser than `out_nm`.

    An axis that is already coarser than `out_nm` at level 0 (z of an
    anisotropic volume) cannot get finer, so it only must not get coarser.
    """
    _, ra, ca = AXES[axis]
    best = 0
    for lvl, s in enumerate(scales):
        if all(s[a] <= max(out_nm, scales[0][a]) * (1 + 1e-6) for a in (ra, ca)):
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


class SliceSource:
    """2D reads of one volume; thread-safe, holds no SQLite connection."""

    def __init__(self, raw: omezarr.Multiscale, labels: Sequence[LabelBlock] = (),
                 prediction: omezarr.Multiscale | None = None, name: str = "", cache_tiles: int = 384):
        self.name = name
        self.raw = raw
        self.prediction = prediction
        self.label_blocks = list(labels)
        self.scales = [tuple(float(v) for v in s) for s in raw.scales]
        self._factors = [tuple(max(1, round(s / s0)) for s, s0 in zip(sc, self.scales[0])) for sc in self.scales]
        self._tiles: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._max_tiles = cache_tiles
        self._lock = threading.Lock()

    @classmethod
    def open(cls, session: Session, volume: str) -> "SliceSource":
        """Collect everything from SQLite now, so reads can run in any thread."""
        rows = list(session.db["crops"].rows_where("volume = ?", [volume], order_by="id"))
        rows += list(session.db["holdout"].rows_where("volume = ? and labels_path is not null", [volume],
                                                      order_by="id"))
        blocks = [LabelBlock(str(session.path(r.get("labels_path") or r["path"])), unfmt(r["offset"]),
                             unfmt(r["shape"])) for r in rows]
        return cls(volumes.open_volume(session, volume), blocks, latest_prediction(session, volume), name=volume)

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
        return choose_level(self.scales, axis, out_nm)

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
            raw=self._region("raw", axis, level, idx, region),
            labels=self._region("labels", axis, level, pos, region) if self.label_blocks else None,
            prediction=self._region("pred", axis, level, idx, region) if has_pred else None,
        )

    def _region(self, kind: str, axis: str, level: int, idx: int, region) -> np.ndarray:
        r0, r1, c0, c1 = region
        out = np.empty((r1 - r0, c1 - c0), np.uint8)
        for tr in range(r0 // TILE, (r1 - 1) // TILE + 1):
            for tc in range(c0 // TILE, (c1 - 1) // TILE + 1):
                tile = self._tile(kind, axis, level, idx, tr, tc)
                y0, x0 = tr * TILE, tc * TILE
                ys, ye = max(r0, y0), min(r1, y0 + tile.shape[0])
                xs, xe = max(c0, x0), min(c1, x0 + tile.shape[1])
                out[ys - r0: ye - r0, xs - c0: xe - c0] = tile[ys - y0: ye - y0, xs - x0: xe - x0]
        return out

    def _tile(self, kind: str, axis: str, level: int, idx: int, tr: int, tc: int) -> np.ndarray:
        key = (kind, axis, level, idx, tr, tc)
        with self._lock:
            if key in self._tiles:
                self._tiles.move_to_end(key)
                return self._tiles[key]
        rows, cols = self.plane_shape(axis, level)
        rs = slice(tr * TILE, min((tr + 1) * TILE, rows))
        cs = slice(tc * TILE, min((tc + 1) * TILE, cols))
        if kind == "labels":
            tile = self._label_tile(axis, level, idx, rs, cs)
        else:
            arr = (self.raw if kind == "raw" else self.prediction).levels[level]
            sel: list = [None, None, None]
            normal, ra, ca = AXES[axis]
            sel[normal], sel[ra], sel[ca] = idx, rs, cs
            tile = np.asarray(arr[tuple(sel)], dtype=np.uint8)
        with self._lock:
            self._tiles[key] = tile
            while len(self._tiles) > self._max_tiles:
                self._tiles.popitem(last=False)
        return tile

    def _label_tile(self, axis: str, level: int, pos: int, rs: slice, cs: slice) -> np.ndarray:
        """Level-`level` pixels sample the level-0 voxel at their centre; later blocks win."""
        normal, ra, ca = AXES[axis]
        f = self._factors[level]
        rr = np.arange(rs.start, rs.stop) * f[ra] + f[ra] // 2
        cc = np.arange(cs.start, cs.stop) * f[ca] + f[ca] // 2
        tile = np.zeros((rr.size, cc.size), np.uint8)
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
            patch = tile[np.ix_(rm, cm)]
            tile[np.ix_(rm, cm)] = np.where(vals > 0, vals, patch)
        return tile


@lru_cache(maxsize=16)
def _block_array(path: str) -> np.ndarray:
    """Label blocks are small and stored as one chunk: decode each once."""
    return np.asarray(zarr.open_array(path, mode="r")[:])

