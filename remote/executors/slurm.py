"""Jobs as Slurm batch jobs: `sbatch --parsable`, one `squeue` for all, `scancel`.

The login node and the compute nodes share the filesystem, so the job
directory is read and written in place and the job runs the same interpreter
(`profile.python`, default this process's `sys.executable`) after the
profile's setup lines. Commands go through a `Shell`, so the same code drives
a remote Slurm over SSH (remote/executors/ssh.py).

Finished jobs: `squeue --states=all` still lists them for MinJobAge seconds
(300 by default); after that `sacct` is asked once for all of them (when the
cluster keeps accounting), and last the job directory's result.json.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from remote.executors.base import Executor, JobStatus, deleted_reason, read_tail
from remote.job_array import task_dir
from remote.profiles import ClusterProfile
from remote.sbatch import ARRAY_SCRIPT, FINAL_SCRIPT, SCRIPT, sbatch_array_scripts, sbatch_script
from sessions.errors import FibError
from sessions.jobfiles import SPEC, STDERR, read_json, read_result, tail
from sessions.jobs import ARRAY_KINDS, array_info

# squeue --Format fields (width + "|" suffix; values are stripped). JobID alone is the raw id of an
# array task (or the array's id while its tasks are still pending together): key tasks by
# ArrayJobID_ArrayTaskID instead.
SQUEUE_FORMAT = ("JobID:24|,ArrayJobID:24|,ArrayTaskID:16|,State:24|,Reason:160|,TimeUsed:20|,NumNodes:8|,"
                 "tres-per-node:120|,tres-per-job:120|,tres-alloc:400|")

ACTIVE_STATES = {
    "PENDING": "PENDING", "REQUEUED": "PENDING", "REQUEUE_HOLD": "PENDING", "REQUEUE_FED": "PENDING",
    "CONFIGURING": "PENDING", "RESV_DEL_HOLD": "PENDING",
    "RUNNING": "RUNNING", "COMPLETING": "RUNNING", "SIGNALING": "RUNNING", "STAGE_OUT": "RUNNING",
    "RESIZING": "RUNNING", "SUSPENDED": "RUNNING", "STOPPED": "RUNNING",
}
TERMINAL_STATES = {
    "COMPLETED": "COMPLETED", "FAILED": "FAILED", "CANCELLED": "CANCELLED", "TIMEOUT": "TIMEOUT",
    "PREEMPTED": "PREEMPTED", "NODE_FAIL": "NODE_FAIL", "OUT_OF_MEMORY": "OUT_OF_MEMORY",
    "BOOT_FAIL": "NODE_FAIL", "DEADLINE": "TIMEOUT", "SPECIAL_EXIT": "FAILED", "REVOKED": "CANCELLED",
}
_REASONS = {
    "CANCELLED": "cancelled in Slurm (scancel)",
    "TIMEOUT": "reached the time limit{time}; raise `time` in the profile",
    "PREEMPTED": "preempted by a higher-priority job",
    "NODE_FAIL": "the node failed",
    "OUT_OF_MEMORY": "out of memory{mem}; raise `mem` in the profile",
}


class Shell:
    """Runs argv where Slurm is. This one: locally, with subprocess."""

    where = "this machine"

    def run(self, argv: list[str], *, cwd: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise FibError(f"`{argv[0]}` not found on {self.where}: is this a Slurm login node? "
                           f"(or choose another executor)") from None
        except subprocess.TimeoutExpired:
            raise FibError(f"`{shlex.join(argv)}` did not answer within {timeout:.0f} s on {self.where}; "
                           f"the Slurm controller may be down, try again") from None


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    errs = [ln for ln in lines if "error" in ln.lower()]
    msg = (errs or lines or ["no message"])[-1]
    for prefix in ("sbatch: error: ", "squeue: error: ", "scancel: error: ", "Batch job submission failed: "):
        msg = msg.replace(prefix, "")
    return msg


def map_state(slurm_state: str, reason: str | None, result: dict | None, profile: ClusterProfile,
              stderr_tail: str = "", exit_code: str | None = None) -> JobStatus:
    """A Slurm state (+ squeue reason, + the job's result.json) → our JobStatus. Pure."""
    base = slurm_state.split()[0].rstrip("+") if slurm_state else ""
    if base.startswith("CANCELLED"):
        base = "CANCELLED"
    reason = None if reason in (None, "", "None", "(null)") else reason
    if base in ACTIVE_STATES:
        return JobStatus(ACTIVE_STATES[base], reason)
    state = TERMINAL_STATES.get(base)
    if state is None:
        return JobStatus("FAILED", f"unknown Slurm state {slurm_state!r}")
    if state == "COMPLETED":
        if result is not None and result.get("status") != "completed":
            return JobStatus("FAILED", result.get("error", "failed"))
        return JobStatus("COMPLETED")
    if state == "FAILED":
        if result is not None and result.get("status") == "failed":
            return JobStatus("FAILED", result.get("error", "failed"))
        bits = [f"exit code {exit_code}" if exit_code else None, reason,
                f"stderr: {stderr_tail}" if stderr_tail else "see stderr.log"]
        return JobStatus("FAILED", "; ".join(b for b in bits if b))
    text = _REASONS[state].format(time=f" ({profile.time})" if profile.time else "",
                                  mem=f" ({profile.mem})" if profile.mem else "")
    return JobStatus(state, text)


def _last_line(path: Path) -> str:
    lines = [ln for ln in tail(path, 5).splitlines() if ln.strip()]
    return lines[-1].strip()[:300] if lines else ""


def parse_elapsed(text: str | None) -> float | None:
    """Slurm's `[D-]HH:MM:SS` / `MM:SS` / seconds → seconds; None for INVALID, N/A, ''."""
    text = (text or "").strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    days = 0
    if "-" in text:
        d, _, text = text.partition("-")
        if not d.isdigit():
            return None
        days = int(d)
    parts = text.split(":")
    if not parts or not all(p.isdigit() for p in parts) or len(parts) > 3:
        return None
    secs = 0
    for p in parts:
        secs = secs * 60 + int(p)
    return float(days * 86400 + secs)


def parse_gpus(tres: str | None) -> int | None:
    """GPUs in a TRES string (`cpu=1,mem=500M,node=1,gres/gpu=2`, typed `gres/gpu:a100=2`); 0 when none."""
    tres = (tres or "").strip()
    if not tres or tres in ("N/A", "(null)"):
        return 0 if tres else None
    total, typed = None, 0
    for item in tres.split(","):
        k, _, v = item.partition("=")
        if not v.isdigit():
            continue
        if k in ("gres/gpu", "gpu"):
            total = int(v)
        elif k.startswith(("gres/gpu:", "gpu:")):
            typed += int(v)
    return total if total is not None else typed


def parse_gpu_request(per_node: str | None, per_job: str | None, nodes: str | None) -> int:
    """GPUs asked for: `--gres` (tres-per-node, `gres:gpu:1` / `gres:gpu:a100:2`) × nodes + `--gpus`
    (tres-per-job). Used when tres-alloc has no gres/gpu (AccountingStorageTRES without gres/gpu)."""
    def count(text: str | None) -> int:
        n = 0
        for item in (text or "").split(","):
            item = item.strip()
            if "=" in item:  # newer spelling: gres/gpu=2, gres/gpu:a100=2
                k, _, v = item.partition("=")
                if k.split(":")[0] in ("gres/gpu", "gpu") and v.isdigit():
                    n += int(v)
                continue
            parts = item.split(":")
            if parts and parts[0] == "gres":
                parts = parts[1:]
            if parts and parts[0] in ("gpu", "gres/gpu"):
                n += int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
        return n

    k = int(nodes) if (nodes or "").strip().isdigit() else 1
    return count(per_node) * k + count(per_job)


@dataclass(frozen=True)
class Row:
    """One line of squeue/sacct: a job, or one task of an array."""

    state: str
    reason: str = ""
    elapsed_s: float | None = None
    gpus: int | None = None

    def __iter__(self):  # (state, reason) unpacking, as before
        return iter((self.state, self.reason))


def _base(state: str) -> str:
    b = state.split()[0].rstrip("+") if state else ""
    return "CANCELLED" if b.startswith("CANCELLED") else b


def ids_of(external_id: str) -> list[str]:
    """Slurm job ids behind one external id: `123` or, for a job array, `<array>,<final step>`."""
    return [i for i in str(external_id).split(",") if i]


class SlurmExecutor(Executor):
    """sbatch/squeue/scancel where Slurm is.

    GPU-hours: Slurm's own numbers, `TimeUsed` × the GPUs in `tres-alloc`
    (squeue; `ElapsedRaw` × `AllocTRES` from sacct once squeue has forgotten
    the job). A requeued job's TimeUsed restarts at 0: the session adds up the
    runs it saw. An array job sums its tasks and its final step.
    """

    name = "slurm"
    max_poll_s = 30.0

    def __init__(self, profile: ClusterProfile | None = None, *, shell: Shell | None = None):
        self.profile = profile or ClusterProfile()
        self.shell = shell or Shell()
        self.python = self.profile.python or sys.executable
        self._checked = False
        if profile is not None and profile.name != "default":
            self.name = f"slurm:{profile.name}"  # stored with each job: a fresh process can rebuild this executor

    # -- the pieces the SSH executor reuses with a remote shell and remote paths
    def script(self, job_dir: Path, run_dir: str) -> str:
        return sbatch_script(read_json(Path(job_dir) / SPEC), run_dir, self.profile, self.python)

    def array_tasks(self, spec: dict) -> tuple[int, int | None]:
        """(tasks, throttle) for a kind that can run as an array (prediction, measure): the spec's
        `array_tasks`, else the profile's; 1 = no array."""
        if spec.get("kind") not in ARRAY_KINDS:
            return 1, None
        tasks = spec.get("array_tasks") or self.profile.array_tasks or 1
        throttle = spec.get("array_throttle") or self.profile.array_throttle
        if not isinstance(tasks, int) or tasks < 1:
            raise FibError(f"array_tasks = {tasks!r}; use a whole number ≥ 1")
        return tasks, throttle

    def write_array_scripts(self, job_dir: Path, run_dir: str, tasks: int) -> None:
        spec = read_json(Path(job_dir) / SPEC)
        _, throttle = self.array_tasks(spec)
        arr, fin = sbatch_array_scripts(spec, run_dir, self.profile, self.python, tasks, throttle)
        (Path(job_dir) / ARRAY_SCRIPT).write_text(arr)
        (Path(job_dir) / FINAL_SCRIPT).write_text(fin)

    def sbatch_array(self, run_dir: str, job_label: str) -> str:
        """The array, then its final step after it (afterok); the external id is `<array>,<final>`."""
        import posixpath

        a = self.sbatch(posixpath.join(run_dir, ARRAY_SCRIPT), run_dir, job_label)
        try:
            f = self.sbatch(posixpath.join(run_dir, FINAL_SCRIPT), run_dir, job_label,
                            extra=(f"--dependency=afterok:{a}", "--kill-on-invalid-dep=yes"))
        except BaseException:
            self.scancel(a)
            raise
        return f"{a},{f}"

    def sbatch(self, script_path: str, run_dir: str, job_label: str, extra: tuple[str, ...] = ()) -> str:
        proc = self.shell.run(["sbatch", "--parsable", *extra, script_path], cwd=run_dir)
        if proc.returncode != 0:
            raise FibError(f"sbatch refused job {job_label} (profile {self.profile.name!r}): "
                           f"{_one_line(proc.stderr or proc.stdout)}; check partition/account/gres/time "
                           f"in [profiles.{self.profile.name}] (`sinfo -s` lists partitions)")
        out = proc.stdout.strip().splitlines()
        ext = out[-1].split(";")[0].strip() if out else ""
        if not ext.isdigit():
            raise FibError(f"sbatch gave no job id for {job_label} (it said {proc.stdout.strip()!r})")
        return ext

    def query(self, ids: list[str]) -> dict[str, Row]:
        """{Slurm JobID: Row} from ONE squeue call (array tasks one per line, `<array>_<i>`);
        ids squeue has forgotten come from one sacct call, if the cluster keeps accounting."""
        ids = [i for e in ids for i in ids_of(e)]
        if not ids:
            return {}
        proc = self.shell.run(["squeue", "--noheader", "--array", "--states=all", "--jobs=" + ",".join(ids),
                               "--Format=" + SQUEUE_FORMAT])
        if proc.returncode != 0:
            if "Invalid job id" in proc.stderr:  # a single forgotten id: squeue errors instead of listing nothing
                return self._sacct(ids)
            raise FibError(f"squeue failed on {self.shell.where}: {_one_line(proc.stderr)}")
        out = self._rows(proc.stdout)
        seen = {k.split("_")[0] for k in out}
        missing = [i for i in ids if i not in seen]
        if missing:
            out.update(self._sacct(missing))
        return out

    @staticmethod
    def _rows(text: str) -> dict[str, Row]:
        out = {}
        for line in text.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) < 10 or not parts[0]:
                continue
            job, arr, task, state, reason, used, nodes, per_node, per_job, alloc = parts[:10]
            key = f"{arr}_{task}" if task.isdigit() and arr.isdigit() else job
            gpus = parse_gpus(alloc) or parse_gpu_request(per_node, per_job, nodes)
            out[key] = Row(state, reason, parse_elapsed(used), gpus)
        return out

    def _sacct(self, ids: list[str]) -> dict[str, Row]:
        """Jobs older than MinJobAge: accounting, if the cluster keeps it (one call)."""
        try:
            proc = self.shell.run(["sacct", "--noheader", "--parsable2", "--allocations", "--jobs=" + ",".join(ids),
                                   "--format=JobID,State,Reason,ElapsedRaw,AllocTRES"])
        except FibError:
            return {}
        if proc.returncode != 0:
            return {}
        out = {}
        for line in proc.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) >= 2 and parts[0].split("_")[0] in ids and "[" not in parts[0]:
                get = lambda i: parts[i] if len(parts) > i else ""  # noqa: E731
                out[parts[0]] = Row(parts[1], get(2), parse_elapsed(get(3)), parse_gpus(get(4)))
        return out

    def exit_code(self, ext: str) -> str | None:
        proc = self.shell.run(["scontrol", "--oneliner", "show", "job", ext])
        if proc.returncode != 0:
            return None
        for tok in proc.stdout.split():
            if tok.startswith("ExitCode="):
                return tok.split("=", 1)[1]
        return None

    def scancel(self, *ext: str) -> None:
        ids = [i for e in ext for i in ids_of(e)]
        if not ids:
            return
        proc = self.shell.run(["scancel", *ids])
        errs = [ln for ln in proc.stderr.splitlines()
                if ln.strip() and "Invalid job id" not in ln and "already completing" not in ln
                and "Job/step already" not in ln]
        if proc.returncode != 0 and errs:
            raise FibError(f"scancel {' '.join(ids)} failed on {self.shell.where}: {_one_line(chr(10).join(errs))}")

    def _single(self, ext: str, job_dir: Path, rows: dict[str, Row]) -> JobStatus:
        res = read_result(job_dir)
        row = rows.get(ext)
        if row is not None:
            code = None
            if _base(row.state) in ("FAILED", "SPECIAL_EXIT") and res is None:
                code = self.exit_code(ext)
            st = map_state(row.state, row.reason, res, self.profile, _last_line(job_dir / STDERR), code)
            return JobStatus(st.state, st.reason, row.elapsed_s, row.gpus)
        if res is not None:  # Slurm forgot it, the directory remembers
            return (JobStatus("COMPLETED") if res.get("status") == "completed"
                    else JobStatus("FAILED", res.get("error", "failed")))
        return JobStatus("FAILED", f"Slurm no longer knows job {ext} and it left no result.json; "
                                   f"see {job_dir / STDERR}")

    def _array(self, ext: str, job_dir: Path, rows: dict[str, Row]) -> JobStatus:
        """An array + its final step → one status: a failed task fails the job; else the final step decides."""
        arr, final = ids_of(ext)[:2]
        info = array_info(job_dir) or {}
        tasks = {int(k.split("_", 1)[1]): r for k, r in rows.items()
                 if k.startswith(arr + "_") and k.split("_", 1)[1].isdigit()}
        n = int(info.get("tasks") or (max(tasks) + 1 if tasks else 0))
        parts = list(tasks.values()) + ([rows[final]] if final in rows else [])
        elapsed = sum(r.elapsed_s or 0.0 for r in parts) if parts else None
        gpus = max((r.gpus or 0 for r in tasks.values()), default=None)
        gpu_s = sum((r.elapsed_s or 0.0) * (r.gpus or 0) for r in parts) if parts else None
        usage = dict(elapsed_s=elapsed, gpus=gpus, gpu_seconds=gpu_s)
        states = []
        for i in range(n):
            tdir = task_dir(job_dir, i)
            res = read_result(tdir)
            if i in tasks:
                st = map_state(tasks[i].state, tasks[i].reason, res, self.profile, _last_line(tdir / STDERR))
            elif res is not None:
                st = JobStatus("COMPLETED") if res.get("status") == "completed" else JobStatus(
                    "FAILED", res.get("error", "failed"))
            else:
                st = None  # Slurm forgot it and it left nothing: the final step's state decides
            states.append(st)
        bad = [(i, st) for i, st in enumerate(states) if st and st.state not in ("PENDING", "RUNNING", "COMPLETED")]
        if bad:
            i, st = bad[0]
            return JobStatus(st.state, f"array task {i} of {n}: {st.reason or st.state.lower()}", **usage)
        res = read_result(job_dir)
        if final in rows:
            fst = map_state(rows[final].state, rows[final].reason, res, self.profile, _last_line(job_dir / STDERR))
            if fst.state not in ("PENDING", "RUNNING"):
                return JobStatus(fst.state, fst.reason and f"final step: {fst.reason}", **usage)
            if fst.state == "RUNNING" or any(st and st.state == "RUNNING" for st in states):
                return JobStatus("RUNNING", None, **usage)
            return JobStatus("PENDING", fst.reason if all(st and st.state == "COMPLETED" for st in states)
                             else None, **usage)
        if res is not None:
            return (JobStatus("COMPLETED", None, **usage) if res.get("status") == "completed"
                    else JobStatus("FAILED", res.get("error", "failed"), **usage))
        if any(st and st.state in ("PENDING", "RUNNING") for st in states):
            return JobStatus("RUNNING" if any(st and st.state == "RUNNING" for st in states) else "PENDING",
                             None, **usage)
        return JobStatus("FAILED", f"Slurm no longer knows the final step {final} of array {arr} and it left "
                                   f"no result.json; see {job_dir / STDERR}", **usage)

    def settle(self, rows: dict[str, Row], jobs: list[tuple[str, Path]]) -> dict[str, JobStatus]:
        """Slurm rows + local job directories (already synced) → JobStatus for every job.

        A job whose directory was deleted while it ran is cancelled (one scancel for all such) and FAILED."""
        out, orphans = {}, []
        for ext, job_dir in jobs:
            job_dir = Path(job_dir)
            if not job_dir.is_dir():
                if any(_base(r.state) in ACTIVE_STATES for k, r in rows.items()
                       if k.split("_")[0] in ids_of(ext)):
                    orphans.append(ext)
                out[ext] = JobStatus("FAILED", deleted_reason(job_dir))
                continue
            out[ext] = self._array(ext, job_dir, rows) if "," in ext else self._single(ext, job_dir, rows)
        if orphans:
            self.scancel(*orphans)
        return out

    def check_environment(self) -> None:
        """When the profile names another python or setup lines: can that python import fibtui's `remote`?"""
        if self._checked or not (self.profile.python or self.profile.setup):
            self._checked = True
            return
        script = "\n".join([*self.profile.setup, probe_line(self.python)])
        proc = self.shell.run(["/bin/sh", "-c", script])
        explain_probe(proc.returncode, proc.stdout + proc.stderr, self.python, self.shell.where, self.profile.name)
        self._checked = True

    # -- the Executor contract
    def preflight(self) -> None:
        self.check_environment()

    def submit(self, job_dir: Path) -> str:
        job_dir = Path(job_dir).resolve()
        spec = read_json(job_dir / SPEC)
        tasks, _ = self.array_tasks(spec)
        if tasks > 1:
            from remote.job_array import prepare

            try:
                info = prepare(spec, job_dir, tasks)  # the login node shares the filesystem: create the store here
            except FibError:
                raise
            except Exception as e:  # noqa: BLE001
                raise FibError(f"job {job_dir.name}: could not prepare the job array ({e})") from None
            self.write_array_scripts(job_dir, str(job_dir), info["tasks"])
            return self.sbatch_array(str(job_dir), job_dir.name)
        text = self.script(job_dir, str(job_dir))
        path = job_dir / SCRIPT
        path.write_text(text)
        return self.sbatch(str(path), str(job_dir), job_dir.name)

    def status(self, jobs: list[tuple[str, Path]]) -> dict[str, JobStatus]:
        jobs = [(str(e), Path(d)) for e, d in jobs]
        if not jobs:
            return {}
        return self.settle(self.query([e for e, _ in jobs]), jobs)

    def cancel(self, external_id: str, job_dir: Path) -> None:
        self.scancel(str(external_id))

    def cancel_many(self, jobs: list[tuple[str, Path]]) -> None:
        self.scancel(*[str(e) for e, _ in jobs])  # one scancel for all

    def log_tail(self, external_id: str, job_dir: Path, lines: int = 20) -> str:
        return read_tail(job_dir, lines)  # shared filesystem: read in place

    def results(self, external_id: str, job_dir: Path) -> Path:
        return Path(job_dir)


