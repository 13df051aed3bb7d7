"""Objects at any size, blockwise: connected components, per-object stats, envelope areas.

Memory is bounded by the block, never the volume:

1. **Label pass** (one block at a time, resumable): threshold the block (or its hysteresis
   low level), label it with cc3d (26-connected), and write, aside-then-rename, `<key>.npz`
   holding the block's per-label statistics and its six boundary planes. The npz files *are*
   the ledger: a restarted job skips the blocks that have one. Run as a Slurm job array, each
   task labels its slice of the blocks into its own `tasks/<i>/<pass>/` (`run_task`), and the
   dependent step (`finalize`) checks that every block has its file before the merge.
2. **Merge**: for each of the 13 forward neighbours of every block (faces, edges and corners,
   which 26-connectivity needs), the touching boundary planes are compared with shifts of
   −1..1 along the shared axes; equal-object pairs go to a sparse graph whose connected
   components (scipy.sparse.csgraph) are the global objects. Statistics are reduced per root:
   voxels, centroid, bounding box, mean and max probability. Then the size filter (and the
   hysteresis high level).
3. Optionally the block labels are kept in a zarr (`labels.zarr`, chunk = block) with a lookup
   table (`lut.npy`: block offset + local label → global id), which is what the envelope
   area pass and the pore → nucleus assignment read.
4. Optionally (`split`) touching pores are split apart in the label pass (`split_touching`,
   `_split_block`: why it stays exact across blocks is said there).

Why our own face merge rather than dask-image or daisy: the object table (not a label volume)
is the product, the merge needs only the boundary planes (a few MB), and the per-block
statistics make the reduction exact without a second pass over the volume; dask-image's
`label` would need a second blockwise pass for the statistics and daisy brings a scheduler we
already have (our executors). Measured against whole-volume cc3d in tests/test_objects.py
(identical partitions) and benchmarks/objects_scale.py (throughput ratio).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from itertools import product
from pathlib import Path

import cc3d
import numpy as np

from remote.blocks import block_key, plan_blocks, task_slice
from sessions.geometry import Box
from sessions.measure import SPLIT_SPACING_NM, open_volume

FORWARD = [o for o in product((-1, 0, 1), repeat=3) if o > (0, 0, 0)]  # 13 neighbour offsets
COLUMNS = ("id", "z", "y", "x", "z_nm", "y_nm", "x_nm", "voxels", "volume_um3", "bbox_z0", "bbox_y0", "bbox_x0",
           "bbox_z1", "bbox_y1", "bbox_x1", "mean_prob", "max_prob", "touches_border")
STATS = ("voxels", "sz", "sy", "sx", "lo", "hi")  # per-label statistics of a block; with "sp", "mp" for probabilities

def threshold_mask(threshold: float | None = 0.5, classes=None) -> Callable[[np.ndarray], np.ndarray]:
    """Mask of a block: a uint8 probability (p×255) at `threshold`, or label values in `classes`."""
    if classes is not None:
        vals = np.asarray(sorted(classes))
        return lambda b: np.isin(b, vals)
    thr = int(round(float(threshold) * 255))
    return lambda b: b >= thr


def npz_path(d: Path, core: Box) -> Path:
    """A block's ledger entry in directory `d`."""
    return Path(d) / f"{block_key(core)}.npz"


def _write_npz(path: Path, **arrays) -> None:
    tmp = path.with_name(f".{path.name}.partial")  # not *.npz: a half-written file is never counted as done
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    os.replace(tmp, path)


def _stats(lab: np.ndarray, n: int, data: np.ndarray, offset, prob: bool) -> dict:
    """Per-label statistics (labels 1..n) of `lab`, whose first voxel is volume voxel `offset`: the sums the
    merge reduces exactly (voxels, coordinate sums, bounding box; probability sum and maximum)."""
    stats = cc3d.statistics(lab)
    cnt = np.asarray(stats["voxel_counts"][1:n + 1], np.int64)
    cen = np.asarray(stats["centroids"][1:n + 1], np.float64).reshape(-1, 3)
    off = np.asarray(offset, np.int64)
    out = {"voxels": cnt}
    for k, name in enumerate(("sz", "sy", "sx")):  # coordinate sums: centroid × voxels, in volume voxels
        out[name] = (cen[:, k] + off[k]) * cnt
    bb = stats["bounding_boxes"][1:n + 1]
    out["lo"] = np.array([[s.start for s in b] for b in bb], np.int64).reshape(-1, 3) + off
    out["hi"] = np.array([[s.stop for s in b] for b in bb], np.int64).reshape(-1, 3) + off
    if prob:
        flat = lab.ravel()
        fg = flat > 0
        lf = flat[fg]
        v = data.ravel()[fg].astype(np.float64)
        out["sp"] = np.bincount(lf, weights=v, minlength=n + 1)[1:n + 1]
        mx = np.zeros(n + 1, np.float64)
        np.maximum.at(mx, lf, v)
        out["mp"] = mx[1:n + 1]
    return out


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


