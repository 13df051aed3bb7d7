"""The embedded default: jobs as detached local processes.

`start_new_session=True` puts the job in its own process group, so closing
the terminal, the TUI or the SSH session does not kill it; a later `fibtui`
finds it again by PID (checked against the job directory in its command
line, so a reused PID is never mistaken for the job).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from remote.executors.base import Executor, JobStatus, deleted_reason, read_tail, usage_from_events
from sessions.jobfiles import STDERR, STDOUT, read_result

CANCELLED = "cancelled"  # marker file: tells a cancelled job from a crashed one


PF_KTHREAD = 0x00200000  # /proc/<pid>/stat flags: a kernel thread (its cmdline is empty for good)


def _proc_state(pid: int, job_dir: Path) -> str | None:
    """'alive', 'zombie' or None (gone, or the PID now belongs to someone else).

    A process in the middle of exec has an empty cmdline for a moment (the kernel
    sets argv up after the close-on-exec that lets `Popen` return): that is our
    job starting, not a stranger, unless it is a kernel thread.
    """
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    if fields[0] == "Z":
        return "zombie"
    if not cmd:
        return None if int(fields[6]) & PF_KTHREAD else "alive"
    return "alive" if str(job_dir).encode() in cmd.split(b"\0") else None


class LocalExecutor(Executor):
    """GPU-hours: the GPUs the job saw (its `started` event, 0 on CPU) × elapsed wall time."""

    name = "local"
    max_poll_s = 2.0  # a status query is a look at /proc: cheap

    def __init__(self):
        self._children: dict[int, subprocess.Popen] = {}

    def submit(self, job_dir: Path) -> str:
        job_dir = Path(job_dir).resolve()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(job_dir / STDOUT, "ab") as out, open(job_dir / STDERR, "ab") as err:
            proc = subprocess.Popen([sys.executable, "-m", "remote.run", str(job_dir)], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err, cwd=job_dir, env=env, start_new_session=True)
        self._children[proc.pid] = proc
        return str(proc.pid)

    def status(self, jobs: list[tuple[str, Path]]) -> dict[str, JobStatus]:
        out = {}
        for ext, job_dir in jobs:
            pid = int(ext)
            job_dir = Path(job_dir).resolve()
            child = self._children.get(pid)
            if child is not None and child.poll() is None:
                state = "alive"  # our own child, not yet exited: no need to ask /proc
            else:
                self._children.pop(pid, None)  # reaped, if it was ours
                state = _proc_state(pid, job_dir)
            if not job_dir.is_dir():
                if state == "alive":
                    self._kill(pid)
                out[ext] = JobStatus("FAILED", deleted_reason(job_dir))
                continue
            elapsed, gpus = usage_from_events(job_dir, running=state == "alive")
            if state == "alive":
                out[ext] = JobStatus("RUNNING", None, elapsed, gpus)
                continue
            res = read_result(job_dir)
            if res is None and (job_dir / CANCELLED).exists():
                out[ext] = JobStatus("CANCELLED", "cancelled by the curator", elapsed, gpus)
            elif res is None:
                out[ext] = JobStatus("FAILED", "process ended without a result; see stderr.log", elapsed, gpus)
            elif res.get("status") == "completed":
                out[ext] = JobStatus("COMPLETED", None, elapsed, gpus)
            else:
                out[ext] = JobStatus("FAILED", res.get("error", "failed"), elapsed, gpus)
        return out

    @staticmethod
    def _kill(pid: int) -> None:
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def log_tail(self, external_id: str, job_dir: Path, lines: int = 20) -> str:
        return read_tail(job_dir, lines)

    def results(self, external_id: str, job_dir: Path) -> Path:
        return Path(job_dir)

    def cancel(self, external_id: str, job_dir: Path) -> None:
        pid = int(external_id)
        if _proc_state(pid, Path(job_dir).resolve()) == "alive":
            if Path(job_dir).is_dir():
                (Path(job_dir) / CANCELLED).touch()
            self._kill(pid)
