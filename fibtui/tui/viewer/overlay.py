"""What the curator draws over a frame: painted voxels, crop and held-out boxes, the brush, the object.

All of it is placed with the frame's `ScreenMap`, so a painted voxel shows
exactly on the pixels that show that voxel of the image. Plain numpy on an
RGB array; runs on the UI thread in a few milliseconds, so a stroke is on
screen without waiting for a new frame to be read.
"""

from __future__ import annotations

import numpy as np

from fibtui.tui.viewer.frame import ScreenMap
from fibtui.tui.widgets import halfblock
from sessions.geometry import Box
from sessions.volumes.slices import AXES

PAINT_ALPHA = 0.8
BOX_COLOUR = (255, 255, 255)
HELDOUT_COLOUR = (255, 70, 70)
CROP_COLOUR = (110, 190, 255)
CURSOR_COLOUR = (255, 255, 0)
PEN_DOWN_COLOUR = (255, 150, 0)
OBJECT_COLOUR = (0, 255, 255)


def plane_lookup(smap: ScreenMap, r: np.ndarray, c: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The value each pixel shows from sparse in-plane voxels (r, c) → values; 0 where none."""
    near_r, near_c = smap.rows.near, smap.cols.near
    out = np.zeros((len(near_r), len(near_c)), np.uint8)
    if len(r) == 0:
        return out
    n = smap.cols.n_vox + 1
    keys = r.astype(np.int64) * n + c
    order = np.argsort(keys)
    keys, values = keys[order], values[order]
    px = near_r[:, None] * n + near_c[None, :]
    i = np.clip(np.searchsorted(keys, px), 0, len(keys) - 1)
    hit = (keys[i] == px) & (near_r[:, None] >= 0) & (near_c[None, :] >= 0)
    out[hit] = values[i[hit]]
    return out


def in_plane(smap: ScreenMap, zyx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, index) of the voxels of `zyx` (N×3) on the map's slice."""
    normal, ra, ca = AXES[smap.axis]
    on = np.flatnonzero(zyx[:, normal] == smap.pos) if len(zyx) else np.zeros(0, np.int64)
    return zyx[on, ra], zyx[on, ca], on


def draw_painted(rgb: np.ndarray, smap: ScreenMap, zyx: np.ndarray, classes: np.ndarray) -> None:
    r, c, on = in_plane(smap, zyx)
    cls = plane_lookup(smap, r, c, classes[on])
    hit = cls > 0
    if hit.any():
        colour = halfblock.LABEL_COLOURS[(cls[hit].astype(np.int64) - 1) % len(halfblock.LABEL_COLOURS)]
        rgb[hit] = np.rint((1 - PAINT_ALPHA) * rgb[hit] + PAINT_ALPHA * colour).astype(np.uint8)


def draw_mask_outline(rgb: np.ndarray, smap: ScreenMap, zyx: np.ndarray, colour) -> None:
    r, c, _ = in_plane(smap, zyx)
    mask = plane_lookup(smap, r, c, np.ones(len(r), np.uint8)) > 0
    rgb[halfblock.outline(mask) if mask.sum() > 4 else mask] = colour


def rect_mask(smap: ScreenMap, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    rows, cols = smap.rows.pixels_of(r0, r1), smap.cols.pixels_of(c0, c1)
    return rows[:, None] & cols[None, :]


def draw_rect(rgb: np.ndarray, smap: ScreenMap, r0: int, r1: int, c0: int, c1: int, colour,
              dashed: bool = False) -> None:
    """Outline of the pixels showing voxels [r0, r1) × [c0, c1); nothing when it is off screen."""
    mask = rect_mask(smap, r0, r1, c0, c1)
    if not mask.any():
        return
    edge = halfblock.outline(mask)
    if dashed:
        yy, xx = np.indices(edge.shape)
        edge &= ((yy + xx) // 2) % 2 == 0
    rgb[edge] = colour


def draw_box(rgb: np.ndarray, smap: ScreenMap, box: Box, colour, dashed: bool = False) -> bool:
    """A 3D box where it cuts the map's slice; False when the slice misses it."""
    normal, ra, ca = AXES[smap.axis]
    if not box.offset[normal] <= smap.pos < box.stop[normal]:
        return False
    draw_rect(rgb, smap, box.offset[ra], box.stop[ra], box.offset[ca], box.stop[ca], colour, dashed)
    return True


def draw_preview(rgb: np.ndarray, smap: ScreenMap, box: Box, prob: np.ndarray) -> None:
    """A preview (uint8 p×255 over `box`) where it cuts the slice: the prediction's tint and outline."""
    normal, ra, ca = AXES[smap.axis]
    if not box.offset[normal] <= smap.pos < box.stop[normal]:
        return
    plane = np.take(prob, smap.pos - box.offset[normal], axis=normal)
    rr, cc = smap.rows.near - box.offset[ra], smap.cols.near - box.offset[ca]
    rm = (rr >= 0) & (rr < plane.shape[0])
    cm = (cc >= 0) & (cc < plane.shape[1])
    if not rm.any() or not cm.any():
        return
    p = np.zeros((len(rr), len(cc)), np.float32)
    p[np.ix_(rm, cm)] = plane[np.ix_(rr[rm], cc[cm])]
    inside = rm[:, None] & cm[None, :]
    a = (halfblock.PREDICTION_ALPHA * p / 255.0)[..., None]
    blended = (1 - a) * rgb + a * halfblock.PREDICTION_COLOUR
    rgb[inside] = np.rint(blended[inside]).astype(np.uint8)
    rgb[halfblock.outline(p >= 127.5) & inside] = halfblock.PREDICTION_COLOUR.astype(np.uint8)
