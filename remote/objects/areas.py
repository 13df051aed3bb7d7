"""Envelope areas by blockwise marching cubes, and the nearest envelope of each pore."""

from __future__ import annotations

from collections.abc import Callable
from itertools import product

import numpy as np

from remote.blocks import plan_blocks
from sessions.geometry import Box
from remote.objects.labels import GlobalLabels


# ---------------------------------------------------------------- envelope area (blockwise marching cubes)
SIGMA = 1.0       # voxels: smoothing before marching cubes (binary staircases overestimate area by ~5-8 %)
HALO = 6          # ≥ 1 + 4σ (gaussian truncation) + the marching-cubes cell
PATCH_NM = 1000.0  # bootstrap patch: ~1 µm², about the scale of the pore-free islands


TILE = (16, 64, 64)  # marching cubes runs only on tiles the surface passes through (the band is thin)


def _surface(sub, sub_lo, c_lo, c_hi, shape, vs, acc: dict, gaussian_filter, marching_cubes) -> None:
    """Half the boundary area of `sub` (a mask whose first voxel is at `sub_lo`) owned by the tile
    [c_lo, c_hi): triangles whose centroid lies in it (the volume's outer half voxels go to the border)."""
    m = gaussian_filter(sub.astype(np.float32), SIGMA, mode="nearest")
    if m.max() < 0.5 or m.min() > 0.5:
        return
    verts, faces, _, _ = marching_cubes(m, 0.5)
    verts += np.asarray(sub_lo, float)  # voxel-centre coordinates of the volume
    tri = verts[faces]
    cen = tri.mean(axis=1)
    lo = [(a if a > 0 else -0.5) for a in c_lo]
    hi = [(b if b < n else n - 0.5) for b, n in zip(c_hi, shape)]
    keep = np.all((cen >= lo) & (cen < hi), axis=1)
    if not keep.any():
        return
    t = tri[keep] * vs
    a = 0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1) * 1e-6 / 2  # µm², half
    acc["area_um2"] += float(a.sum())
    cells = np.floor((cen[keep] + 0.5) * vs / PATCH_NM).astype(np.int64)
    uc, inv = np.unique(cells, axis=0, return_inverse=True)
    sums = np.bincount(inv.ravel(), weights=a)
    for c, v in zip(map(tuple, uc.tolist()), sums):
        acc["patches"][c] = acc["patches"].get(c, 0.0) + float(v)


def envelope_areas(labels: GlobalLabels, ids, voxel_size, block=None,
                   progress: Callable[[int, int], None] | None = None) -> dict:
    """Per object id: the area (µm²) of the mid-surface of a band object, as half the area of
    the band's boundary (its inner and outer faces), clipped to the volume; and the same area
    split into PATCH_NM cubes (for the bootstrap), as {id: {"area_um2", "patches": {cell: µm²}}}.

    Each block runs marching cubes on its halo-padded region and keeps only the triangles
    whose centroid lies in its core (the volume's first/last half voxel go to the border
    blocks), so the per-block areas partition the surface exactly."""
    from scipy.ndimage import gaussian_filter
    from skimage.measure import marching_cubes

    block = tuple(block or labels.block)
    shape = labels.shape
    vs = np.asarray(voxel_size, float)
    ids = set(int(i) for i in ids)
    out = {i: {"area_um2": 0.0, "patches": {}} for i in ids}
    blocks = plan_blocks(shape, block)
    busy = labels.busy_blocks()
    for bi, core in enumerate(blocks):
        if busy is not None and not any(tuple(c + o * b for c, o, b in zip(core.offset, off, block)) in busy
                                        for off in product((-1, 0, 1), repeat=3)):
            if progress:
                progress(bi + 1, len(blocks))
            continue  # no object in this block or its neighbours: no surface here
        lo = [o - HALO for o in core.offset]
        ext = Box(tuple(lo), tuple(s + 2 * HALO for s in core.shape))
        g = labels.read(ext)
        present = set(np.flatnonzero(np.bincount(g.ravel())).tolist()) & ids if g.any() else set()
        if present:
            # pad outside the volume by replicating the edge: the surface runs on to the box edge
            pad = [(max(0, -lo_), max(0, (lo_ + n) - s)) for lo_, n, s in zip(ext.offset, ext.shape, shape)]
            g = np.pad(g, pad, mode="edge")
        for i in present:
            m = g == i
            for t_lo in product(*(range(o, o + n, t) for o, n, t in zip(core.offset, core.shape, TILE))):
                t_hi = [min(a + t, o + n) for a, t, o, n in zip(t_lo, TILE, core.offset, core.shape)]
                sl = tuple(slice(a - HALO - e, b + HALO - e) for a, b, e in zip(t_lo, t_hi, ext.offset))
                sub = m[sl]
                if not sub.any() or sub.all():
                    continue  # no surface can pass through this tile
                _surface(sub, [a - HALO for a in t_lo], t_lo, t_hi, shape, vs, out[i], gaussian_filter,
                         marching_cubes)
        if progress:
            progress(bi + 1, len(blocks))
    return out


def nearest_object(labels: GlobalLabels, points_vox: np.ndarray, voxel_size, max_nm: float) -> tuple[np.ndarray,
                                                                                                       np.ndarray]:
    """For each point (voxel coordinates): the id of the nearest labelled voxel within `max_nm`
    (0: none) and its distance in nm (inf: none). Reads a small window per point."""
    vs = np.asarray(voxel_size, float)
    r = np.ceil(max_nm / vs).astype(int)
    ids = np.zeros(len(points_vox), np.int64)
    dist = np.full(len(points_vox), np.inf)
    for k, p in enumerate(points_vox):
        c = np.rint(p).astype(int)
        box = Box(tuple(c - r), tuple(2 * r + 1))
        g = labels.read(box)
        nz = np.argwhere(g > 0)
        if not len(nz):
            continue
        lo = np.maximum(c - r, 0)
        d = np.linalg.norm((nz + lo - p) * vs, axis=1)
        j = int(np.argmin(d))
        if d[j] <= max_nm:
            ids[k], dist[k] = g[tuple(nz[j])], d[j]
    return ids, dist


