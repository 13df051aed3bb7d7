"""Touching pores split apart in the label pass (distance-transform watershed), exactly across blocks."""

from __future__ import annotations


import cc3d
import numpy as np

from sessions.geometry import Box
from sessions.measure import SPLIT_SPACING_NM
from remote.objects.labels import block_stats


def _spaced(peaks: np.ndarray, dist: np.ndarray, vs: np.ndarray, spacing_nm: float) -> np.ndarray:
    """The highest peaks, each kept only when no higher kept peak lies closer than `spacing_nm` (greedy, in nm)."""
    from scipy.spatial import cKDTree

    order = np.argsort(-dist[tuple(peaks.T)], kind="stable")
    peaks = peaks[order]
    pts = peaks * vs
    tree = cKDTree(pts)
    gone = np.zeros(len(pts), bool)
    keep = []
    for i in range(len(pts)):
        if not gone[i]:
            keep.append(i)
            gone[tree.query_ball_point(pts[i], spacing_nm * (1 - 1e-9))] = True
    return peaks[keep]


def split_touching(mask: np.ndarray, voxel_size, spacing_nm: float = SPLIT_SPACING_NM) -> tuple[np.ndarray, int]:
    """(labels 1..k, k) of one object `mask`, split by a distance-transform watershed into k pieces.

    The distance to the background is taken in nm (`sampling` = the voxel size, so anisotropic
    voxels are handled); its local maxima (`peak_local_max`, 3³ neighbourhood, inside the mask)
    are thinned to peaks at least `spacing_nm` apart in nm rather than by peak_local_max's
    `min_distance`, which counts voxels alike along every axis (120 nm would be 15 voxels along
    z and 30 along x at 8×4×4 nm). One peak: the object is whole (k = 1). Otherwise the
    watershed of −distance from the peaks, restricted to the mask with 26-connectivity (so no
    voxel of a 26-connected object is left unreached), cuts it at its necks. The background
    outside `mask`'s array counts as background: a pure function of the object."""
    from scipy.ndimage import distance_transform_edt
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    vs = np.asarray(voxel_size, float)
    dist = distance_transform_edt(np.pad(mask, 1), sampling=vs)[1:-1, 1:-1, 1:-1]
    peaks = peak_local_max(dist, footprint=np.ones((3, 3, 3), bool), labels=mask.astype(np.int32),
                           exclude_border=False)
    peaks = _spaced(peaks, dist, vs, spacing_nm) if len(peaks) else peaks
    if len(peaks) < 2:
        return mask.astype(np.int32), 1
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-dist, markers, mask=mask, connectivity=3).astype(np.int32), len(peaks)


def split_block(source, core: Box, mask_fn, prob: bool, voxel_size, split: dict) -> tuple[np.ndarray, np.ndarray,
                                                                                           list[dict]]:
    """(the core's data, its mask less the small objects, the statistics of the small objects this block owns,
    split into pieces).

    Why this stays exact across blocks: the face merge joins labels that *touch* across a face,
    and the pieces of a split object touch each other, so a split whose cut crosses a face
    would be merged back (or, split differently on the two sides, merged wrongly). So split
    objects never reach the face merge. Each block reads its core with a halo H (max_extent_nm
    per axis) and labels that; an object touching the core is *small* when its bounding box is
    at most H along every axis. A small object lies wholly in the halo-padded region of every
    block whose core it touches, and each of them sees it whole and decides "small" alike
    (a cut-off object touching the core reaches the halo's outer face, H beyond the core, so
    spans more than H). Its owner, the block holding its first voxel (raster order), splits it
    on its own bounding box (`split_touching`: a function of the object alone, the same in
    every block) and records the pieces with their whole statistics; the other blocks drop it,
    and no block puts it in its boundary planes. Objects larger than H are not split and merge
    across faces as before. Counts and tables therefore do not depend on the block shape."""
    vs = np.asarray(voxel_size, float)
    shape = tuple(int(s) for s in source.shape)
    halo = [int(np.ceil(split["max_extent_nm"] / v)) for v in vs]
    lo = [max(0, o - h) for o, h in zip(core.offset, halo)]
    hi = [min(s, e + h) for s, e, h in zip(shape, core.stop, halo)]
    data = np.asarray(source[tuple(slice(a, b) for a, b in zip(lo, hi))])
    lab, n = cc3d.connected_components(mask_fn(data), connectivity=26, return_N=True, out_dtype=np.uint32)
    inner = tuple(slice(o - a, e - a) for o, e, a in zip(core.offset, core.stop, lo))
    core_data, core_lab = data[inner], lab[inner]
    mask = core_lab > 0
    ids = np.unique(core_lab[mask])
    if not len(ids):
        return core_data, mask, []
    boxes = cc3d.statistics(lab)["bounding_boxes"]
    small, pieces = [], []
    for i in ids.tolist():
        bb = boxes[i]
        if any(s.stop - s.start > h for s, h in zip(bb, halo)):
            continue  # large: whole, through the face merge
        small.append(i)
        obj = lab[bb] == i
        first = [a + s.start + int(f) for a, s, f in zip(lo, bb, np.unravel_index(int(np.argmax(obj)), obj.shape))]
        if not all(o <= f < e for o, f, e in zip(core.offset, first, core.stop)):
            continue  # another block owns it (and sees it whole)
        pl, k = split_touching(obj, vs, split["spacing_nm"])
        pieces.append(block_stats(pl, k, data[bb], [a + s.start for a, s in zip(lo, bb)], prob))
    mask &= ~np.isin(core_lab, small)
    return core_data, mask, pieces


