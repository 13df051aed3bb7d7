"""A blockwise job split over a Slurm job array: the plan, and the submit-side preparation, for every
kind that can run so (ARRAY_KINDS: prediction, measure).

`prepare` runs in the submitting process (or, over SSH, as `python -m remote.job_array <job-dir>
<tasks>` on the far side). It only reads metadata and creates what the tasks share (the kind's
`prepare_array` hook: prediction's empty output OME-Zarr, the measure's envelope label store), so the
array tasks never race to create it.

Layout in the job directory: `array.json` ({tasks, blocks[, passes]}: progress is blocks done
over blocks × passes), and `tasks/<i>/` per task: `events.jsonl`, its own ledger (prediction:
`blocks.done`; measure: one npz per labelled block, `<pass>/<block>.npz`), `stdout.log`,
`stderr.log`, `result.json`. Task i owns the contiguous slice `blocks[i*N//K : (i+1)*N//K]`
(remote/blocks.py task_slice). The job runs `remote.run <dir> --task I`, then `--finalize`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sessions.jobfiles import SPEC, atomic_write_json, read_json
from sessions.jobs import ARRAY, ARRAY_KINDS, TASKS


def task_dir(job_dir: Path, task: int) -> Path:
    return Path(job_dir) / TASKS / str(task)


# kind → (module with `prepare_array(spec, job_dir) -> {blocks[, passes]}`, importable without torch;
#         module with `run_task(spec, job_dir, task)` and `finalize(spec, job_dir)`)
HOOKS = {"predict": ("remote.predict_array", "remote.predict"), "measure": ("remote.objects", "remote.objects")}


def _hook(kind: str, which: int):
    import importlib

    if kind not in ARRAY_KINDS:
        raise ValueError(f"a {kind} job cannot run as a job array (only {', '.join(sorted(ARRAY_KINDS))})")
    return importlib.import_module(HOOKS[kind][which])


def prepare(spec: dict, job_dir: Path, tasks: int) -> dict:
    """Create what the tasks share and tasks/<i>/; write and return array.json's {tasks, blocks[, passes]}.

    Tasks are capped at the number of blocks (a task with nothing to do would only cost a slot)."""
    job_dir = Path(job_dir)
    info = _hook(spec.get("kind"), 0).prepare_array(spec, job_dir)
    tasks = max(1, min(int(tasks), int(info["blocks"])))
    for i in range(tasks):
        task_dir(job_dir, i).mkdir(parents=True, exist_ok=True)
    info = {"tasks": tasks, **info}
    atomic_write_json(job_dir / ARRAY, info)
    return info


def run_task(spec: dict, job_dir: Path, task: int) -> dict:
    """`remote.run <dir> --task I`: the kind's share of the blocks for task I."""
    return _hook(spec.get("kind"), 1).run_task(spec, job_dir, task)


def finalize(spec: dict, job_dir: Path) -> dict:
    """`remote.run <dir> --finalize`: the kind's dependent step after every task."""
    return _hook(spec.get("kind"), 1).finalize(spec, job_dir)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m remote.job_array <job-dir> <tasks>", file=sys.stderr)
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
