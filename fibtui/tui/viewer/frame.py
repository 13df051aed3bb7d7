"""What one frame of the slice viewer shows: the view, its pixels, and which level-0 voxels each pixel is.

The view is a focus point (level-0 voxels) plus an output pixel size (nm).
`ScreenMap` is the exact pixel ↔ voxel correspondence of a view, shared by
the image, the overlays and the brush: screen pixel i along an axis covers
level-0 coordinates [start + i·step, start + (i+1)·step) and shows the voxel
at its centre (as labels are sampled); it *contains* the voxels whose
centres fall inside it (a magnified pixel contains none: it stands for the
voxel at its centre).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rich.style import Style

from fibtui.tui.widgets import halfblock
from sessions.volumes.slices import AXES, SliceSource

OVERLAYS = ("labels+prediction", "labels", "prediction", "none")
AXIS_ORDER = ("xy", "xz", "yz")
NORMAL_NAME = {"xy": "z", "xz": "y", "yz": "x"}
DEBOUNCE_S = 0.03
MAX_MAGNIFICATION = 8     # screen pixels per level-0 voxel, at most
MAX_SHRINK = 4            # how far past "whole slice fits" one can zoom out
PAN_FRACTION = 1 / 8      # of the visible extent, per arrow key
BACKGROUND_STYLE = Style(bgcolor="rgb({},{},{})".format(*halfblock.BACKGROUND))


@dataclass(frozen=True)
class View:
    axis: str
    focus: tuple[float, float, float]   # z, y, x in level-0 voxels: the slice and the centre of the view
    out_nm: float                       # size of one screen pixel (half a cell) in nm
    overlay: int = 0

    def pos(self, source: SliceSource) -> int:
        normal = AXES[self.axis][0]
        return int(np.clip(self.focus[normal], 0, source.shape(0)[normal] - 1))

    @property
    def overlay_name(self) -> str:
        return OVERLAYS[self.overlay]


def fit_nm(source: SliceSource, axis: str, width: int, height: int) -> float:
    """Pixel size at which the whole slice fits a widget of width × height cells."""
    _, ra, ca = AXES[axis]
    shape, s0 = source.shape(0), source.scales[0]
    return max(shape[ra] * s0[ra] / max(2 * height, 1), shape[ca] * s0[ca] / max(width, 1))


def initial_view(source: SliceSource, width: int, height: int) -> View:
    focus = tuple(s / 2 for s in source.shape(0))
    return View("xy", focus, fit_nm(source, "xy", width, height))


def view_at(source: SliceSource, at: dict, width: int, height: int) -> View:
    """The view a message links to: its axis, slice and centre (level-0 z, y, x), and zoom
    (screen pixels per voxel, as the status line shows it); the whole slice when it has no zoom."""
    axis = at.get("axis") or "xy"
    focus = tuple(float(np.clip(at[k], 0, n - 1)) for k, n in zip("zyx", source.shape(0)))
    finest = min(source.scales[0][a] for a in AXES[axis][1:])
    zoom = at.get("zoom")
    out_nm = finest / min(zoom, MAX_MAGNIFICATION) if zoom else fit_nm(source, axis, width, height)
    return View(axis, focus, out_nm)


def screen_span(centre_nm: float, n: int, out_nm: float, px_nm: float) -> tuple[float, float]:
    """[start, stop) of `n` screen pixels of `out_nm` centred on `centre_nm`, in pixels of `px_nm`."""
    start = (centre_nm - n * out_nm / 2) / px_nm
    return start, start + n * out_nm / px_nm


def build_frame(source: SliceSource, view: View, width: int, height: int) -> np.ndarray:
    """RGB pixels (2·height × width) of the view: read what the screen covers at the level
    the source picks, resample to the screen, overlay."""
    _, ra, ca = AXES[view.axis]
    out, s0 = (2 * height, width), source.scales[0]
    centre = [view.focus[a] * s0[a] for a in (ra, ca)]
    region0 = tuple(v for c, n, a in zip(centre, out, (ra, ca)) for v in screen_span(c, n, view.out_nm, s0[a]))
    data, level = source.view(view.axis, view.pos(source), region0, out)
    # the same screen in pixels of the level read, counted from the data's first pixel
    px = source.pixel_nm(view.axis, level)
    rp, cp = (halfblock.plan(n, screen_span(c, n, view.out_nm, p)[0] - o, view.out_nm / p, m)
              for c, n, p, o, m in zip(centre, out, px, data.origin, data.raw.shape))
    overlay = view.overlay_name
    labels = data.labels if "labels" in overlay else None
    pred = data.prediction if "prediction" in overlay else None
    return halfblock.composite(
        halfblock.resample_mean(data.raw, rp, cp),
        halfblock.resample_nearest(labels, rp, cp) if labels is not None else None,
        halfblock.resample_mean(pred, rp, cp) if pred is not None else None,
        rp.valid[:, None] & cp.valid[None, :],
    )


@dataclass(frozen=True)
class AxisMap:
    start: float     # level-0 coordinate of the first pixel's leading edge
    step: float      # level-0 voxels per screen pixel
    n_px: int
    n_vox: int       # the volume's extent along this axis

    @property
    def near(self) -> np.ndarray:
        """The voxel each pixel shows (may lie outside 0..n_vox-1)."""
        return np.floor(self.start + (np.arange(self.n_px) + 0.5) * self.step).astype(np.int64)

    def pixel_of(self, v: float) -> int:
        return int(math.floor((v + 0.5 - self.start) / self.step))

    def step_from(self, v: int, d: int) -> int:
        """The voxel `d` screen pixels away from `v`: the next pixel's centre voxel, or the next voxel when magnified."""
        if d == 0:
            return v
        if self.step <= 1:
            return v + d
        return int(math.floor(self.start + (self.pixel_of(v) + d + 0.5) * self.step))

    def voxels_of(self, p0: int, p1: int) -> tuple[int, int]:
        """Level-0 voxels [v0, v1) of pixels [p0, p1): centres inside, or the centre voxel when magnified."""
        if self.step <= 1:
            near = np.floor(self.start + (np.arange(p0, max(p1, p0 + 1)) + 0.5) * self.step).astype(np.int64)
            v0, v1 = int(near.min()), int(near.max()) + 1
        else:
            v0 = math.ceil(self.start + p0 * self.step - 0.5)
            v1 = math.ceil(self.start + p1 * self.step - 0.5)
        return max(v0, 0), min(max(v1, 0), self.n_vox)

    def pixels_of(self, v0: int, v1: int) -> np.ndarray:
        """Mask of the pixels showing a voxel in [v0, v1)."""
        near = self.near
        return (near >= v0) & (near < v1)


@dataclass(frozen=True)
class ScreenMap:
    """Pixel ↔ voxel map of one view on a widget of width × height cells (2·height pixel rows)."""

    axis: str
    pos: int                  # level-0 slice
    rows: AxisMap
    cols: AxisMap

    @classmethod
    def of(cls, source: SliceSource, view: View, width: int, height: int) -> "ScreenMap":
        _, ra, ca = AXES[view.axis]
        s0, shape = source.scales[0], source.shape(0)
        maps = []
        for a, n in ((ra, 2 * height), (ca, width)):
            start, _ = screen_span(view.focus[a] * s0[a], n, view.out_nm, s0[a])
            maps.append(AxisMap(start, view.out_nm / s0[a], n, shape[a]))
        return cls(view.axis, view.pos(source), *maps)

    def voxel_zyx(self, normal_v: int, r: np.ndarray, c: np.ndarray) -> np.ndarray:
        """(N×3) z, y, x of in-plane (row, col) voxels on slice `normal_v`."""
        normal, ra, ca = AXES[self.axis]
        out = np.empty((len(r), 3), np.int64)
        out[:, normal], out[:, ra], out[:, ca] = normal_v, r, c
        return out
