"""A tiny finished session for the record's tests (report, export, reproduce): one round trained,
predicted and evaluated on a 16×64×64 blobs volume in a few seconds, with a message and a note."""

from __future__ import annotations

import shutil
from pathlib import Path

import tifffile

from conftest import blobs_volume

TINY_TRAIN = ["--iterations", "12", "--patch", "8,32,32", "--batch", "1", "--base", "4", "--levels", "2",
              "--threads", "1", "--seed", "0"]


def cli(*args) -> None:
    from fibtui.cli import main

    rc = main([str(a) for a in args])
    assert rc == 0, f"fibtui {' '.join(map(str, args))} exited {rc}"


def make_recorded(tmp: Path) -> Path:
    """The session directory of one complete round (train → predict → evaluate on 2 held-out regions)."""
    raw, gt = blobs_volume((16, 64, 64), seed=3)
    tifffile.imwrite(tmp / "v.tif", raw)
    s = tmp / "s"
    cli("init", s)
    cli("ingest", tmp / "v.tif", "--session", s, "--voxel-size", "8,8,8", "--name", "v")
    cli("holdout", "draw", "--session", s, "--count", "2", "--size", "8,16,16", "--within", "0:16,32:64,0:64",
        "--seed", "0")
    from sessions.workspace import open_session

    ss = open_session(s)
    regions = list(ss.db["holdout"].rows_where(order_by="id"))
    ss.close()
    for r in regions:
        o = [int(v) for v in r["offset"].split(",")]
        tifffile.imwrite(tmp / f"h{r['id']}.tif", gt[o[0]:o[0] + 8, o[1]:o[1] + 16, o[2]:o[2] + 16] + 1)
        cli("holdout", "label", "--session", s, "--region", r["id"], "--labels", tmp / f"h{r['id']}.tif",
            "--classes", "background,blob")
    cli("round", "new", "--session", s, "--target", "blob")
    tifffile.imwrite(tmp / "c1.tif", gt[0:8, 0:32, 0:32] + 1)
    cli("crop", "add", "--session", s, "--labels", tmp / "c1.tif", "--offset", "0,0,0")
    cli("msg", "add", "How many blobs are there, and how dense?", "--session", s, "--kind", "question",
        "--author", "scientist")
    cli("note", "add", "labelled one corner crop", "--session", s, "--why", "blobs are easy")
    cli("round", "train", "--session", s, *TINY_TRAIN)
    cli("round", "predict", "--session", s)
    cli("round", "eval", "--session", s)
    return s


def copy_session(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
