"""The sbatch script for a job: a pure function of the job spec, its directory and the profile.

Golden-tested (tests/golden/sbatch_*.sh): nothing here reads the clock, the
environment or the filesystem. Training gets `--signal=B:USR1@<s>`: USR1 goes to
the batch shell, which passes it on to `remote.run`; training then checkpoints
and exits 143 without result.json, and the shell requeues the job so the next
run resumes (on preemption Slurm requeues it itself; the extra request is harmless).
"""

from __future__ import annotations

import re
import shlex
from pathlib import PurePosixPath

from remote.profiles import ClusterProfile
from sessions.errors import FibError
from sessions.jobfiles import STDERR, STDOUT
from sessions.jobs import TASKS  # tasks/<i>/: one array task's events, ledger, logs, result

SCRIPT = "job.sbatch"
ARRAY_SCRIPT, FINAL_SCRIPT = "array.sbatch", "final.sbatch"
# kinds that run a network and so get the profile's GPU request; evaluate and measure (labels, areas) run on CPU
GPU_KINDS = ("train", "predict", "preview")
# how the scripts' comment names an array and its final step, per kind
ARRAY_WHAT = {"predict": ("prediction", "pyramid, result.json"),
              "measure": ("measure", "merge, areas, tables, result.json")}
_PATH_OK = re.compile(r"^/[^\s'\"\\`$;&|<>*?]*$")
_NAME_BAD = re.compile(r"[^A-Za-z0-9._-]")


def _check_dir(job_dir: str) -> str:
    if not _PATH_OK.match(job_dir):
        raise FibError(f"job directory {job_dir!r} must be an absolute path without spaces, quotes or shell "
                       f"characters to go into #SBATCH lines; move the session to a plain path")
    return job_dir


def _slurm_filename(path: str) -> str:
    return path.replace("%", "%%")  # --output/--error expand %j, %x ...; a literal % is %%


def _options(spec: dict, job_dir: str, profile: ClusterProfile, *, name_suffix: str = "", logs: str = "",
             gpu: bool = True) -> list[str]:
    kind = spec.get("kind", "job")
    gpu = gpu and kind in GPU_KINDS
    job_id = spec.get("job_id") or PurePosixPath(job_dir).name
    name = "fibtui-" + _NAME_BAD.sub("_", str(job_id)) + name_suffix
    cpus = profile.cpus or (int(spec["threads"]) if spec.get("threads") else None)
    logs = logs or _slurm_filename(job_dir)  # already %-escaped (it may hold %a)
    opts = [
        f"--job-name={name}",
        f"--chdir={job_dir}",
        f"--output={logs}/{_slurm_filename(STDOUT)}",
        f"--error={logs}/{_slurm_filename(STDERR)}",
        "--open-mode=append",
    ]
    for key, opt in (("partition", "partition"), ("account", "account"), ("qos", "qos"), ("time", "time")):
        if getattr(profile, key):
            opts.append(f"--{opt}={getattr(profile, key)}")
    opts += ["--nodes=1", "--ntasks=1"]
    if cpus:
        opts.append(f"--cpus-per-task={cpus}")
    if profile.mem:
        opts.append(f"--mem={profile.mem}")
    if gpu and profile.gres:
        opts.append(f"--gres={profile.gres}")
    if gpu and profile.gpus:
        opts.append(f"--gpus={profile.gpus}")
    opts.append("--requeue" if profile.requeue else "--no-requeue")
    if kind == "train" and profile.signal_s:
        opts.append(f"--signal=B:USR1@{profile.signal_s}")
    opts += list(profile.sbatch_args)
    return opts


