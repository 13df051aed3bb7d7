"""The executor contract: how a job directory becomes a running process somewhere.

Like submitit's `Executor`: the session hands over a job directory; the
executor starts `python -m remote.run <dir>` its own way and reports states
for many jobs in one call (one `squeue` for all, not one per job), with the
resources each used so far (elapsed seconds, GPUs allocated), the tail of its
stderr, and its results (the job directory, synced back where it ran elsewhere).
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from sessions.jobfiles import EVENTS, STDERR, tail


@dataclass(frozen=True)
class JobStatus:
    state: str            # PENDING, RUNNING, or a terminal state from sessions.jobs.TERMINAL
    reason: str | None = None
    elapsed_s: float | None = None   # wall time the job has run so far (all its runs); None: unknown
    gpus: int | None = None          # GPUs allocated to it (0 on CPU); None: unknown
    gpu_seconds: float | None = None  # when parts of a job hold different GPUs (array tasks + final step)

    @property
    def gpu_hours(self) -> float | None:
        if self.gpu_seconds is not None:
            return self.gpu_seconds / 3600.0
        if self.elapsed_s is None or self.gpus is None:
            return None
        return self.gpus * self.elapsed_s / 3600.0


def deleted_reason(job_dir: Path, where: str = "") -> str:
    return f"job directory {where}{job_dir} was deleted while the job ran; the job was stopped"


def usage_from_events(job_dir: Path, running: bool, now: float | None = None) -> tuple[float | None, int | None]:
    """(elapsed seconds over all runs, GPUs visible) from the job's own events.jsonl.

    Each `started` event begins a run (a restart after preemption is a new run);
    a run lasts until the last event before the next `started`, or until now
    while the job still runs. `started` carries `gpus` (remote/run.py).
    """
    try:
        raw = (Path(job_dir) / EVENTS).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None, None
    total, start, last, gpus = 0.0, None, None, None
    for line in raw.splitlines():
        try:
            ev = json.loads(line)
            t = float(ev["t"])
        except (ValueError, KeyError, TypeError):
            continue
        if ev.get("type") == "started":
            if start is not None and last is not None:
                total += max(0.0, last - start)
            start = t
            if isinstance(ev.get("gpus"), int):
                gpus = ev["gpus"] if gpus is None else max(gpus, ev["gpus"])
        last = t
    if start is None:
        return None, None
    end = (now if now is not None else time.time()) if running else last
    total += max(0.0, end - start)
    return total, (gpus if gpus is not None else 0)


class Executor(ABC):
    name: str
    #: the longest pause between two status queries while waiting (cheap executors poll faster)
    max_poll_s: float = 30.0
    #: whether the job directory is readable here while the job runs (shared filesystem or local):
    #: events can then be folded between status queries without asking the scheduler
    events_local: bool = True

    @abstractmethod
    def submit(self, job_dir: Path) -> str:
        """Start the job; return the executor's id for it."""

    @abstractmethod
    def status(self, jobs: list[tuple[str, Path]]) -> dict[str, JobStatus]:
        """States (+ elapsed, GPUs) of many (external_id, job_dir) pairs at once, keyed by external_id."""

    @abstractmethod
    def cancel(self, external_id: str, job_dir: Path) -> None:
        """Stop the job; idempotent."""

    @abstractmethod
    def log_tail(self, external_id: str, job_dir: Path, lines: int = 20) -> str:
        """The last `lines` lines of the job's stderr.log ('' when there is none yet)."""

    @abstractmethod
    def results(self, external_id: str, job_dir: Path) -> Path:
        """The job directory with everything the job wrote, here (synced back where it ran elsewhere)."""

    def cancel_many(self, jobs: list[tuple[str, Path]]) -> None:
        """Stop many jobs in one go (one `scancel` for Slurm); idempotent."""
        for ext, d in jobs:
            self.cancel(ext, d)

    def preflight(self) -> None:
        """Cheap check before a job is created: the host answers and has fibtui's environment.

        Raises FibError with one line saying what to fix; the session is not touched yet."""

    def close(self) -> None:
        """Release connections (SSH); harmless to call twice."""


def read_tail(job_dir: Path, lines: int) -> str:
    """stderr.log's last lines; for a job array also each task's (tasks/<i>/stderr.log), prefixed `task i:`."""
    job_dir = Path(job_dir)
    out = [ln for ln in tail(job_dir / STDERR, lines).splitlines() if ln.strip()]
    tasks = sorted((p for p in job_dir.glob("tasks/*") if p.name.isdigit()), key=lambda p: int(p.name))
    for t in tasks:
        out += [f"task {t.name}: {ln}" for ln in tail(t / STDERR, lines).splitlines() if ln.strip()]
    return "\n".join(out[-lines:]) if lines > 0 else ""


__all__ = ["Executor", "JobStatus", "usage_from_events", "deleted_reason", "read_tail"]