PROBE_OK = "fibtui-env-ok"


def probe_line(python: str) -> str:
    """One sh line: exit 3 if `python` is missing, 4 if it cannot import fibtui's job side, else print OK."""
    q = shlex.quote(python)
    return (f"command -v {q} >/dev/null 2>&1 || {{ echo 'python not found' >&2; exit 3; }}; "
            f"cd / && {q} -c 'import remote.run, sessions.jobfiles; print(\"{PROBE_OK}\")' || exit 4")


def explain_probe(rc: int, out: str, python: str, where: str, profile: str) -> None:
    """The probe's answer → nothing (fine) or one FibError line saying what to install."""
    if rc == 0 and PROBE_OK in out:
        return
    if rc == 3:
        raise FibError(f"{where}: python {python!r} not found; install fibtui there (`pip install fibtui` in a venv) "
                       f"and set `python` (or `setup` lines such as `source <venv>/bin/activate`) in "
                       f"[profiles.{profile}]")
    last = [ln.strip() for ln in out.splitlines() if ln.strip()]
    why = last[-1][:200] if last else f"exit {rc}"
    raise FibError(f"{where}: {python} cannot import fibtui's job code ({why}); install fibtui into that "
                   f"environment (`{python} -m pip install fibtui`, or `pip install -e <checkout>`) or point "
                   f"`python`/`setup` in [profiles.{profile}] at one that has it")


__all__ = ["SlurmExecutor", "Shell", "map_state", "parse_elapsed", "parse_gpus", "parse_gpu_request", "Row", "ids_of",
           "probe_line", "explain_probe"]
