"""A submitter killed mid-submission leaves a submitted job or none, never a half-made one.

The real TUI in tmux submits a training and is killed with SIGKILL at several
moments after Enter; whatever moment it died, the next fibtui (reconcile, as
every refresh does) finds each job either submitted — with its executor id —
or gone with its directory. The mechanism is also tested on the two half
states themselves, made on purpose.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import tifffile
from conftest import blobs_volume
from tmuxpane import Pane

from remote.dispatch import Dispatcher
from sessions import jobs, labels, rounds
from sessions.jobfiles import append_event
from sessions.volumes import catalog
from sessions.workspace import init_session, open_session


@pytest.fixture
def base(tmp_path):
    raw, gt = blobs_volume((16, 64, 64), seed=3)
    tifffile.imwrite(tmp_path / "v.tif", raw)
    tifffile.imwrite(tmp_path / "crop.tif", gt[0:8, 0:32, 0:32] + 1, photometric="minisblack")
    s = init_session(tmp_path / "base")
    catalog.ingest(s, tmp_path / "v.tif", name="v", voxel_size=(8, 8, 8))
    labels.add_crop(s, rounds.new_round(s)["n"], "v", tmp_path / "crop.tif", (0, 0, 0), ["bg", "blob"])
    rounds.set_target(s, 1, "blob")
    s.close()
    return tmp_path


def check_whole(root) -> list[dict]:
    """After reconcile: every row submitted, every job directory a row's."""
    s = open_session(root)
    try:
        d = Dispatcher(s)
        d.reconcile(grace_s=0)
        rows = list(s.db["jobs"].rows)
        assert all(r["external_id"] for r in rows), rows
        dirs = {p.name for p in s.path("jobs").iterdir()}
        assert dirs == {r["id"] for r in rows}, (dirs, rows)
        for r in rows:
            assert (s.path(r["dir"]) / "spec.json").is_file()
        d.cancel_round(1)  # stop what did start
        return rows
    finally:
        s.close()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")
def test_tui_killed_mid_submission_leaves_a_whole_job_or_none(base):
    outcomes = []
    for i, delay in enumerate((0.0, 0.02, 0.05, 0.1, 0.2, 0.4, 1.0)):
        root = base / f"s{i}"
        shutil.copytree(base / "base", root)
        pane = Pane(f"{sys.executable} -m fibtui tui --session {root}", size=(100, 30))
        try:
            pane.wait("Rounds")
            pane.keys("t")
            pane.wait("Iterations", 10)
            pid = pane.pid
            pane.keys("Enter", pause=0)
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)
        finally:
            pane.close()
        outcomes.append(len(check_whole(root)))
    print("jobs after each kill:", outcomes)
    assert set(outcomes) <= {0, 1}


def test_reconcile_removes_a_job_never_handed_over(base):
    s = open_session(base / "base")
    try:
        spec = rounds.train_spec(s, rounds.get(s, 1), target="blob", iterations=5)
        job = jobs.create(s, 1, "train", spec, "local")  # the row and directory, then the submitter died
        stray = s.path("jobs", "r1-predict-1")
        stray.mkdir()  # a directory made just before its row: died in between
        assert Dispatcher(s).reconcile() == []  # too recent: another fibtui may be submitting it
        done = Dispatcher(s).reconcile(grace_s=0)
        assert done == [f"{job['id']}: removed (its submission never reached local)",
                        "r1-predict-1: removed (a job directory without a job)"]
        assert s.db["jobs"].count == 0 and not jobs.job_dir(s, job).exists() and not stray.exists()
    finally:
        s.close()


def test_reconcile_adopts_a_started_job_whose_id_was_never_recorded(base):
    s = open_session(base / "base")
    try:
        spec = rounds.train_spec(s, rounds.get(s, 1), target="blob", iterations=5)
        job = jobs.create(s, 1, "train", spec, "local")
        d = jobs.job_dir(s, job).resolve()
        proc = subprocess.Popen(["/bin/sh", "-c", "sleep 30", str(d)], start_new_session=True)
        append_event(d, "started", pid=proc.pid)  # the job ran; its submitter died before recording the PID
        try:
            assert Dispatcher(s).reconcile(grace_s=0) == [f"{job['id']}: adopted (local id {proc.pid})"]
            Dispatcher(s).refresh()
            assert jobs.get(s, job["id"])["state"] == "RUNNING"
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    finally:
        s.close()
