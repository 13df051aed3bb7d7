"""`fibtui doctor`: what works here — terminal, session filesystem, GPU, Slurm, SSH.

Each check returns (name, ok, detail); nothing here changes anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

Check = tuple[str, bool | None, str]  # None: informational


def terminal() -> list[Check]:
    from rich.console import Console

    c = Console()
    colour = c.color_system or "none"
    hint = "" if colour == "truecolor" else (
        "; over SSH set COLORTERM=truecolor if your terminal supports it (OpenSSH does not forward it)")
    graphics = "kitty graphics possible (opt-in)" if os.environ.get("TERM") == "xterm-kitty" else "half-block cells"
    return [
        ("terminal colours", colour == "truecolor", f"{colour} (TERM={os.environ.get('TERM', '?')}, "
                                                     f"COLORTERM={os.environ.get('COLORTERM', 'unset')}){hint}"),
        ("terminal images", None, graphics + (" · inside tmux" if os.environ.get("TMUX") else "")),
    ]


def session_fs(session_dir: Path | None) -> list[Check]:
    from sessions.fsinfo import filesystem_type, is_network_fs

    path = session_dir or Path.cwd()
    fstype, mnt = filesystem_type(path)
    if is_network_fs(fstype):
        return [("session filesystem", False, f"{path} is on {fstype} ({mnt}): SQLite locking is unreliable there; "
                                              "keep session.sqlite on a local or locking-safe filesystem")]
    return [("session filesystem", True, f"{path} is on {fstype} ({mnt})")]


def compute() -> list[Check]:
    import torch

    if torch.cuda.is_available():
        return [("GPU", True, f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})")]
    return [("GPU", None, f"none visible here; jobs use the CPU (torch {torch.__version__})")]


def slurm() -> list[Check]:
    if not shutil.which("sinfo"):
        return [("slurm", None, "sinfo not on PATH: only the local and ssh executors can run from here")]
    try:
        p = subprocess.run(["sinfo", "-h", "-o", "%P %a %D %T"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return [("slurm", False, "sinfo did not answer in 15 s: is slurmctld reachable?")]
    if p.returncode:
        return [("slurm", False, f"sinfo failed: {(p.stderr.strip().splitlines() or ['?'])[-1]}")]
    parts = sorted({line.split()[0] for line in p.stdout.splitlines() if line.strip()})
    return [("slurm", True, f"partitions: {', '.join(parts)}")]


def ssh(config: str | None = None) -> list[Check]:
    from remote.executors.named import executor_for
    from remote.profiles import all_profiles
    from sessions.errors import FibError

    try:
        profiles = all_profiles(config)
    except FibError as e:
        return [("config", False, str(e))]
    out: list[Check] = []
    for name, prof in profiles.items():
        if not prof.ssh_host:
            continue
        try:
            ex = executor_for(f"ssh:{name}", config)
            code, _, err = ex.conn.run("true", timeout=20)
            out.append((f"ssh {name}", code == 0, f"{prof.ssh_host} reachable" if code == 0 else err.strip()))
            ex.close()
        except FibError as e:
            out.append((f"ssh {name}", False, str(e)))
    return out or [("ssh", None, "no ssh profiles configured (fibtui.toml [profiles.<name>] ssh_host = ...)")]


def run_all(session_dir: Path | None, config: str | None) -> list[Check]:
    return terminal() + session_fs(session_dir) + compute() + slurm() + ssh(config)
