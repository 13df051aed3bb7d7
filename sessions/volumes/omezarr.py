"""OME-Zarr (NGFF 0.5, zarr v3) multiscale volumes: layout, pyramid, access.

NGFF 0.5 because it is the version on zarr v3, which brings sharding for the
TB-scale volumes; ome-zarr-py and napari read it. Pyramids respect anisotropy:
an axis whose voxels are already coarser than the finest axis is not halved.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
import zarr.codecs

from sessions.errors import FibError

NGFF_VERSION = "0.5"
AXES = ("z", "y", "x")
# Stores written block by block by jobs (predictions): unsharded, since two writers of one shard would race.
DEFAULT_CHUNKS = (16, 128, 128)
# Ingested volumes: 16 MB shards (one file each, 60k files per TB) of chunks small enough that
# the viewer reads little more than it shows. Measured trade-off: docs/benchmarks.md, "Layout".
VOLUME_CHUNKS = (16, 128, 128)
VOLUME_SHARDS = (64, 512, 512)
Progress = Callable[[int, int], None] | None


def pyramid_plan(shape, voxel_size, *, min_extent: int = 64, max_levels: int = 8) -> list[tuple[int, int, int]]:
    """Per-level downsampling factors (relative to the level above).

    An axis is halved only if its voxel is not already coarser than twice the
    finest axis (nnU-Net's rule); levels stop once the largest extent is at
    most `min_extent`. Always at least two levels, so every volume has an overview.
    """
    shape, vs = list(shape), list(voxel_size)
    plan: list[tuple[int, int, int]] = []
    while len(plan) < max_levels - 1:
        finest = min(vs)
        f = tuple(2 if (vs[a] < 2 * finest and shape[a] >= 2) else 1 for a in range(3))
        if f == (1, 1, 1) or (plan and max(shape) <= min_extent):
            break
        plan.append(f)
        shape = [-(-s // k) for s, k in zip(shape, f)]
        vs = [v * k for v, k in zip(vs, f)]
    if not plan:  # tiny volume: still give a (trivial) second level
        plan.append(tuple(2 if s >= 2 else 1 for s in shape))
    return plan


def level_shapes(shape, voxel_size, plan=None) -> list[tuple[int, int, int]]:
    """The shape of every level of the pyramid (`pyramid_plan`'s unless a plan is given)."""
    out = [tuple(int(v) for v in shape)]
    for f in pyramid_plan(shape, voxel_size) if plan is None else plan:
        out.append(tuple(-(-s // k) for s, k in zip(out[-1], f)))
    return out


def downsample_mean(block: np.ndarray, f, out: np.ndarray | None = None) -> np.ndarray:
    """Mean over 1- or 2-voxel steps per axis, rounded half up; odd extents replicate their edge.

    Integer pair sums, one output slice at a time: the temporaries stay a few
    MB (cache-sized, reused by the allocator), which is ~7x faster than a
    float reshape-mean on the ingest's 256 MB slabs.
    """
    if any(k not in (1, 2) for k in f) or block.ndim != 3:
        raise ValueError(f"downsampling needs a 3D block and factors of 1 or 2 per axis, got {block.shape}, {f}")
    n = f[0] * f[1] * f[2]
    z, y, x = (-(-s // k) for s, k in zip(block.shape, f))
    out = np.empty((z, y, x), block.dtype) if out is None else out
    last = block.shape[0] - 1
    for k in range(z):
        acc = block[k * f[0]].astype(np.uint16)
        if f[0] == 2:
            acc += block[min(k * 2 + 1, last)]
        for axis, step in ((0, f[1]), (1, f[2])):
            if step == 2:
                if acc.shape[axis] % 2:
                    acc = np.concatenate([acc, acc.take([-1], axis=axis)], axis=axis)
                acc = acc[::2] + acc[1::2] if axis == 0 else acc[:, ::2] + acc[:, 1::2]
        acc += n // 2
        acc //= n
        out[k] = acc
    return out


@dataclass
class Multiscale:
    """An opened OME-Zarr image: its levels and their voxel sizes (nm)."""

    path: Path
    group: zarr.Group
    levels: list[zarr.Array]
    scales: list[tuple[float, float, float]]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.levels[0].shape)

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        return self.scales[0]

    def factor(self, level: int, base: int | None = None) -> tuple[int, int, int]:
        """Voxels of level `base` (default: the level above) per voxel of `level`, per axis."""
        ref = self.scales[level - 1 if base is None else base]
        return tuple(max(1, int(round(b / a))) for a, b in zip(ref, self.scales[level]))


def ome_metadata(name: str, scales, unit: str = "nanometer") -> dict:
    return {
        "version": NGFF_VERSION,
        "multiscales": [
            {
                "name": name,
                "axes": [{"name": a, "type": "space", "unit": unit} for a in AXES],
                "datasets": [
                    {"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": list(map(float, s))}]}
                    for i, s in enumerate(scales)
                ],
            }
        ],
    }


def create(path: Path, shape, voxel_size, dtype="uint8", *, chunks=DEFAULT_CHUNKS, shards=None,
           name: str | None = None, levels: int | None = None) -> Multiscale:
    """Create an empty multiscale image (all levels), overwriting `path`.

    With `shards` (one shape, or one per level), each level's shard is clipped
    to the level's shape (rounded up to whole chunks), so small levels are one file.
    """
    plan = pyramid_plan(shape, voxel_size)
    if levels is not None:
        plan = plan[: max(levels - 1, 0)]
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    arrays, scales = [], []
    cur_vs = tuple(float(v) for v in voxel_size)
    for i, cur_shape in enumerate(level_shapes(shape, voxel_size, plan)):
        if i:
            cur_vs = tuple(v * k for v, k in zip(cur_vs, plan[i - 1]))
        ch = tuple(min(c, s) for c, s in zip(chunks[i] if isinstance(chunks, list) else chunks, cur_shape))
        want = shards[i] if isinstance(shards, list) else shards
        sh = None if want is None else tuple(min(h, -(-s // c) * c) for h, s, c in zip(want, cur_shape, ch))
        arrays.append(group.create_array(
            str(i), shape=cur_shape, chunks=ch, shards=sh, dtype=dtype, fill_value=0,
            compressors=zarr.codecs.ZstdCodec(level=3), dimension_names=list(AXES),
        ))
        scales.append(cur_vs)
    group.attrs["ome"] = ome_metadata(name or path.name.split(".")[0], scales)
    return Multiscale(Path(path), group, arrays, scales)


def open_multiscale(path: str | Path, mode: str = "r") -> Multiscale:
    path = Path(path)
    try:
        group = zarr.open_group(str(path), mode=mode)
        ms = group.attrs["ome"]["multiscales"][0]
    except Exception:
        raise FibError(f"{path}: not an OME-Zarr image (no 'ome.multiscales' metadata)") from None
    levels, scales = [], []
    for ds in ms["datasets"]:
        levels.append(group[ds["path"]])
        scales.append(tuple(next(t["scale"] for t in ds["coordinateTransformations"] if t["type"] == "scale")))
    return Multiscale(path, group, levels, scales)


def slabs(n: int, step: int) -> Iterator[tuple[int, int]]:
    for z0 in range(0, n, step):
        yield z0, min(z0 + step, n)


def build_pyramid(ms: Multiscale, progress: Progress = None) -> None:
    """Fill levels 1.. from level 0, streaming slabs of whole chunks in z."""
    total = sum(a.shape[0] for a in ms.levels[1:])
    done = 0
    for i in range(1, len(ms.levels)):
        src, dst = ms.levels[i - 1], ms.levels[i]
        f = ms.factor(i)
        step = dst.chunks[0]
        for z0, z1 in slabs(dst.shape[0], step):
            block = src[z0 * f[0]: z1 * f[0]]
            out = downsample_mean(block, f)
            dst[z0:z1] = out[: z1 - z0, : dst.shape[1], : dst.shape[2]]
            done += z1 - z0
            if progress:
                progress(done, total)


def publish(partial: Path, final: Path) -> None:
    """Atomically expose a fully written store under its final name."""
    if final.exists():
        raise FibError(f"{final}: already exists; choose another name or remove it first")
    partial.rename(final)


def discard(partial: Path) -> None:
    shutil.rmtree(partial, ignore_errors=True)