def sbatch_script(spec: dict, job_dir: str | PurePosixPath, profile: ClusterProfile, python: str) -> str:
    """The whole batch script, as text. `python` runs `-m remote.run` on the compute node."""
    job_dir = _check_dir(str(job_dir))
    kind = spec.get("kind", "job")
    job_id = spec.get("job_id") or PurePosixPath(job_dir).name
    train = kind == "train"
    opts = _options(spec, job_dir, profile)

    q = shlex.quote
    lines = ["#!/bin/bash"] + [f"#SBATCH {o}" for o in opts]
    lines += [f"# written by fibtui (remote/sbatch.py): job {job_id}, kind {kind}, profile {profile.name}", ""]
    if profile.setup:
        lines += ["# profile setup"] + list(profile.setup) + [""]
    lines += [f"job={q(job_dir)}", "export PYTHONUNBUFFERED=1", 'cd "$job"']
    run = f'{q(python)} -m remote.run "$job"'
    if not train:
        lines += [f"exec {run}", ""]
        return "\n".join(lines)
    lines += [
        "# Slurm signals this shell (B:USR1) before the time limit or on preemption:",
        "# pass it on; training writes checkpoint.pt and exits 143 without result.json.",
        "child= usr1= woke=",
        "trap 'usr1=1 woke=1; [ -n \"$child\" ] && kill -USR1 \"$child\" 2>/dev/null' USR1",
        "trap 'woke=1; [ -n \"$child\" ] && kill -TERM \"$child\" 2>/dev/null' TERM",
        f"{run} &",
        "child=$!",
        "while :; do",
        "    woke=",
        '    wait "$child"; rc=$?',
        '    [ -z "$woke" ] && break                       # the job ended',
        '    if ! kill -0 "$child" 2>/dev/null; then         # it ended while we were signalled',
        '        wait "$child"; r=$?; [ "$r" != 127 ] && rc=$r',
        "        break",
        "    fi",
        "done",
    ]
    if profile.requeue:
        lines += [
            '# stopped by USR1 without a result: run again, the next run resumes from checkpoint.pt',
            'if [ -n "$usr1" ] && [ ! -e "$job/result.json" ] && [ -n "${SLURM_JOB_ID:-}" ]; then',
            '    echo "fibtui: USR1 received, requeueing job $SLURM_JOB_ID" >&2',
            '    scontrol requeue "$SLURM_JOB_ID" >&2 || true',
            "fi",
        ]
    lines += [
        'exit "$rc"',
        "",
    ]
    return "\n".join(lines)


def _header(opts: list[str], spec: dict, job_dir: str, profile: ClusterProfile, what: str) -> list[str]:
    q = shlex.quote
    job_id = spec.get("job_id") or PurePosixPath(job_dir).name
    lines = ["#!/bin/bash"] + [f"#SBATCH {o}" for o in opts]
    lines += [f"# written by fibtui (remote/sbatch.py): job {job_id}, {what}, profile {profile.name}", ""]
    if profile.setup:
        lines += ["# profile setup"] + list(profile.setup) + [""]
    lines += [f"job={q(job_dir)}", "export PYTHONUNBUFFERED=1", 'cd "$job"']
    return lines


def sbatch_array_scripts(spec: dict, job_dir: str | PurePosixPath, profile: ClusterProfile, python: str,
                         tasks: int, throttle: int | None = None) -> tuple[str, str]:
    """A blockwise job (prediction, measure) as a job array + a final step (both texts; pure).

    The array `--array=0-(tasks-1)[%throttle]`: task i does its own slice of the
    block list (a prediction into the shared, pre-created zarr; a measure's label
    pass) and keeps its own ledger, events and logs under tasks/<i>/ (no two tasks
    write the same file). The final step is submitted with
    `--dependency=afterok:<array>`: it checks every block is done, builds the
    pyramid (or merges the objects, measures the areas, writes the tables) and
    writes result.json; it asks for no GPU.
    """
    job_dir = _check_dir(str(job_dir))
    if not isinstance(tasks, int) or tasks < 1:
        raise FibError(f"array tasks = {tasks!r}; use a whole number ≥ 1")
    if throttle is not None and (not isinstance(throttle, int) or throttle < 1):
        raise FibError(f"array throttle = {throttle!r}; use a whole number ≥ 1")
    q = shlex.quote
    arr = f"--array=0-{tasks - 1}" + (f"%{throttle}" if throttle else "")
    opts = _options(spec, job_dir, profile, logs=f"{_slurm_filename(job_dir)}/{TASKS}/%a")
    opts.insert(1, arr)
    what, final_what = ARRAY_WHAT.get(spec.get("kind"), ARRAY_WHAT["predict"])
    lines = _header(opts, spec, job_dir, profile, f"{what} array of {tasks} tasks")
    lines += [f'exec {q(python)} -m remote.run "$job" --task "$SLURM_ARRAY_TASK_ID"', ""]
    final = _options(spec, job_dir, profile, name_suffix="-final", gpu=False)
    flines = _header(final, spec, job_dir, profile, f"final step of the {what} array ({final_what})")
    flines += [f'exec {q(python)} -m remote.run "$job" --finalize', ""]
    return "\n".join(lines), "\n".join(flines)


__all__ = ["sbatch_script", "sbatch_array_scripts", "SCRIPT", "ARRAY_SCRIPT", "FINAL_SCRIPT", "TASKS"]
