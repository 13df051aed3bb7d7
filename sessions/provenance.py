"""What code produced an artefact: recorded in every job spec, so a number can be traced years later."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def code_version() -> dict:
    src = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=5).stdout.strip()) if commit else None
    except (OSError, subprocess.TimeoutExpired):
        commit = dirty = None
    return {"fibtui": _version("fibtui"), "git_commit": commit, "git_dirty": dirty,
            "python": platform.python_version(), "torch": _version("torch"), "zarr": _version("zarr"),
            "numpy": _version("numpy")}
