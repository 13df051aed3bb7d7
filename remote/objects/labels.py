"""The label pass and the merge: per-block components, statistics and boundary planes; global objects."""

from __future__ import annotations

import os
from collections.abc import Callable
from itertools import product
from pathlib import Path

import cc3d
import numpy as np

from remote.blocks import block_key, plan_blocks
from sessions.geometry import Box


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


def block_stats(lab: np.ndarray, n: int, data: np.ndarray, offset, prob: bool) -> dict:
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




def label_block(source, core: Box, mask_fn, prob: bool, npz: Path, labels_store=None, split: dict | None = None,
                voxel_size=None) -> None:
    """Pass 1 for one block: its statistics and boundary planes in `npz` (the ledger entry)."""
    if split:
        from remote.objects.split import split_block  # split imports this module's statistics

        data, mask, pieces = split_block(source, core, mask_fn, prob, voxel_size, split)
    else:
        data = np.asarray(source[core.slices])
        mask, pieces = mask_fn(data), []
    lab, n = cc3d.connected_components(mask, connectivity=26, return_N=True, out_dtype=np.uint32)
    if labels_store is not None:
        labels_store[core.slices] = lab
    parts = ([block_stats(lab, n, data, core.offset, prob)] if n else []) + pieces
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