def _split_block(source, core: Box, mask_fn, prob: bool, voxel_size, split: dict) -> tuple[np.ndarray, np.ndarray,
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
        pieces.append(_stats(pl, k, data[bb], [a + s.start for a, s in zip(lo, bb)], prob))
    mask &= ~np.isin(core_lab, small)
    return core_data, mask, pieces


def label_block(source, core: Box, mask_fn, prob: bool, npz: Path, labels_store=None, split: dict | None = None,
                voxel_size=None) -> None:
    """Pass 1 for one block: its statistics and boundary planes in `npz` (the ledger entry)."""
    if split:
        data, mask, pieces = _split_block(source, core, mask_fn, prob, voxel_size, split)
    else:
        data = np.asarray(source[core.slices])
        mask, pieces = mask_fn(data), []
    lab, n = cc3d.connected_components(mask, connectivity=26, return_N=True, out_dtype=np.uint32)
    if labels_store is not None:
        labels_store[core.slices] = lab
    parts = ([_stats(lab, n, data, core.offset, prob)] if n else []) + pieces
    total = n + sum(len(p["voxels"]) for p in pieces)  # pieces follow the core's labels: n+1..total
    out = {"n": np.int64(total), "voxels": np.zeros(0, np.int64)}
    if parts:
        out.update({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
    for a in range(total and 3):  # an empty block has no planes to merge: the merge skips it
        idx = [slice(None)] * 3
        idx[a] = 0
        out[f"lo{a}"] = lab[tuple(idx)]
        idx[a] = -1
        out[f"hi{a}"] = lab[tuple(idx)]
    _write_npz(npz, **out)


def _edge(faces: dict, o, side: str) -> np.ndarray:
    """The part of a block's boundary that touches the neighbour at offset o (A: side 'a', B: side 'b')."""
    nz = [a for a in range(3) if o[a] != 0]
    a0 = nz[0]
    first_is_hi = (o[a0] == 1) == (side == "a")
    plane = faces[f"{'hi' if first_is_hi else 'lo'}{a0}"]
    rest = [a for a in range(3) if a != a0]
    idx = []
    for a in rest:
        if o[a] == 0:
            idx.append(slice(None))
        else:
            hi = (o[a] == 1) == (side == "a")
            idx.append(-1 if hi else 0)
    return plane[tuple(idx)]


def _pairs(fa: np.ndarray, fb: np.ndarray) -> np.ndarray:
    """(local a, local b) pairs of foreground voxels 26-adjacent across the contact (shifts along shared axes)."""
    out = []
    k = fa.ndim
    for s in product((-1, 0, 1), repeat=k):
        sa = tuple(slice(max(0, -d), fa.shape[i] - max(0, d)) for i, d in enumerate(s))
        sb = tuple(slice(max(0, d), fb.shape[i] - max(0, -d)) for i, d in enumerate(s))
        a, b = fa[sa], fb[sb]
        m = (a > 0) & (b > 0)
        if m.any():
            out.append(np.stack([a[m], b[m]], 1))
        if k == 0:
            break
    return np.unique(np.concatenate(out), axis=0) if out else np.zeros((0, 2), np.uint32)


def merge(shape, block, out_dir: Path, voxel_size, *, min_voxels: int = 1, high: float | None = None,
          prob: bool = True, where: Callable[[Box], Path] | None = None) -> tuple[dict, np.ndarray]:
    """Pass 2: the global object table (columns COLUMNS, numpy arrays) and the lookup table
    (block offset + local label → object id, 0 = dropped by the filters).

    `where(block)`: the block's npz (default: in `out_dir`; an array's: in the task that labelled it)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    where = where or (lambda bx: npz_path(out_dir, bx))
    blocks = plan_blocks(shape, block)
    grid = [len(range(0, s, b)) for s, b in zip(shape, block)]
    index = {tuple(c // b for c, b in zip(bx.offset, block)): bx for bx in blocks}
    counts = {}
    for bx in blocks:
        with np.load(where(bx)) as z:
            counts[bx.offset] = int(z["n"])
    offsets, total = {}, 0
    for bx in blocks:
        offsets[bx.offset] = total
        total += counts[bx.offset]
    keys = list(STATS) + (["sp", "mp"] if prob else [])
    acc = {k: [] for k in keys}
    edges = []
    faces_cache: dict = {}

    def faces(g):
        bx = index[g]
        if g not in faces_cache:
            with np.load(where(bx)) as z:
                faces_cache[g] = {f"{s}{a}": z[f"{s}{a}"] for s in ("lo", "hi") for a in range(3)}
        return faces_cache[g]

    for g in sorted(index):  # raster order: keep only the planes still needed (two z-layers of blocks)
        bx = index[g]
        with np.load(where(bx)) as z:
            if int(z["n"]):
                for k in keys:
                    acc[k].append(z[k])
        for o in FORWARD:
            h = tuple(a + b for a, b in zip(g, o))
            if not all(0 <= h[i] < grid[i] for i in range(3)) or not (counts[bx.offset] and counts[index[h].offset]):
                continue
            p = _pairs(_edge(faces(g), o, "a"), _edge(faces(h), o, "b"))
            if len(p):
                edges.append(np.stack([p[:, 0].astype(np.int64) + offsets[bx.offset] - 1,
                                       p[:, 1].astype(np.int64) + offsets[index[h].offset] - 1], 1))
        for old in [k for k in faces_cache if k[0] < g[0] - 1]:
            del faces_cache[old]
    e = np.concatenate(edges) if edges else np.zeros((0, 2), np.int64)
    if total:
        graph = coo_matrix((np.ones(len(e), np.int8), (e[:, 0], e[:, 1])), shape=(total, total))
        n_roots, root = connected_components(graph, directed=False)
    else:
        n_roots, root = 0, np.zeros(0, np.int64)
    cat = {k: np.concatenate(v) if v else np.zeros((0, 3) if k in ("lo", "hi") else 0) for k, v in acc.items()}
    vox = np.bincount(root, weights=cat["voxels"], minlength=n_roots)
    cz, cy, cx = (np.bincount(root, weights=cat[k], minlength=n_roots) / np.maximum(vox, 1) for k in ("sz", "sy", "sx"))
    lo = np.full((n_roots, 3), np.iinfo(np.int64).max)
    hi = np.zeros((n_roots, 3), np.int64)
    np.minimum.at(lo, root, cat["lo"].astype(np.int64))
    np.maximum.at(hi, root, cat["hi"].astype(np.int64))
    if prob:
        mean_p = np.bincount(root, weights=cat["sp"], minlength=n_roots) / np.maximum(vox, 1) / 255.0
        max_p = np.zeros(n_roots)
        np.maximum.at(max_p, root, cat["mp"])
        max_p /= 255.0
    else:
        mean_p = max_p = np.ones(n_roots)
    keep = vox >= min_voxels
    if high is not None:
        keep &= max_p >= high
    # stable ids: objects ordered by their first voxel's block and label (deterministic for any run)
    new_id = np.zeros(n_roots, np.int64)
    order = np.flatnonzero(keep)
    first = np.full(n_roots, np.iinfo(np.int64).max)
    np.minimum.at(first, root, np.arange(total))
    order = order[np.argsort(first[order], kind="stable")]
    new_id[order] = np.arange(1, len(order) + 1)
    lut = np.zeros(total + 1, np.int64)  # index: offset + local label (1-based); 0 stays 0
    lut[1:] = new_id[root]
    vs = np.asarray(voxel_size, float)
    table = {
        "id": np.arange(1, len(order) + 1),
        "z": cz[order], "y": cy[order], "x": cx[order],
        "z_nm": (cz[order] + 0.5) * vs[0], "y_nm": (cy[order] + 0.5) * vs[1], "x_nm": (cx[order] + 0.5) * vs[2],
        "voxels": vox[order].astype(np.int64), "volume_um3": vox[order] * float(np.prod(vs)) * 1e-9,
        **{f"bbox_{a}0": lo[order, i] for i, a in enumerate("zyx")},
        **{f"bbox_{a}1": hi[order, i] for i, a in enumerate("zyx")},
        "mean_prob": mean_p[order], "max_prob": max_p[order],
        "touches_border": np.any((lo[order] == 0) | (hi[order] == np.asarray(shape)), axis=1),
    }
    offs = np.array([offsets[bx.offset] for bx in blocks], np.int64)
    np.save(out_dir / "block_offsets.npy", offs)
    return table, lut


def labels_store(out_dir: Path, shape, block, create: bool = True):
    """The kept block labels, `out_dir/labels.zarr` (uint32), opened for writing; made when missing and `create`
    (an array's tasks only open it: the submission made it, so no two tasks race to)."""
    import zarr

    zpath = Path(out_dir) / "labels.zarr"
    if zpath.exists() or not create:
        return zarr.open_array(zpath, mode="r+")
    # chunks that divide the block (so array tasks never share one) but small, so the area pass's
    # halo reads touch thin rings of chunks rather than whole neighbouring blocks
    chunks = tuple(min(s, c if b % c == 0 else b) for b, c, s in zip(block, (16, 128, 128), shape))
    return zarr.create_array(zpath, shape=tuple(shape), chunks=chunks, dtype="uint32", fill_value=0)


def label_blocks(source, blocks: list[Box], npz_dir: Path, *, mask_fn, prob: bool, store=None,
                 split: dict | None = None, voxel_size=None, progress: Callable[[int, int], None] | None = None) -> None:
    """Pass 1 over `blocks` (all of them, or an array task's share), into `npz_dir`; resumable: a block
    whose npz exists is skipped."""
    npz_dir = Path(npz_dir)
    npz_dir.mkdir(parents=True, exist_ok=True)
    for i, core in enumerate(blocks):
        if not npz_path(npz_dir, core).exists():
            label_block(source, core, mask_fn, prob, npz_path(npz_dir, core), store, split, voxel_size)
        if progress:
            progress(i + 1, len(blocks))


def label_volume(source, out_dir: Path, voxel_size, *, block=(64, 256, 256), mask_fn=None, prob: bool = True,
                 min_voxels: int = 1, high: float | None = None, keep_labels: bool = False, split: dict | None = None,
                 progress: Callable[[int, int], None] | None = None) -> tuple[dict, np.ndarray]:
    """Both passes over `source` (any array with .shape and slicing: zarr, numpy, tifffile memmap), in one
    process. Resumable: blocks whose npz exists are skipped. `split`: `split_settings()` to split touching
    objects (their pieces are not in labels.zarr, so not with `keep_labels`)."""
    if split and keep_labels:
        raise ValueError("split objects are not kept in labels.zarr: split the pores, not the envelope")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shape = tuple(int(s) for s in source.shape)
    store = labels_store(out_dir, shape, block) if keep_labels else None
    label_blocks(source, plan_blocks(shape, block), out_dir, mask_fn=mask_fn or threshold_mask(0.5), prob=prob,
                 store=store, split=split, voxel_size=voxel_size, progress=progress)
    return merge(shape, block, out_dir, voxel_size, min_voxels=min_voxels, high=high, prob=prob)


class GlobalLabels:
    """Read global object ids from a kept labels.zarr through the lookup table."""

    def __init__(self, out_dir: Path, lut: np.ndarray, block):
        import zarr

        self.z = zarr.open_array(Path(out_dir) / "labels.zarr", mode="r")
        self.lut, self.block = lut.astype(np.int32 if len(lut) < 2**31 else np.int64), tuple(block)
        self.shape = self.z.shape
        offs = np.load(Path(out_dir) / "block_offsets.npy")
        self.blocks = plan_blocks(self.shape, self.block)
        self.offset = {bx.offset: int(o) for bx, o in zip(self.blocks, offs)}
        self._busy = None

    def busy_blocks(self) -> set | None:
        """Offsets of the blocks holding at least one kept object (None: unknown, treat all as busy)."""
        if self._busy is None:
            offs = [self.offset[bx.offset] for bx in self.blocks] + [len(self.lut) - 1]
            self._busy = {bx.offset for k, bx in enumerate(self.blocks)
                          if offs[k + 1] > offs[k] and self.lut[offs[k] + 1: offs[k + 1] + 1].any()}
        return self._busy

    def read(self, box: Box) -> np.ndarray:
        """Global ids in `box` (clipped to the volume)."""
        lo = [max(0, o) for o in box.offset]
        hi = [min(s, o + n) for s, o, n in zip(self.shape, box.offset, box.shape)]
        out = np.zeros([h - lo_ for lo_, h in zip(lo, hi)], self.lut.dtype)
        starts = [range((lo_ // b) * b, h, b) for lo_, h, b in zip(lo, hi, self.block)]
        for o in product(*starts):
            bl = [max(a, b) for a, b in zip(o, lo)]
            bh = [min(a + b, c) for a, b, c in zip(o, self.block, hi)]
            if any(x >= y for x, y in zip(bl, bh)):
                continue
            loc = np.asarray(self.z[tuple(slice(a, b) for a, b in zip(bl, bh))])
            off = self.offset[tuple(o)]
            sub = self.lut[off: off + int(loc.max()) + 1].copy()  # this block's labels → global ids
            sub[0] = 0
            g = sub[loc]
            out[tuple(slice(a - c, b - c) for a, b, c in zip(bl, bh, lo))] = g
        return out


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


# ---------------------------------------------------------------- the measure job
class MaxOf:
    """Voxelwise maximum of several same-shaped arrays (envelope ∪ pore probabilities)."""

    def __init__(self, arrays):
        self.arrays = arrays
        self.shape = tuple(arrays[0].shape)

    def __getitem__(self, sl):
        out = np.asarray(self.arrays[0][sl])
        for a in self.arrays[1:]:
            out = np.maximum(out, np.asarray(a[sl]))
        return out


def _source(part: dict):
    arrays = [open_volume(p) for p in part["paths"]]
    src = arrays[0] if len(arrays) == 1 else MaxOf(arrays)
    if part["kind"] == "labels":
        return src, threshold_mask(classes=part["classes"]), False
    return src, threshold_mask(part.get("threshold", 0.5)), True


def table_columns(table: dict, extra: dict | None = None):
    import pyarrow as pa

    cols = {k: np.asarray(v) for k, v in {**table, **(extra or {})}.items()}
    return pa.table(cols)


def write_tables(job_dir: Path, name: str, table: dict) -> None:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    t = table_columns(table)
    for ext, write in (("parquet", lambda t, p: pq.write_table(t, p)), ("csv", lambda t, p: pcsv.write_csv(t, p))):
        final = job_dir / f"{name}.{ext}"
        tmp = job_dir / f".{name}.{ext}.partial"
        write(t, str(tmp))
        os.replace(tmp, final)


PASSES = ("envelope", "pores")  # the two label passes of a measure job, in this order
STAGE = {"envelope": "envelope objects", "pores": "pore objects"}  # their progress messages
WORK = "work"                    # job_dir/work/<pass>/: a single job's ledger; the kept envelope labels


def _block(spec: dict) -> tuple[int, int, int]:
    return tuple(int(b) for b in spec.get("block", (64, 256, 256)))


def _passes(spec: dict) -> dict[str, dict]:
    """Per label pass: its source and how it is labelled and filtered (the single job and the array's
    tasks and final step all read them from here)."""
    vs = tuple(float(v) for v in spec["voxel_size"])
    env_src, env_mask, env_prob = _source(spec["envelope"])
    pore_src, pore_mask, pore_prob = _source(spec["pores"])
    if tuple(env_src.shape) != tuple(pore_src.shape):
        raise ValueError(f"pores {tuple(pore_src.shape)} and envelope {tuple(env_src.shape)} differ in shape")
    min_env = int(spec.get("min_envelope_voxels") or max(1, round(1e7 / float(np.prod(vs)))))
    return {"envelope": {"source": env_src, "mask_fn": env_mask, "prob": env_prob, "keep_labels": True,
                         "min_voxels": min_env, "high": None, "split": None},
            "pores": {"source": pore_src, "mask_fn": pore_mask, "prob": pore_prob, "keep_labels": False,
                      "min_voxels": int(spec["pores"].get("min_voxels", 1)), "high": spec["pores"].get("high"),
                      "split": spec["pores"].get("split")}}


def _label_passes(spec: dict, job_dir: Path, passes: dict, blocks: list[Box], npz_dir: Callable[[str], Path],
                  say, create: bool = True) -> None:
    """Pass 1 of both label passes over `blocks`, each pass's npz into `npz_dir(pass)`."""
    vs = tuple(float(v) for v in spec["voxel_size"])
    for name, p in passes.items():
        shape = tuple(int(s) for s in p["source"].shape)
        store = labels_store(Path(job_dir) / WORK / name, shape, _block(spec), create) if p["keep_labels"] else None
        label_blocks(p["source"], blocks, npz_dir(name), mask_fn=p["mask_fn"], prob=p["prob"], store=store,
                     split=p["split"], voxel_size=vs, progress=lambda d, t, name=name: say(STAGE[name], d, t))


def _conclude(spec: dict, job_dir: Path, passes: dict, where: Callable[[str], Callable[[Box], Path]], say) -> dict:
    """After pass 1 of both: the merges, size filters, envelope areas, pore → nucleus assignment, the
    readout and the tables (Parquet + CSV beside the job). `where(pass)(block)`: that block's npz."""
    from sessions import measure as readout_mod

    job_dir = Path(job_dir)
    vs = tuple(float(v) for v in spec["voxel_size"])
    block = _block(spec)
    env, pores = passes["envelope"], passes["pores"]
    shape = tuple(int(s) for s in env["source"].shape)
    env_dir = job_dir / WORK / "envelope"
    nuc_table, nuc_lut = merge(shape, block, env_dir, vs, min_voxels=env["min_voxels"], prob=env["prob"],
                               where=where("envelope"))
    if not len(nuc_table["id"]):
        raise ValueError(f"no nucleus: the envelope has no object of {env['min_voxels']} voxels or more; train the "
                         "envelope more, or lower the threshold")
    gl = GlobalLabels(env_dir, nuc_lut, block)
    areas = envelope_areas(gl, nuc_table["id"], vs, progress=lambda d, t: say("envelope area", d, t))
    (job_dir / WORK / "pores").mkdir(parents=True, exist_ok=True)
    pore_table, _ = merge(shape, block, job_dir / WORK / "pores", vs, min_voxels=pores["min_voxels"],
                          high=pores["high"], prob=pores["prob"], where=where("pores"))
    pts = np.stack([pore_table["z"], pore_table["y"], pore_table["x"]], 1) if len(pore_table["id"]) else \
        np.zeros((0, 3))
    assign_nm = float(spec.get("assign_nm", readout_mod.ASSIGN_NM))
    nid, dist = nearest_object(gl, pts, vs, assign_nm)
    pore_table["nucleus"] = nid
    pore_table["envelope_distance_nm"] = dist
    pore_table["counted"] = readout_mod.counted(pore_table)
    nuclei = [{"id": int(i), "area_um2": areas[int(i)]["area_um2"], "patches": areas[int(i)]["patches"],
               "partial": bool(nuc_table["touches_border"][k]), "voxels": int(nuc_table["voxels"][k])}
              for k, i in enumerate(nuc_table["id"])]
    result = readout_mod.readout(nuclei, pore_table, PATCH_NM, seed=int(spec.get("seed", 0)))
    nuc_out = {"id": nuc_table["id"], "voxels": nuc_table["voxels"], "partial": nuc_table["touches_border"],
               "envelope_um2": np.array([n["area_um2"] for n in nuclei]),
               "pores": np.array([int(((nid == i) & pore_table["counted"]).sum()) for i in nuc_table["id"]], np.int64),
               "fragment": np.array([n["area_um2"] < readout_mod.MIN_NUCLEUS_UM2 for n in nuclei], bool),
               **{k: nuc_table[k] for k in ("z_nm", "y_nm", "x_nm")}}
    write_tables(job_dir, "pores", pore_table)
    write_tables(job_dir, "nuclei", nuc_out)
    return {"status": "completed", "readout": result, "tables": {"pores": "pores.parquet", "nuclei": "nuclei.parquet"},
            "objects": int(len(pore_table["id"])), "provenance": spec.get("provenance", {})}


def _discard(paths) -> None:
    """The scratch of a finished measure (ledgers, kept labels), unless the spec keeps it."""
    import shutil

    for p in paths:
        shutil.rmtree(p, ignore_errors=True)


def measure(spec: dict, job_dir: Path, progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Pores and envelope → object tables (Parquet + CSV beside the job) and the per-nucleus readout, in one
    process; resumable from the ledger in work/<pass>/."""
    job_dir = Path(job_dir)
    say = progress or (lambda *a: None)
    passes = _passes(spec)
    blocks = plan_blocks(tuple(passes["envelope"]["source"].shape), _block(spec))
    _label_passes(spec, job_dir, passes, blocks, lambda name: job_dir / WORK / name, say)
    result = _conclude(spec, job_dir, passes, lambda name: (lambda bx: npz_path(job_dir / WORK / name, bx)), say)
    if not spec.get("keep_work"):
        _discard([job_dir / WORK])
    return result


def run(spec: dict, job_dir: Path) -> dict:
    from sessions.jobfiles import append_event

    def progress(stage, d, t):
        append_event(job_dir, "progress", step=d, total=t, message=stage)

    return measure(spec, job_dir, progress)


# ---------------------------------------------------------------- the measure job as a Slurm job array
def _shape(spec: dict) -> tuple[int, int, int]:
    return tuple(int(s) for s in spec["shape"]) if "shape" in spec else \
        tuple(int(s) for s in _source(spec["envelope"])[0].shape)


def prepare_array(spec: dict, job_dir: Path) -> dict:
    """Submit side (remote/job_array.py): the envelope's label store, which every task writes its own
    blocks of (so no two tasks race to create it); {blocks, passes} for array.json."""
    shape = _shape(spec)
    labels_store(Path(job_dir) / WORK / "envelope", shape, _block(spec))
    return {"blocks": len(plan_blocks(shape, _block(spec))), "passes": len(PASSES)}


def _array(job_dir: Path) -> int:
    from sessions.jobs import ARRAY, array_info

    info = array_info(job_dir)
    if info is None:
        raise RuntimeError(f"{Path(job_dir) / ARRAY} missing: the array was not prepared at submission")
    return int(info["tasks"])


def run_task(spec: dict, job_dir: Path, task: int) -> dict:
    """One task of the array: pass 1 of both label passes on its slice of the blocks, its ledger (the npz
    files) in tasks/<task>/<pass>/; a rerun resumes from it."""
    from remote.job_array import task_dir
    from sessions.jobfiles import append_event

    job_dir = Path(job_dir)
    tasks = _array(job_dir)
    if not 0 <= task < tasks:
        raise RuntimeError(f"task {task} outside the array's 0..{tasks - 1}")
    tdir = task_dir(job_dir, task)
    passes = _passes(spec)
    blocks = plan_blocks(_shape(spec), _block(spec))
    mine = blocks[task_slice(len(blocks), tasks, task)]
    _label_passes(spec, job_dir, passes, mine, lambda name: tdir / name,
                  lambda stage, d, t: append_event(tdir, "progress", step=d, total=t, message=stage), create=False)
    return {"status": "completed", "task": task, "blocks": len(mine)}


def finalize(spec: dict, job_dir: Path) -> dict:
    """The dependent step after every task: check every block of both passes has its npz, then the merges,
    areas, assignment, readout and tables, as the single job does."""
    from remote.job_array import task_dir

    job_dir = Path(job_dir)
    tasks = _array(job_dir)
    blocks = plan_blocks(_shape(spec), _block(spec))
    owner = {bx.offset: t for t in range(tasks) for bx in blocks[task_slice(len(blocks), tasks, t)]}

    def where(name):
        return lambda bx: npz_path(task_dir(job_dir, owner[bx.offset]) / name, bx)

    missing = [f"{name} {block_key(bx)}" for name in PASSES for bx in blocks if not where(name)(bx).exists()]
    if missing:
        raise RuntimeError(f"{len(missing)} of {len(PASSES) * len(blocks)} blocks were not labelled "
                           f"(first: {missing[0]}); see tasks/*/stderr.log")
    # no progress events here: the job's progress is the tasks' ledgers, complete by now
    result = _conclude(spec, job_dir, _passes(spec), where, lambda *a: None)
    if not spec.get("keep_work"):
        _discard([job_dir / WORK] + [task_dir(job_dir, t) / name for t in range(tasks) for name in PASSES])
    return {**result, "tasks": tasks}
