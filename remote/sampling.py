"""Training patches from sparse label crops.

Each crop's raw context (the crop grown by half a patch on every side, mirrored
at the volume border) is read once; patches are then centred on labelled
voxels, half of the time on the target class, so rare classes (pores) are
seen. Unlabelled voxels (0) carry mask 0 and never enter the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zarr

from sessions.geometry import Box


def read_padded(arr, box: Box) -> np.ndarray:
    """`arr[box]` with the part outside the array mirrored in (no zeros at borders)."""
    shape = arr.shape
    lo = [max(0, o) for o in box.offset]
    hi = [min(s, e) for s, e in zip(shape, box.stop)]
    if any(h <= l for l, h in zip(lo, hi)):
        raise ValueError(f"box {box} does not intersect the array {shape}")
    data = np.asarray(arr[tuple(slice(l, h) for l, h in zip(lo, hi))])
    pad = [(l - o, e - h) for o, e, l, h in zip(box.offset, box.stop, lo, hi)]
    if any(p != (0, 0) for p in pad):
        data = np.pad(data, pad, mode="symmetric")
    return data


@dataclass
class Crop:
    box: Box
    labels: np.ndarray          # uint8, crop shape, 0 = unlabelled
    context: np.ndarray          # raw uint8, crop box grown by `margin`
    margin: tuple[int, int, int]
    labelled: np.ndarray         # flat indices of labelled voxels
    positive: np.ndarray         # flat indices of target voxels


class PatchSampler:
    def __init__(self, raw: zarr.Array, crops: list[dict], target: int, patch, rng: np.random.Generator,
                 flip_axes=(0, 1, 2), transpose_yx: bool = True):
        self.patch = tuple(int(p) for p in patch)
        self.target = int(target)
        self.rng = rng
        self.flip_axes, self.transpose_yx = flip_axes, transpose_yx
        margin = tuple(p // 2 + 1 for p in self.patch)
        self.crops: list[Crop] = []
        for c in crops:
            labels = np.asarray(zarr.open_array(c["path"], mode="r")[:])
            box = Box(tuple(c["offset"]), labels.shape)
            grown = Box(tuple(o - m for o, m in zip(box.offset, margin)),
                        tuple(s + 2 * m for s, m in zip(box.shape, margin)))
            flat = labels.ravel()
            labelled = np.flatnonzero(flat)
            if labelled.size == 0:
                continue
            self.crops.append(Crop(box, labels, read_padded(raw, grown), margin, labelled,
                                   np.flatnonzero(flat == self.target)))
        if not self.crops:
            raise ValueError("no labelled voxels in any crop")
        w = np.array([c.labelled.size for c in self.crops], dtype=np.float64)
        self.weights = w / w.sum()

    def sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(raw uint8, target float32, mask float32), each of the patch shape."""
        rng = self.rng
        crop = self.crops[rng.choice(len(self.crops), p=self.weights)]
        pool = crop.positive if (crop.positive.size and rng.random() < 0.5) else crop.labelled
        centre = np.unravel_index(pool[rng.integers(pool.size)], crop.labels.shape)
        # patch start, in crop coordinates, with the centre voxel jittered inside the patch
        start = [int(c) - int(rng.integers(p // 4, p - p // 4)) if p > 1 else int(c)
                 for c, p in zip(centre, self.patch)]
        # raw from the context (context coordinate = crop coordinate + margin), clamped to it
        cs = [min(max(s + m, 0), cx - p) for s, m, cx, p in zip(start, crop.margin, crop.context.shape, self.patch)]
        start = [c - m for c, m in zip(cs, crop.margin)]
        raw = crop.context[tuple(slice(c, c + p) for c, p in zip(cs, self.patch))]
        lab = np.zeros(self.patch, np.uint8)
        src = tuple(slice(max(s, 0), min(s + p, n)) for s, p, n in zip(start, self.patch, crop.labels.shape))
        dst = tuple(slice(a.start - s, a.stop - s) for a, s in zip(src, start))
        lab[dst] = crop.labels[src]
        raw, lab = self._augment(raw, lab)
        mask = (lab > 0).astype(np.float32)
        tgt = (lab == self.target).astype(np.float32)
        return np.ascontiguousarray(raw), tgt, mask

    def _augment(self, raw, lab):
        rng = self.rng
        for ax in self.flip_axes:
            if rng.random() < 0.5:
                raw, lab = np.flip(raw, ax), np.flip(lab, ax)
        if self.transpose_yx and raw.shape[1] == raw.shape[2] and rng.random() < 0.5:
            raw, lab = raw.transpose(0, 2, 1), lab.transpose(0, 2, 1)
        return raw, lab
