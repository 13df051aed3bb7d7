"""Which filesystem holds a path: SQLite locking is unreliable on network filesystems."""

from __future__ import annotations

import os
from pathlib import Path

NETWORK_FS = ("nfs", "nfs4", "lustre", "gpfs", "cifs", "smb3", "smbfs", "fuse.sshfs", "beegfs", "ceph", "glusterfs")


def filesystem_type(path: str | Path, mounts: str = "/proc/mounts") -> tuple[str, str]:
    """(fstype, mount point) of the mount holding `path` (longest matching mount point)."""
    target = os.path.realpath(path)
    best = ("unknown", "/")
    best_len = -1
    try:
        lines = Path(mounts).read_text().splitlines()
    except OSError:
        return best
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mnt = parts[1].replace("\\040", " ")
        if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and len(mnt) > best_len:
            best, best_len = (parts[2], mnt), len(mnt)
    return best


def is_network_fs(fstype: str) -> bool:
    return fstype.lower() in NETWORK_FS or fstype.lower().startswith("fuse.")
