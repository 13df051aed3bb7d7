"""Training survives being stopped: SIGTERM writes a checkpoint and exits; a restart resumes it. A training
that diverges stops with a reason instead."""

import json
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import tifffile
import torch

from conftest import blobs_volume
from sessions import jobfiles


@pytest.fixture
def train_dir(tmp_path):
    from sessions import labels, rounds
    from sessions.volumes import catalog
    from sessions.workspace import init_session

    raw, gt = blobs_volume((16, 64, 64), seed=2)
    tifffile.imwrite(tmp_path / "v.tif", raw)
    tifffile.imwrite(tmp_path / "c.tif", gt + 1)
    s = init_session(tmp_path / "s")
    catalog.ingest(s, tmp_path / "v.tif", voxel_size=(8, 8, 8))
    rnd = rounds.new_round(s)
    labels.add_crop(s, rnd["n"], "v", tmp_path / "c.tif", (0, 0, 0), ["bg", "blob"])
    spec = rounds.train_spec(s, rnd, target="blob", iterations=40, patch=(8, 32, 32), base=4, levels=2,
                             threads=1, checkpoint_every=10)
    spec["kind"] = "train"
    d = tmp_path / "job"
    d.mkdir()
    jobfiles.atomic_write_json(d / "spec.json", spec)
    return d


def run_job(d):
    return subprocess.Popen([sys.executable, "-m", "remote.run", str(d)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def events(d, type_):
    return [e for e in jobfiles.read_events(d)[0] if e["type"] == type_]


def test_sigterm_checkpoints_and_restart_resumes(train_dir):
    d = train_dir
    proc = run_job(d)
    t0 = time.time()
    while not events(d, "progress") and time.time() - t0 < 60:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    assert not (d / "result.json").exists()
    stopped = events(d, "interrupted")[0]["step"]
    ck = torch.load(d / "checkpoint.pt", weights_only=False)
    assert ck["iteration"] == stopped and {"optimizer", "scheduler", "torch_rng", "numpy_rng"} <= set(ck)
    proc = run_job(d)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    assert events(d, "resumed")[0]["step"] == stopped
    assert json.loads((d / "result.json").read_text())["status"] == "completed"
    steps = [e["step"] for e in events(d, "progress")]
    assert steps[-1] == 40 and max(steps) == 40


def test_bad_spec_fails_with_result(train_dir):
    spec = json.loads((train_dir / "spec.json").read_text())
    spec["volume"]["path"] = str(train_dir / "nowhere.ome.zarr")
    jobfiles.atomic_write_json(train_dir / "spec.json", spec)
    proc = run_job(train_dir)
    assert proc.wait(timeout=60) == 1
    res = json.loads((train_dir / "result.json").read_text())
    assert res["status"] == "failed" and "nowhere.ome.zarr" in res["error"]


def _weights(path):
    return torch.load(path, weights_only=False)["model"]


def test_interrupted_twice_equals_uninterrupted(train_dir, tmp_path):
    """Same seed, CPU, one thread: stopping and resuming twice ends on bit-identical weights."""
    spec = json.loads((train_dir / "spec.json").read_text())
    jobfiles.atomic_write_json(train_dir / "spec.json", {**spec, "iterations": 150})  # long enough to interrupt
    ref = tmp_path / "ref"
    shutil.copytree(train_dir, ref)
    assert run_job(ref).wait(timeout=300) == 0
    d = train_dir
    for stop_after in (1, 2):  # stop once during the first run and once after the first resume
        proc = run_job(d)
        t0 = time.time()
        while len(events(d, "progress")) < stop_after * 2 and time.time() - t0 < 120:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 143
    assert len(events(d, "interrupted")) == 2
    assert run_job(d).wait(timeout=300) == 0
    a, b = _weights(ref / "model.pt"), _weights(d / "model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_kill_9_loses_at_most_one_checkpoint_interval(train_dir):
    d = train_dir
    proc = run_job(d)
    t0 = time.time()
    while not any(e["step"] >= 25 for e in events(d, "progress")) and time.time() - t0 < 120:
        time.sleep(0.05)
    killed_at = max(e["step"] for e in events(d, "progress"))
    proc.kill()
    proc.wait()
    assert run_job(d).wait(timeout=300) == 0
    resumed = events(d, "resumed")[0]["step"]
    assert killed_at - resumed <= 10  # checkpoint_every=10
    assert json.loads((d / "result.json").read_text())["status"] == "completed"


def test_diverging_training_fails_with_a_reason(train_dir):
    """A loss that is no longer finite ends the job as failed, saying when and what to do, instead of
    training on NaN weights to the end and saving them as the round's model."""
    d = train_dir
    spec = json.loads((d / "spec.json").read_text())
    spec["lr"] = 1e30
    jobfiles.atomic_write_json(d / "spec.json", spec)
    proc = run_job(d)
    proc.wait(timeout=120)
    result = json.loads((d / "result.json").read_text())
    assert result["status"] == "failed"
    assert re.search(r"FloatingPointError: the loss is (nan|inf|-inf) at iteration \d+", result["error"])
    assert "lower --lr" in result["error"]
    assert not (d / "model.pt").exists()
