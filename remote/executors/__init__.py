"""Executors by name: `local`, `slurm[:<profile>]`, `ssh:<profile>` (see remote.executors.named)."""

from remote.executors.base import Executor, JobStatus
from remote.executors.local import LocalExecutor
from remote.executors.named import KINDS, executor_for

EXECUTORS = KINDS


def get_executor(name: str) -> Executor:
    return executor_for(name)


__all__ = ["Executor", "JobStatus", "LocalExecutor", "get_executor", "EXECUTORS"]
