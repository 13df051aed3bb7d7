"""The executor contract: how a job directory becomes a running process somewhere.

Like submitit's `Executor`: the session hands over a job directory; the
executor starts `python -m remote.run <dir>` its own way and reports states
for many jobs in one call (one `squeue` for all, not one per job).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class JobStatus:
    state: str            # PENDING, RUNNING, or a terminal state from sessions.jobs.TERMINAL
    reason: str | None = None


class Executor(ABC):
    name: str

    @abstractmethod
    def submit(self, job_dir: Path) -> str:
        """Start the job; return the executor's id for it."""

    @abstractmethod
    def status(self, jobs: list[tuple[str, Path]]) -> dict[str, JobStatus]:
        """States of many (external_id, job_dir) pairs at once, keyed by external_id."""

    @abstractmethod
    def cancel(self, external_id: str, job_dir: Path) -> None:
        """Stop the job; idempotent."""
