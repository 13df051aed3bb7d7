"""Blockwise prediction split over a Slurm job array: the plan, and the submit-side preparation.

No torch here: `prepare` runs in the submitting process (or, over SSH, as
`python -m remote.predict_array <job-dir> <tasks>` on the far side) and only
reads the source volume's metadata and creates the empty output OME-Zarr, so
the array tasks never race to create it.

Layout in the job directory: `prediction.ome.zarr` (all tasks write disjoint,
chunk-aligned blocks of level 0), `array.json` ({tasks, blocks}), and
`tasks/<i>/` per task: `events.jsonl`, `blocks.done` (its own ledger),
`stdout.log`, `stderr.log`, `result.json`. Task i owns the contiguous slice
`blocks[i*N//K : (i+1)*N//K]`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from remote.blocks import block_shape, plan_blocks
from sessions.jobfiles import SPEC, atomic_write_json, read_json
from sessions.jobs import ARRAY, TASKS
from sessions.volumes import omezarr

OUTPUT = "prediction.ome.zarr"


def task_dir(job_dir: Path, task: int) -> Path:
    return Path(job_dir) / TASKS / str(task)


def prepare(spec: dict, job_dir: Path, tasks: int) -> dict:
    """Create the output store (empty, all levels) and tasks/<i>/; return {tasks, blocks}.

    Tasks are capped at the number of blocks (a task with nothing to do would only cost a slot)."""
    job_dir = Path(job_dir)
    src = omezarr.open_multiscale(spec["volume"]["path"])
    shape = src.levels[0].shape
    n = len(plan_blocks(shape, block_shape(spec)))
    tasks = max(1, min(int(tasks), n))
    omezarr.create(job_dir / OUTPUT, shape, src.voxel_size, name="prediction", chunks=omezarr.DEFAULT_CHUNKS)
    for i in range(tasks):
        task_dir(job_dir, i).mkdir(parents=True, exist_ok=True)
    info = {"tasks": tasks, "blocks": n}
    atomic_write_json(job_dir / ARRAY, info)
    return info


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m remote.predict_array <job-dir> <tasks>", file=sys.stderr)
        return 2
    job_dir = Path(argv[0]).resolve()
    try:
        info = prepare(read_json(job_dir / SPEC), job_dir, int(argv[1]))
    except Exception as e:  # noqa: BLE001 - one line back to the submitter
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
