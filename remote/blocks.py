"""Block planning for blockwise prediction: the grid of output blocks and which task owns which.

Blocks are whole output chunks (chunk-aligned writes never share a chunk
between two writers), and a job array's task i owns a contiguous run of them.
"""

from __future__ import annotations

from itertools import product

from sessions.geometry import Box
from sessions.volumes import omezarr

DEFAULT_BLOCK = (32, 256, 256)


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
