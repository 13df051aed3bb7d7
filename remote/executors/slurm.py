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
from pathlib import Path

from remote.executors.base import Executor, JobStatus
from remote.profiles import ClusterProfile
from remote.sbatch import SCRIPT, sbatch_script
from sessions.errors import FibError
from sessions.jobfiles import SPEC, STDERR, read_json, read_result, tail

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


class SlurmExecutor(Executor):
    name = "slurm"

    def __init__(self, profile: ClusterProfile | None = None, *, shell: Shell | None = None):
        self.profile = profile or ClusterProfile()
        self.shell = shell or Shell()
        self.python = self.profile.python or sys.executable
        if profile is not None and profile.name != "default":
            self.name = f"slurm:{profile.name}"  # stored with each job: a fresh process can rebuild this executor

    # -- the pieces the SSH executor reuses with a remote shell and remote paths
    def script(self, job_dir: Path, run_dir: str) -> str:
        return sbatch_script(read_json(Path(job_dir) / SPEC), run_dir, self.profile, self.python)

    def sbatch(self, script_path: str, run_dir: str, job_label: str) -> str:
        proc = self.shell.run(["sbatch", "--parsable", script_path], cwd=run_dir)
        if proc.returncode != 0:
            raise FibError(f"sbatch refused job {job_label} (profile {self.profile.name!r}): "
                           f"{_one_line(proc.stderr or proc.stdout)}; check partition/account/gres/time "
                           f"in [profiles.{self.profile.name}] (`sinfo -s` lists partitions)")
        out = proc.stdout.strip().splitlines()
        ext = out[-1].split(";")[0].strip() if out else ""
        if not ext.isdigit():
            raise FibError(f"sbatch gave no job id for {job_label} (it said {proc.stdout.strip()!r})")
        return ext

    def query(self, ids: list[str]) -> dict[str, tuple[str, str]]:
        """{id: (Slurm state, reason)} from ONE squeue call; ids Slurm has forgotten are absent."""
        if not ids:
            return {}
        proc = self.shell.run(["squeue", "--noheader", "--states=all", "--jobs=" + ",".join(ids),
                               "--format=%i|%T|%r"])
        if proc.returncode != 0:
            if "Invalid job id" in proc.stderr:  # a single forgotten id: squeue errors instead of listing nothing
                return {}
            raise FibError(f"squeue failed on {self.shell.where}: {_one_line(proc.stderr)}")
        out = {}
        for line in proc.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) >= 3 and parts[0] in ids:
                out[parts[0]] = (parts[1], parts[2])
        missing = [i for i in ids if i not in out]
        if missing:
            out.update(self._sacct(missing))
        return out

    def _sacct(self, ids: list[str]) -> dict[str, tuple[str, str]]:
        """Jobs older than MinJobAge: accounting, if the cluster keeps it (one call)."""
        try:
            proc = self.shell.run(["sacct", "--noheader", "--parsable2", "--allocations", "--jobs=" + ",".join(ids),
                                   "--format=JobIDRaw,State,Reason"])
        except FibError:
            return {}
        if proc.returncode != 0:
            return {}
        out = {}
        for line in proc.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) >= 2 and parts[0] in ids:
                out[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
        return out

    def exit_code(self, ext: str) -> str | None:
        proc = self.shell.run(["scontrol", "--oneliner", "show", "job", ext])
        if proc.returncode != 0:
            return None
        for tok in proc.stdout.split():
            if tok.startswith("ExitCode="):
                return tok.split("=", 1)[1]
        return None

    def scancel(self, ext: str) -> None:
        proc = self.shell.run(["scancel", ext])
        if proc.returncode != 0 and "Invalid job id" not in proc.stderr and "already completing" not in proc.stderr:
            raise FibError(f"scancel {ext} failed on {self.shell.where}: {_one_line(proc.stderr)}")

    def settle(self, states: dict[str, tuple[str, str]], jobs: list[tuple[str, Path]]) -> dict[str, JobStatus]:
        """Slurm states + local job directories (already synced) → JobStatus for every job."""
        out = {}
        for ext, job_dir in jobs:
            job_dir = Path(job_dir)
            res = read_result(job_dir)
            if ext in states:
                st, reason = states[ext]
                code = None
                if st.split()[0].rstrip("+") in ("FAILED", "SPECIAL_EXIT") and res is None:
                    code = self.exit_code(ext)
                out[ext] = map_state(st, reason, res, self.profile, _last_line(job_dir / STDERR), code)
            elif res is not None:  # Slurm forgot it, the directory remembers
                out[ext] = (JobStatus("COMPLETED") if res.get("status") == "completed"
                            else JobStatus("FAILED", res.get("error", "failed")))
            else:
                out[ext] = JobStatus("FAILED", f"Slurm no longer knows job {ext} and it left no result.json; "
                                               f"see {job_dir / STDERR}")
        return out

    # -- the Executor contract
    def submit(self, job_dir: Path) -> str:
        job_dir = Path(job_dir).resolve()
        text = self.script(job_dir, str(job_dir))
        path = job_dir / SCRIPT
        path.write_text(text)
        return self.sbatch(str(path), str(job_dir), job_dir.name)

    def status(self, jobs: list[tuple[str, Path]]) -> dict[str, JobStatus]:
        jobs = [(str(e), Path(d)) for e, d in jobs]
        return self.settle(self.query([e for e, _ in jobs]), jobs)

    def cancel(self, external_id: str, job_dir: Path) -> None:
        self.scancel(str(external_id))


__all__ = ["SlurmExecutor", "Shell", "map_state"]
