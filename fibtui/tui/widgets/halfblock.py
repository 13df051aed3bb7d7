"""Images in the terminal: numpy resampling, overlays, and `▀` half-block Strips.

Each cell shows two vertically stacked pixels (foreground = upper, background
= lower), which doubles the vertical resolution and keeps pixels square in a
typical 1:2 terminal cell. Everything here is plain numpy plus Rich
segments, so a frame can be built in a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

HALF = "▀"
BACKGROUND = (18, 18, 26)  # outside the volume: darker than any tissue, but not black
LABEL_ALPHA = 0.45
LABEL_COLOURS = np.array([  # class 1.. ; no reds or magentas, which belong to the prediction
    (64, 160, 255), (255, 210, 0), (0, 220, 110), (255, 140, 0), (150, 110, 255), (0, 230, 230),
    (190, 255, 90), (255, 255, 255),
], np.float32)
PREDICTION_COLOUR = np.array((255, 0, 170), np.float32)
PREDICTION_ALPHA = 0.5  # tint at p = 1, proportional to p; the p ≥ 0.5 outline is drawn solid


@dataclass(frozen=True)
class Plan:
    """How output pixels along one axis map onto source indices."""

    lo: np.ndarray      # first source index averaged into each output pixel
    hi: np.ndarray      # one past the last
    near: np.ndarray    # nearest source index (for labels)
    valid: np.ndarray   # whether the output pixel lies inside the source


def plan(n_out: int, start: float, step: float, n_src: int) -> Plan:
    """Output pixel i covers source coordinates [start + i·step, start + (i+1)·step)."""
    edges = start + step * np.arange(n_out + 1)
    lo = np.floor(edges[:-1] + 1e-6).astype(np.int64)
    hi = np.maximum(lo + 1, np.ceil(edges[1:] - 1e-6).astype(np.int64))
    centre = np.floor((edges[:-1] + edges[1:]) / 2).astype(np.int64)
    valid = (centre >= 0) & (centre < n_src)
    top = max(n_src - 1, 0)
    return Plan(np.clip(lo, 0, top), np.clip(hi, 1, max(n_src, 1)), np.clip(centre, 0, top), valid)


def resample_mean(a: np.ndarray, rows: Plan, cols: Plan) -> np.ndarray:
    """Box-filter resize: averages when shrinking, repeats (nearest) when enlarging."""
    out = a.astype(np.float64)
    for axis, p in ((0, rows), (1, cols)):
        cs = np.cumsum(out, axis=axis)
        cs = np.concatenate([np.zeros_like(np.take(cs, [0], axis=axis)), cs], axis=axis)
        n = (p.hi - p.lo).reshape((-1, 1) if axis == 0 else (1, -1))
        out = (np.take(cs, p.hi, axis=axis) - np.take(cs, p.lo, axis=axis)) / n
    return out


def resample_nearest(a: np.ndarray, rows: Plan, cols: Plan) -> np.ndarray:
    return a[np.ix_(rows.near, cols.near)]


def composite(raw: np.ndarray, labels: np.ndarray | None, prediction: np.ndarray | None,
              valid: np.ndarray) -> np.ndarray:
    """RGB uint8 image: grey raw, labels blended in class colours, prediction as a magenta
    tint with the outline of p ≥ 0.5 drawn solid, so objects read even where the tint is faint.

    `raw` and `prediction` are float 0..255 (already resampled), `labels`
    integer classes, `valid` marks pixels inside the volume.
    """
    rgb = np.repeat(raw[..., None], 3, axis=2).astype(np.float32)
    if labels is not None:
        cls = labels.astype(np.int64)
        on = cls > 0
        colour = LABEL_COLOURS[(cls[on] - 1) % len(LABEL_COLOURS)]
        rgb[on] = (1 - LABEL_ALPHA) * rgb[on] + LABEL_ALPHA * colour
    if prediction is not None:
        a = (PREDICTION_ALPHA * prediction / 255.0)[..., None].astype(np.float32)
        rgb = (1 - a) * rgb + a * PREDICTION_COLOUR
        rgb[outline(prediction >= 127.5)] = PREDICTION_COLOUR
    rgb[~valid] = BACKGROUND
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of `mask` with a 4-neighbour outside it (the image border counts as inside)."""
    p = np.pad(mask, 1, mode="edge")
    inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask & ~inner


@lru_cache(maxsize=1 << 16)
def _color(rgb: int) -> Color:
    return Color.from_rgb(rgb >> 16, (rgb >> 8) & 255, rgb & 255)


@lru_cache(maxsize=1 << 16)
def _style(key: int) -> Style:
    return Style.from_color(_color(key >> 24), _color(key & 0xFFFFFF))


def to_strips(image: np.ndarray) -> list[Strip]:
    """One Strip per pair of pixel rows; runs of identical cells share one Segment."""
    rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
    if rgb.shape[0] % 2:
        rgb = np.concatenate([rgb, np.full((1, *rgb.shape[1:]), BACKGROUND, rgb.dtype)])
    c = rgb.astype(np.int64)
    packed = (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]
    keys = (packed[0::2] << 24) | packed[1::2]
    width = keys.shape[1]
    strips = []
    for row in keys:
        starts = np.flatnonzero(np.diff(row, prepend=-1))
        values = row[starts].tolist()
        lengths = np.diff(starts, append=width).tolist()
        strips.append(Strip([Segment(HALF * n, _style(k)) for k, n in zip(values, lengths)], width))
    return strips
