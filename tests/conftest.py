"""Shared fixtures: real session directories, real TIFFs, real zarr stores, in tmp dirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from infra.fixtures import *  # noqa: F401,F403  loopback Slurm/SSH fixtures + markers

ROOT = Path(__file__).resolve().parents[1]
VNC = ROOT.parent / "shared" / "data" / "vnc-mito"


def blobs_volume(shape=(32, 96, 96), seed=0):
    """A small volume of dark spheres on noisy grey, and its truth (1 = sphere)."""
    rng = np.random.default_rng(seed)
    vol = rng.normal(150, 10, shape).astype(np.float32)
    gt = np.zeros(shape, np.uint8)
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    for _ in range(6):
        c = [rng.integers(6, s - 6) for s in shape]
        m = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 < 7**2
        vol[m] -= 60
        gt[m] = 1
    return np.clip(vol, 0, 255).astype(np.uint8), gt


@pytest.fixture
def blobs(tmp_path):
    raw, gt = blobs_volume()
    path = tmp_path / "blobs.tif"
    tifffile.imwrite(path, raw)
    return path, raw, gt


@pytest.fixture
def session(tmp_path):
    from sessions.workspace import init_session

    s = init_session(tmp_path / "session")
    yield s
    s.close()


@pytest.fixture
def ingested(session, blobs):
    from sessions.volumes import catalog

    path, raw, gt = blobs
    catalog.ingest(session, path, name="blobs", voxel_size=(8, 8, 8))
    return session, raw, gt


def run_cli(*args, check=False, env=None, cwd=None):
    """Run the real `fibtui` console entry point in a subprocess."""
    proc = subprocess.run([sys.executable, "-m", "fibtui", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"fibtui {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def db_snapshot(session_dir: Path) -> dict:
    """Every table's rows plus the file list: to prove a failed command changed nothing."""
    import sqlite3

    con = sqlite3.connect(session_dir / "session.sqlite")
    tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
    snap = {t: con.execute(f"select * from [{t}]").fetchall() for t in tables}
    con.close()
    snap["_files"] = sorted(str(p.relative_to(session_dir)) for p in session_dir.rglob("*")
                            if p.name != "session.sqlite")
    return snap
