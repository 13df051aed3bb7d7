"""Executors from a name: `local`, `slurm`, `slurm:<profile>`, `ssh:<profile>`.

The name is what the session stores with each job (`Executor.name`), so a
restarted CLI/TUI rebuilds the same executor — same cluster, same host — from
it. Profiles come from fibtui.toml (remote/profiles.py).
"""

from __future__ import annotations

import os

from remote.executors.base import Executor
from sessions.errors import FibError

KINDS = ("local", "slurm", "ssh")


def executor_for(name: str, config: str | os.PathLike | None = None) -> Executor:
    from remote.profiles import load_profile

    kind, _, prof = name.partition(":")
    if kind not in KINDS:
        raise FibError(f"executor {name!r} is unknown; choose local, slurm, slurm:<profile> or ssh:<profile>")
    if kind == "local":
        if prof:
            raise FibError(f"executor {name!r}: local takes no profile; use `local`")
        from remote.executors.local import LocalExecutor

        return LocalExecutor()
    profile = load_profile(prof, config) if prof else None
    if kind == "slurm":
        from remote.executors.slurm import SlurmExecutor

        return SlurmExecutor(profile)
    if profile is None or not profile.ssh_host:
        raise FibError(f"executor {name!r} needs a profile with ssh_host: --executor ssh:<profile>, and "
                       f"[profiles.<profile>] ssh_host = \"<Host alias from ~/.ssh/config>\" in fibtui.toml")
    from remote.executors.ssh import SSHExecutor

    return SSHExecutor(profile=profile)


__all__ = ["executor_for", "KINDS"]
