"""Job entry point on the compute side: `python -m remote.run <job-dir> [--task I | --finalize]`.

Reads `spec.json`, runs the job kind, writes `result.json` atomically, and
appends a heartbeat to `events.jsonl` every few seconds so the session can
tell a live job from a lost one. The `started` event says how many GPUs the
job sees (0 on CPU): with the elapsed time it gives the job's GPU-hours.

A prediction or a measure submitted as a Slurm job array (remote/job_array.py)
runs as `--task I` (one slice of the blocks; its events, ledger, result and
logs in `tasks/<I>/`) and then as `--finalize` (the dependent step: checks
every block, then builds the pyramid or merges the objects, and writes the
job's result.json).
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from pathlib import Path

from sessions.jobfiles import RESULT, SPEC, append_event, atomic_write_json, read_json

HEARTBEAT_S = 10.0
KINDS = ("train", "predict", "evaluate", "measure", "preview")


def _heartbeat(job_dir: Path, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        append_event(job_dir, "heartbeat", pid=os.getpid())


def visible_gpus(spec: dict) -> int:
    """GPUs this job can use: 0 when it runs on the CPU."""
    if str(spec.get("device", "auto")).startswith("cpu"):
        return 0
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no torch, no CUDA: no GPU
        return 0


def _parse(argv: list[str]) -> tuple[Path, int | None, bool] | None:
    if not argv or argv[0].startswith("--"):
        return None
    job_dir, rest = Path(argv[0]).resolve(), argv[1:]
    if not rest:
        return job_dir, None, False
    if rest == ["--finalize"]:
        return job_dir, None, True
    if len(rest) == 2 and rest[0] == "--task" and rest[1].isdigit():
        return job_dir, int(rest[1]), False
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parsed = _parse(argv)
    if parsed is None:
        print("usage: python -m remote.run <job-dir> [--task I | --finalize]", file=sys.stderr)
        return 2
    job_dir, task, finalize = parsed
    spec = read_json(job_dir / SPEC)
    out_dir = job_dir
    if task is not None:
        from remote.sbatch import TASKS

        out_dir = job_dir / TASKS / str(task)
        out_dir.mkdir(exist_ok=True)  # tasks/ is made at submission; never recreate a deleted job dir
    kind = spec.get("kind")
    if kind not in KINDS:  # before the heavy imports: an unknown kind fails at once
        result = {"status": "failed", "error": f"unknown job kind {kind!r}; known: {', '.join(KINDS)}"}
        append_event(out_dir, "started", pid=os.getpid(), host=os.uname().nodename, kind=kind, gpus=0)
        atomic_write_json(out_dir / RESULT, result)
        append_event(out_dir, "finished", status="failed")
        return 1
    from remote.allocator import keep_freed_memory

    keep_freed_memory()  # before torch allocates: a step's tensors are not page-faulted in again each time
    from remote import evaluate, job_array, objects, predict, train

    append_event(out_dir, "started", pid=os.getpid(), host=os.uname().nodename, kind=kind,
                 gpus=visible_gpus(spec), **({"task": task} if task is not None else {}),
                 **({"slurm_job_id": os.environ["SLURM_JOB_ID"]} if "SLURM_JOB_ID" in os.environ else {}))
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(out_dir, stop), daemon=True).start()
    try:
        if task is not None:
            result = job_array.run_task(spec, job_dir, task)
        elif finalize:
            result = job_array.finalize(spec, job_dir)
        else:
            result = {"train": train.run, "predict": predict.run, "evaluate": evaluate.run, "preview": predict.run,
                      "measure": objects.run}[kind](spec, job_dir)
    except train.Interrupted as e:
        print(str(e), file=sys.stderr)
        return 143  # no result.json: the scheduler requeues, the next run resumes
    except Exception as e:
        traceback.print_exc()
        result = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
    finally:
        stop.set()
    try:
        atomic_write_json(out_dir / RESULT, result)
        append_event(out_dir, "finished", status=result["status"])
    except FileNotFoundError:  # the job directory was deleted under us: nobody to tell
        print(f"job directory {job_dir} was deleted; no result written", file=sys.stderr)
        return 1
    return 0 if result["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
