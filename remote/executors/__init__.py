"""Executors by name. Only `local` exists so far; Slurm and SSH share its contract."""

from remote.executors.base import Executor, JobStatus
from remote.executors.local import LocalExecutor

EXECUTORS = {"local": LocalExecutor}


def get_executor(name: str) -> Executor:
    from sessions.errors import FibError

    try:
        return EXECUTORS[name]()
    except KeyError:
        raise FibError(f"executor {name!r} is unknown; choose one of: {', '.join(EXECUTORS)}") from None


__all__ = ["Executor", "JobStatus", "LocalExecutor", "get_executor", "EXECUTORS"]
