"""Painting in a real terminal: tmux at 80×24, keys only; the TUI is killed (-9) mid-work, restarted,
offers the autosave back, and commits exactly the voxels painted before the kill."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
import zarr
from tmuxpane import Pane

from sessions import annotations, interventions, labels, rounds
from sessions.annotations import Annotation
from sessions.volumes import catalog
from sessions.workspace import init_session, open_session

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_paint_by_keys_survive_a_kill_and_commit_at_80x24(tmp_path):
    s = init_session(tmp_path / "s")
    raw = np.random.default_rng(2).integers(0, 256, (16, 64, 64), dtype=np.uint8)
    catalog.write_volume(s, "vol", raw, (8, 8, 8), source="test")
    rounds.new_round(s)
    tifffile.imwrite(tmp_path / "crop.tif", np.ones((1, 4, 4), np.uint8), photometric="minisblack")
    labels.add_crop(s, 1, "vol", tmp_path / "crop.tif", (0, 0, 0), classes=["bg", "mito"])
    s.close()
    tui = f"{sys.executable} -m fibtui tui --session {tmp_path / 's'}"
    # the second start is what the curator does after the connection dropped
    pane = Pane(f"cd {tmp_path} && export TERM=xterm-256color COLORTERM=truecolor; {tui}; {tui}; sleep 30")
    try:
        pane.wait("Rounds")
        pane.keys("v")
        pane.wait("z 8/15")
        pane.keys("+", "+")
        pane.keys("b", "d", "c")
        pane.wait("paint mito")
        for key in ("Space", "Right", "Space", "Down", "Space"):
            pane.keys(key)
        pane.wait("3 painted")
        deadline = time.monotonic() + 10
        while ((a := Annotation.load(tmp_path / "s")) is None or len(a.vox) < 3) and time.monotonic() < deadline:
            time.sleep(0.1)
        painted = dict(Annotation.load(tmp_path / "s").vox)
        first = children(pane.pid)
        assert len(first) == 1
        os.kill(first[0], signal.SIGKILL)   # the TUI, not the shell: the next command starts it again
        pane.wait("Rounds")
        pane.keys("v")
        pane.wait("Restore uncommitted work")
        pane.keys("y")
        pane.wait("restored")
        pane.keys("C")
        pane.wait("committed to round 1")
    finally:
        pane.close()
    s = open_session(tmp_path / "s")
    try:
        row = next(s.db["crops"].rows_where("source like 'painted:%'"))
        arr = zarr.open_array(str(s.path(row["path"])), mode="r")[:]
        off = tuple(int(v) for v in row["offset"].split(","))
        ann = Annotation("vol", (16, 64, 64))
        want = np.zeros(arr.shape, np.uint8)
        for k, v in painted.items():
            z, y, x = ann.unpack([k])[0]
            want[z - off[0], y - off[1], x - off[2]] = v
        assert np.array_equal(arr, want) and int((arr == 2).sum()) == 3
        acts = [e["action"] for e in interventions.entries(s)]
        assert acts[-1] == "crop painted"
        assert not annotations.autosave_path(tmp_path / "s").exists()
    finally:
        s.close()
