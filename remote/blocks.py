"""Block planning for blockwise prediction: the grid of output blocks, which task owns which, and how big
a block should be.

Blocks are whole output chunks (chunk-aligned writes never share a chunk
between two writers), and a job array's task i owns a contiguous run of them.

Block size is a trade between the halo and memory: every block computes its
output plus a halo as wide as the network's receptive field on each side, so
small blocks spend most of their compute on context they throw away (a
30×256×256 block of a 4-level anisotropic U-Net computes a 34×368×368 input,
2.3× its output). `choose_block` grows the block in whole chunks until the
whole plan's computed÷output voxels is ≤ HALO_TARGET or the next chunk would
not fit the memory budget. No torch here: the submitting side imports this.
"""

from __future__ import annotations

import math
from itertools import product

from sessions.geometry import Box
from sessions.volumes import omezarr

DEFAULT_BLOCK = (32, 256, 256)
HALO_TARGET = 1.30  # computed ÷ output voxels the chooser aims for (issue 12: the halo costs ≤ 30 % extra)


def round_up(v: int, m: int) -> int:
    return -(-v // m) * m


def plan_blocks(shape, block) -> list[Box]:
    ranges = [range(0, s, b) for s, b in zip(shape, block)]
    return [Box(o, tuple(min(b, s - oo) for b, s, oo in zip(block, shape, o))) for o in product(*ranges)]


def block_shape(spec: dict) -> tuple[int, int, int]:
    """The spec's block, rounded up to whole output chunks: chunk-aligned writes, grid-aligned origins."""
    block = tuple(int(b) for b in spec.get("block", DEFAULT_BLOCK))
    return tuple(round_up(b, c) for b, c in zip(block, omezarr.DEFAULT_CHUNKS))


def block_key(core: Box) -> str:
    return "_".join(map(str, core.offset))


def task_slice(n_blocks: int, tasks: int, task: int) -> slice:
    return slice(task * n_blocks // tasks, (task + 1) * n_blocks // tasks)


def input_extent(extent: int, halo: int, div: int) -> int:
    """The input a block of `extent` output voxels computes on one axis (remote.predict reads this much)."""
    return round_up(extent + 2 * halo, div)


def input_shape(core_shape, halo, div) -> tuple[int, int, int]:
    return tuple(input_extent(s, h, d) for s, h, d in zip(core_shape, halo, div))


def computed_per_output(shape, block, halo, div) -> float:
    """Input voxels computed over the whole plan ÷ the volume's voxels (edge blocks included, exactly).

    The plan is a product of per-axis runs and a block's input is a product of per-axis extents, so the
    total is the product over axes of each axis's summed input extents."""
    ratio = 1.0
    for s, b, h, d in zip(shape, block, halo, div):
        ratio *= sum(input_extent(min(b, s - o), h, d) for o in range(0, s, b)) / s
    return ratio


def largest_input(shape, block, halo, div) -> int:
    """Voxels of the biggest block's input (what must fit in memory)."""
    return math.prod(input_extent(min(b, s), h, d) for s, b, h, d in zip(shape, block, halo, div))


def choose_block(shape, halo, div, bytes_per_voxel: float, budget: float, *, chunks=omezarr.DEFAULT_CHUNKS,
                 target: float = HALO_TARGET) -> tuple[int, int, int]:
    """The block (whole chunks, none beyond the volume), grown from one chunk until computed÷output ≤
    `target` or no growth fits `budget` (bytes; the biggest block's input × `bytes_per_voxel`).

    Each step takes, over every axis and every whole-chunk growth of it that fits, the one that saves the
    most halo per memory spent (both relative). Growths of several chunks are candidates too: one more
    chunk can leave the plan's total unchanged (512 = 384 + 128 costs what 256 + 256 does) while two save.
    Deterministic in its arguments. A block never goes below one chunk, even over budget. A volume too
    small to reach the target (every block mirrors a border halo: a 30×512×512 anisotropic volume in one
    block still computes 1.68× its voxels) ends at the whole volume: that is its floor."""
    cap = [round_up(s, c) for s, c in zip(shape, chunks)]
    block = list(chunks)

    def cost(b):
        return computed_per_output(shape, b, halo, div), largest_input(shape, b, halo, div) * bytes_per_voxel

    ratio, mem = cost(block)
    while ratio > target:
        best = None
        for ax in range(3):
            for size in range(block[ax] + chunks[ax], cap[ax] + 1, chunks[ax]):
                grown = block[:ax] + [size] + block[ax + 1:]
                r, m = cost(grown)
                if m > budget:
                    break  # memory only grows with the block
                if r >= ratio:
                    continue
                gain = math.log(ratio / r) / math.log(m / mem) if m > mem else math.inf
                if best is None or gain > best[0]:
                    best = (gain, grown, r, m)
        if best is None:
            break
        _, block, ratio, mem = best
    return tuple(block)
