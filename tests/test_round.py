"""A whole labeling round through the real CLI and real job processes, and the job lifecycle.

These spawn real training/prediction processes (small nets, few iterations).
"""

import json
import signal
import subprocess
import sys
import time

import pytest
import tifffile

from conftest import blobs_volume, run_cli

TRAIN = ["--patch", "16,48,48", "--base", "8", "--levels", "3", "--threads", "2"]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A session with a volume, round 1 (target blob), two crops and labelled held-out regions."""
    tmp = tmp_path_factory.mktemp("round")
    raw, gt = blobs_volume((32, 96, 96), seed=1)
    tifffile.imwrite(tmp / "vol.tif", raw)
    s = tmp / "s"
    run_cli("init", s, check=True)
    run_cli("ingest", tmp / "vol.tif", "--session", s, "--voxel-size", "8,8,8", check=True)
    run_cli("holdout", "draw", "--session", s, "--count", "2", "--size", "16,32,32", "--within", "0:32,48:96,0:96",
            "--seed", "0", check=True)
    for r in json.loads(run_cli("holdout", "list", "--session", s, "--json", check=True).stdout):
        o = [int(v) for v in r["offset"].split(",")]
        tifffile.imwrite(tmp / f"h{r['id']}.tif", gt[o[0]:o[0] + 16, o[1]:o[1] + 32, o[2]:o[2] + 32] + 1)
        run_cli("holdout", "label", "--session", s, "--region", r["id"], "--labels", tmp / f"h{r['id']}.tif",
                "--classes", "background,blob", check=True)
    run_cli("round", "new", "--session", s, "--target", "blob", check=True)
    tifffile.imwrite(tmp / "c1.tif", gt[:, :48, :] + 1)
    run_cli("crop", "add", "--session", s, "--labels", tmp / "c1.tif", "--offset", "0,0,0", check=True)
    return tmp, s, gt


def status(s):
    return json.loads(run_cli("status", "--session", s, "--json", check=True).stdout)


def wait_state(s, job_id, states=("COMPLETED", "FAILED", "CANCELLED"), timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        for r in status(s)["rounds"]:
            for j in r["jobs"]:
                if j["id"] == job_id and j["state"] in states:
                    return j
        time.sleep(1)
    raise AssertionError(f"{job_id} did not reach {states} in {timeout}s")


def test_full_round_learns_and_is_recorded(labelled):
    tmp, s, _ = labelled
    run_cli("round", "train", "--session", s, "--iterations", "40", *TRAIN, check=True)
    run_cli("round", "predict", "--session", s, check=True)
    run_cli("round", "eval", "--session", s, check=True)
    st = status(s)
    rnd = st["rounds"][0]
    assert [j["state"] for j in rnd["jobs"]] == ["COMPLETED"] * 3
    assert rnd["metrics"]["iou"] > 0.5, rnd["metrics"]  # dark spheres on grey: learnable in 40 iterations
    assert 0 <= rnd["metrics"]["f1"] <= 1 and rnd["metrics"]["objects_true_heldout"] >= 1
    m = rnd["metrics"]  # object-level scores beside the voxel scores
    assert {"object_precision", "object_recall", "object_f1", "count_error", "objects_matched_heldout"} <= set(m)
    assert m["object_f1"] > 0.5, m  # the dark spheres are found as objects too
    # every artefact tied to its inputs
    job_dir = s / "jobs" / "r1-train-1"
    spec = json.loads((job_dir / "spec.json").read_text())
    assert spec["target_name"] == "blob" and spec["crops"][0]["id"] == 1
    from fibtui import __version__
    assert spec["code"]["fibtui"] == __version__ and spec["code"]["torch"]  # which code made this model
    assert (job_dir / "model.pt").exists() and (job_dir / "events.jsonl").exists()
    import sqlite3
    con = sqlite3.connect(s / "session.sqlite")
    assert con.execute("select count(*) from metrics where job='r1-train-1' and name='loss'").fetchone()[0] >= 8
    assert con.execute("select count(*) from checkpoints where job='r1-train-1'").fetchone()[0] >= 1


def test_round_two_fine_tunes_from_round_one(labelled):
    tmp, s, gt = labelled
    if not any(j["id"] == "r1-train-1" and j["state"] == "COMPLETED" for j in status(s)["rounds"][0]["jobs"]):
        pytest.skip("needs test_full_round_learns_and_is_recorded")
    run_cli("round", "new", "--session", s, check=True)
    tifffile.imwrite(tmp / "c2.tif", gt[:8, 48:56, :] + 1)  # a thin extra slab of labels
    # the thin slab lies outside the held-out regions only if it doesn't overlap them; find a free one
    proc = run_cli("crop", "add", "--session", s, "--labels", tmp / "c2.tif", "--offset", "0,48,0")
    if proc.returncode:
        assert "overlaps held-out region" in proc.stderr
        tifffile.imwrite(tmp / "c2.tif", gt[:, :8, :8] + 1)
        run_cli("crop", "add", "--session", s, "--labels", tmp / "c2.tif", "--offset", "0,0,0", check=True)
    run_cli("round", "train", "--session", s, "--iterations", "5", *TRAIN, check=True)
    spec = json.loads((s / "jobs" / "r2-train-1" / "spec.json").read_text())
    assert spec["init_checkpoint"].endswith("jobs/r1-train-1/model.pt")
    assert len(spec["crops"]) == 2 and spec["target_name"] == "blob"  # round 2 trains on rounds 1..2


def _pid_alive(pid: int) -> bool:
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_killing_the_cli_leaves_the_job_running_and_status_reattaches(labelled):
    tmp, s, _ = labelled
    cli = subprocess.Popen([sys.executable, "-m", "fibtui", "round", "train", "--session", str(s),
                            "--iterations", "60", *TRAIN], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    job = None
    t0 = time.time()
    while job is None and time.time() - t0 < 60:
        time.sleep(0.5)
        jobs = [j for r in status(s)["rounds"] for j in r["jobs"] if j["kind"] == "train" and j["state"] == "RUNNING"]
        job = jobs[-1] if jobs else None
    assert job is not None, "training never started"
    cli.send_signal(signal.SIGKILL)
    cli.wait()
    import sqlite3
    pid = int(sqlite3.connect(s / "session.sqlite").execute("select external_id from jobs where id=?",
                                                            [job["id"]]).fetchone()[0])
    assert _pid_alive(pid), "the job died with the CLI"
    done = wait_state(s, job["id"])
    assert done["state"] == "COMPLETED" and done["progress"] == 1.0


def test_detach_then_cancel(labelled):
    tmp, s, _ = labelled
    out = json.loads(run_cli("round", "train", "--session", s, "--iterations", "100000", "--detach", "--json",
                             *TRAIN, check=True).stdout)
    assert out["state"] == "PENDING"
    pid = int(out["external_id"])
    assert _pid_alive(pid)
    proc = run_cli("jobs", "cancel", "--session", s, out["id"], check=True)
    assert "CANCELLED" in proc.stdout
    for _ in range(50):
        if not _pid_alive(pid):
            break
        time.sleep(0.2)
    assert not _pid_alive(pid)
    assert wait_state(s, out["id"])["state"] == "CANCELLED"
    again = run_cli("jobs", "cancel", "--session", s, out["id"])
    assert again.returncode == 2 and "already CANCELLED" in again.stderr


def test_failed_job_reports_reason(labelled, tmp_path):
    """A job whose input vanished ends FAILED with the cause, not a hang."""
    tmp, s, _ = labelled
    from remote.dispatch import Dispatcher
    from sessions import rounds
    from sessions.workspace import open_session

    sess = open_session(s)
    spec = rounds.train_spec(sess, rounds.current(sess), target="blob", iterations=5, patch=(16, 48, 48), base=8,
                             levels=3)
    spec["crops"][0]["path"] = str(tmp_path / "gone.zarr")
    d = Dispatcher(sess)
    job = d.wait(d.submit(rounds.current(sess)["n"], "train", spec)["id"], poll_s=0.3)
    assert job["state"] == "FAILED" and "gone.zarr" in job["reason"]
