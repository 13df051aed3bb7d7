"""Training patches from sparse label crops, augmented; and the part of the crops held apart to validate.

Each crop's raw context (the crop grown by half a patch on every side, mirrored
at the volume border) is read once; patches are then centred on labelled
voxels, half of the time on the target class, so rare classes (pores) are
seen. Unlabelled voxels (0) carry mask 0 and never enter the loss.

Validation: a slab of each crop (a fraction of its longest axis, at one end
drawn by the seed) is held apart: its labels are removed from the training
copy (its raw stays visible as unlabelled context) and the training job
scores the model on it to choose the checkpoint. The frozen held-out regions
are never touched. A crop too thin to split, or whose slab holds no label,
stays whole in training.

Augmentation (strengths in the spec's "augment", kinds in
sessions/train_options.py): mirrors on every axis; 90° rotations in the
plane of equal voxel sizes, out of plane only on isotropic voxels; zoom and
elastic displacement in the same planes (one interpolation of raw, nearest
for labels); then contrast, brightness, gamma, noise, blur and a shading ramp
on the normalised patch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zarr
from scipy import ndimage

from sessions.geometry import Box
from sessions.train_options import AUGMENT_PRESETS


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


def to_float(raw_u8: np.ndarray) -> np.ndarray:
    """uint8 → float32 as `remote.model.normalize` maps it (x / 127.5 − 1)."""
    return raw_u8.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


@dataclass
class Crop:
    box: Box
    labels: np.ndarray          # uint8, crop shape, 0 = unlabelled
    context: np.ndarray          # raw uint8, crop box grown by `margin`
    margin: tuple[int, int, int]
    labelled: np.ndarray         # flat indices of labelled voxels
    positive: np.ndarray         # flat indices of target voxels


@dataclass
class Validation:
    """A held-apart slab: where it is (volume coordinates) and its labels."""
    box: Box
    labels: np.ndarray


def split_crop(labels: np.ndarray, fraction: float, rng: np.random.Generator):
    """(training labels, slab selector or None): the slab of `fraction` of the longest axis at one end."""
    if fraction <= 0:
        return labels, None
    ax = int(np.argmax(labels.shape))
    n = int(round(labels.shape[ax] * fraction))
    if n < 1 or n >= labels.shape[ax]:
        return labels, None
    at_end = bool(rng.random() < 0.5)
    sel = [slice(None)] * 3
    sel[ax] = slice(labels.shape[ax] - n, None) if at_end else slice(0, n)
    sel = tuple(sel)
    if not labels[sel].any():
        return labels, None
    train = labels.copy()
    train[sel] = 0
    if not train.any():
        return labels, None
    return train, sel


class PatchSampler:
    def __init__(self, raw, crops: list[dict], target: int, patch, rng: np.random.Generator, *,
                 voxel_size=(1.0, 1.0, 1.0), augment: dict | None = None, validation: float = 0.0):
        self.patch = tuple(int(p) for p in patch)
        self.target = int(target)
        self.rng = rng
        # no augment: a spec written before the presets, whose jobs flipped (whatever today's default is)
        self.aug = {**AUGMENT_PRESETS["none"], **(augment if augment is not None else AUGMENT_PRESETS["flips"])}
        vs = [float(v) for v in voxel_size]
        # the axes a rotation / zoom / displacement may mix: those of equal voxel size (and equal patch extent)
        self.plane = [a for a in range(3) if self.patch[a] > 1 and
                      sum(abs(vs[a] - vs[b]) < 1e-6 * max(vs) and self.patch[b] > 1 for b in range(3)) > 1]
        margin = tuple(p // 2 + 1 for p in self.patch)
        self.crops: list[Crop] = []
        self.validation: list[Validation] = []
        for c in crops:
            labels = np.asarray(zarr.open_array(c["path"], mode="r")[:])
            box = Box(tuple(c["offset"]), labels.shape)
            train_labels, held = split_crop(labels, validation, rng)
            if held is not None:
                off = tuple(o + (s.start or 0) for o, s in zip(box.offset, held))
                self.validation.append(Validation(Box(off, labels[held].shape), labels[held]))
            labels = train_labels
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
        """(raw normalised float32, target float32, mask float32), each of the patch shape."""
        rng = self.rng
        crop = self.crops[rng.choice(len(self.crops), p=self.weights)]
        pool = crop.positive if (crop.positive.size and rng.random() < 0.5) else crop.labelled
        centre = np.unravel_index(pool[rng.integers(pool.size)], crop.labels.shape)
        # patch start, in crop coordinates, with the centre voxel jittered inside the patch
        start = [int(c) - int(rng.integers(p // 4, p - p // 4)) if p > 1 else int(c)
                 for c, p in zip(centre, self.patch)]
        warp = self._warp()
        if warp is None:
            raw, lab = self._cut(crop, start)
        else:
            raw, lab = self._resample(crop, start, warp)
        raw, lab = self._orient(raw, lab)
        raw = self._intensity(to_float(raw))
        mask = (lab > 0).astype(np.float32)
        tgt = (lab == self.target).astype(np.float32)
        return np.ascontiguousarray(raw), tgt, mask

    def _cut(self, crop: Crop, start):
        # raw from the context (context coordinate = crop coordinate + margin), clamped to it
        cs = [min(max(s + m, 0), cx - p) for s, m, cx, p in zip(start, crop.margin, crop.context.shape, self.patch)]
        start = [c - m for c, m in zip(cs, crop.margin)]
        raw = crop.context[tuple(slice(c, c + p) for c, p in zip(cs, self.patch))]
        lab = np.zeros(self.patch, np.uint8)
        src = tuple(slice(max(s, 0), min(s + p, n)) for s, p, n in zip(start, self.patch, crop.labels.shape))
        dst = tuple(slice(a.start - s, a.stop - s) for a, s in zip(src, start))
        lab[dst] = crop.labels[src]
        return raw, lab

    def _warp(self):
        """(zoom per axis, displacement field or None), or None for no geometric warp this time."""
        rng, a = self.rng, self.aug
        if not self.plane or (a["scale"] <= 0 and a["elastic"] <= 0) or rng.random() >= 0.5:
            return None
        zoom = np.ones(3)
        if a["scale"] > 0:
            zoom[self.plane] = rng.uniform(1 - a["scale"], 1 + a["scale"])
        disp = None
        if a["elastic"] > 0:
            coarse = [max(2, p // 32) if ax in self.plane else 1 for ax, p in enumerate(self.patch)]
            disp = []
            for ax in range(3):
                if ax not in self.plane:
                    disp.append(None)
                    continue
                field = rng.normal(0, a["elastic"], coarse)
                disp.append(ndimage.zoom(field, [p / c for p, c in zip(self.patch, coarse)], order=3,
                                         mode="nearest")[tuple(slice(0, p) for p in self.patch)])
        return zoom, disp

    def _resample(self, crop: Crop, start, warp):
        """The patch through a zoom about its centre and a smooth displacement: linear raw, nearest labels."""
        zoom, disp = warp
        grid = np.indices(self.patch, dtype=np.float32)
        coords = []
        for ax, p in enumerate(self.patch):
            c = start[ax] + (p - 1) / 2
            g = c + (grid[ax] - (p - 1) / 2) * zoom[ax]
            if disp is not None and disp[ax] is not None:
                g = g + disp[ax]
            coords.append(g)
        ctx = np.stack([c + m for c, m in zip(coords, crop.margin)])
        raw = ndimage.map_coordinates(crop.context, ctx, order=1, mode="mirror")
        lab = ndimage.map_coordinates(crop.labels, np.stack(coords), order=0, mode="constant", cval=0)
        return raw, lab

    def _orient(self, raw, lab):
        rng, a = self.rng, self.aug
        for ax in range(3):
            if a["flip"] > 0 and rng.random() < a["flip"]:
                raw, lab = np.flip(raw, ax), np.flip(lab, ax)
        if a["rot90"] > 0 and len(self.plane) >= 2 and rng.random() < a["rot90"]:
            pairs = [(i, j) for i in self.plane for j in self.plane if i < j and self.patch[i] == self.patch[j]]
            if pairs:
                axes = pairs[rng.integers(len(pairs))]
                k = int(rng.integers(1, 4))
                raw, lab = np.rot90(raw, k, axes), np.rot90(lab, k, axes)
        return raw, lab

    def _intensity(self, x: np.ndarray) -> np.ndarray:
        rng, a = self.rng, self.aug
        if a["contrast"] > 0 and rng.random() < 0.5:
            m = x.mean()
            x = (x - m) * np.float32(rng.uniform(1 - a["contrast"], 1 + a["contrast"])) + m
        if a["brightness"] > 0 and rng.random() < 0.5:
            x = x + np.float32(2 * rng.uniform(-a["brightness"], a["brightness"]))
        if a["gamma"] > 0 and rng.random() < 0.5:
            u = np.clip((x + 1) / 2, 0, 1)
            x = u ** np.float32(np.exp(rng.uniform(-a["gamma"], a["gamma"]))) * 2 - 1
        if a["blur"] > 0 and rng.random() < 0.5:
            s = rng.uniform(0, a["blur"])
            x = ndimage.gaussian_filter(x, [s if ax in self.plane or not self.plane else 0 for ax in range(3)])
        if a["shading"] > 0 and rng.random() < 0.5:
            axes = self.plane or [1, 2]
            d = rng.normal(size=len(axes))
            d /= np.linalg.norm(d) or 1.0
            ramp = sum(di * (np.arange(self.patch[ax]) / max(1, self.patch[ax] - 1) - 0.5).reshape(
                [-1 if k == ax else 1 for k in range(3)]) for di, ax in zip(d, axes))
            x = x + np.float32(2 * a["shading"] * rng.uniform(0.5, 1.0)) * ramp.astype(np.float32)
        if a["noise"] > 0 and rng.random() < 0.5:
            x = x + rng.normal(0, 2 * a["noise"] * rng.uniform(0.2, 1.0), x.shape).astype(np.float32)
        return x.astype(np.float32, copy=False)
