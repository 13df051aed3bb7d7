"""Blockwise prediction as a Slurm job array: what its tasks share (remote/job_array.py has the plan,
the layout and the submit-side entry point).

No torch here: `prepare_array` runs in the submitting process and only reads the source volume's
metadata and creates the empty output OME-Zarr (all levels); the tasks write disjoint,
chunk-aligned blocks of level 0 and each keeps its own ledger, `tasks/<i>/blocks.done`.
"""

from __future__ import annotations

from pathlib import Path

from remote.blocks import block_shape, plan_blocks
from remote.job_array import task_dir
from sessions.volumes import omezarr

OUTPUT = "prediction.ome.zarr"

__all__ = ["OUTPUT", "prepare_array", "task_dir"]


def prepare_array(spec: dict, job_dir: Path) -> dict:
    """The output store, empty; {blocks} of the prediction."""
    src = omezarr.open_multiscale(spec["volume"]["path"])
    shape = src.levels[0].shape
    omezarr.create(Path(job_dir) / OUTPUT, shape, src.voxel_size, name="prediction", chunks=omezarr.DEFAULT_CHUNKS)
    return {"blocks": len(plan_blocks(shape, block_shape(spec)))}
