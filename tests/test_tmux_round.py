"""A whole round in a real terminal: tmux at 80×24, keys and the command palette only.

The TUI runs as the user runs it (`fibtui tui --session S` in a tmux pane);
the test types as a person would (send-keys) and reads the screen
(capture-pane) until the held-out IoU appears on it.
"""

from __future__ import annotations

import shutil
import sys
import time

import pytest
import tifffile
from conftest import blobs_volume
from tmuxpane import Pane

from sessions import interventions, jobs, rounds
from sessions.volumes import catalog
from sessions.workspace import init_session, open_session

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")]


def test_a_round_by_keys_and_palette_at_80x24(tmp_path):
    raw, gt = blobs_volume((16, 64, 64), seed=3)
    tifffile.imwrite(tmp_path / "v.tif", raw)
    tifffile.imwrite(tmp_path / "crop.tif", gt[0:8, 0:32, 0:32] + 1, photometric="minisblack")
    s = init_session(tmp_path / "s")
    catalog.ingest(s, tmp_path / "v.tif", name="v", voxel_size=(8, 8, 8))
    rounds.new_round(s)
    s.close()
    fibtui = f"{sys.executable} -m fibtui"
    env = f"cd {tmp_path} && TERM=xterm-256color COLORTERM=truecolor"
    pane = Pane(f"{env} {fibtui} tui --session {tmp_path / 's'}; sleep 30")
    try:
        pane.wait("Rounds")
        # New round (key N), target left empty
        pane.keys("N")
        pane.wait("New round")
        pane.keys("Enter")
        pane.wait("round 2 started")
        # Add crop (command palette): labels path, then offset, then classes
        pane.keys("C-p")
        pane.type("Add crop")
        time.sleep(0.5)
        pane.keys("Enter")
        pane.wait("Labels file")
        pane.type(str(tmp_path / "crop.tif"))
        pane.tab()
        pane.type("0,0,0")
        pane.tab(2)
        pane.type("bg,blob")
        pane.keys("Enter")
        pane.wait("crop 1 added to round 2")
        # Draw held-out regions (key h): size, count 1, seed; it asks first
        pane.keys("h")
        pane.wait("Size Z,Y,X")
        pane.type("8,16,16")
        pane.tab()
        pane.type("1")
        pane.tab(2)
        pane.type("4")
        pane.keys("Enter")
        pane.wait("frozen once drawn")
        pane.keys("y")
        pane.wait("held-out regions drawn")
        s = open_session(tmp_path / "s")
        off = tuple(int(v) for v in s.db["holdout"].get(1)["offset"].split(","))
        s.close()
        tifffile.imwrite(tmp_path / "region.tif", gt[off[0]:off[0] + 8, off[1]:off[1] + 16, off[2]:off[2] + 16] + 1,
                         photometric="minisblack")
        # Label held-out region (key H): region 1 is prefilled, focus on the labels file
        pane.keys("H")
        pane.wait("Label held-out region")
        pane.type(str(tmp_path / "region.tif"))
        pane.keys("Enter")
        pane.wait("frozen once attached")
        pane.keys("y")
        pane.wait("held-out region 1 labelled")
        # Train (palette): round, target, iterations, patch, batch, lr, base, levels, stem, kernel grid, seed, threads
        pane.keys("C-p")
        pane.type("Train")
        time.sleep(0.5)
        pane.keys("Enter")
        pane.wait("Iterations")
        for value in ("", "blob", "12", "8,32,32", "1", "", "4", "2", "", "", "", "1"):
            if value:
                pane.type(value)
            pane.tab()
        pane.keys("Enter")
        pane.wait("submitted r2-train-1")
        s = open_session(tmp_path / "s")
        deadline = time.monotonic() + 180
        while jobs.get(s, "r2-train-1")["state"] in jobs.ACTIVE and time.monotonic() < deadline:
            time.sleep(0.5)
        s.close()
        pane.wait("done", 30)
        # Predict (key p) and Evaluate (palette)
        pane.keys("p")
        pane.wait("Block Z,Y,X")
        pane.keys("Enter")
        pane.wait("submitted r2-predict-1")
        time.sleep(1)
        s = open_session(tmp_path / "s")
        deadline = time.monotonic() + 180
        while jobs.get(s, "r2-predict-1")["state"] in jobs.ACTIVE and time.monotonic() < deadline:
            time.sleep(0.5)
        assert jobs.get(s, "r2-predict-1")["state"] == "COMPLETED"
        s.close()
        pane.keys("C-p")
        pane.type("Evaluate")
        time.sleep(0.5)
        pane.keys("Enter")
        pane.wait("Threshold")
        pane.keys("Enter")
        pane.wait("submitted r2-evaluate-1")
        screen = pane.wait("IoU 0.", 180)
        assert "round 2" in screen
    finally:
        pane.close()
    s = open_session(tmp_path / "s")
    try:
        acts = [e["action"] for e in interventions.entries(s)]
        assert acts[:4] == ["round new", "crop added", "held-out drawn", "held-out labelled"]
        assert acts.count("job submitted") == 3
        assert {e["via"] for e in interventions.entries(s)} == {"tui"}
        assert {e["author"] for e in interventions.entries(s)} == {interventions.current_user()}
    finally:
        s.close()
