"""Resume long training (a stopped training continues as a new attempt, bit-identically) and fine-tuning
follows the target class. Real job processes, real SQLite, real zarr; a tiny net on one thread."""

from __future__ import annotations

import json
import time

import pytest
import tifffile
import torch
from conftest import blobs_volume, db_snapshot

from remote.dispatch import Dispatcher
from sessions import jobfiles, jobs, labels, rounds, train_options
from sessions.errors import FibError

NET = {"patch": (8, 32, 32), "base": 4, "levels": 2, "threads": 1}


@pytest.fixture
def sess(tmp_path):
    from sessions.volumes import catalog
    from sessions.workspace import init_session

    raw, gt = blobs_volume((16, 64, 64), seed=2)
    tifffile.imwrite(tmp_path / "v.tif", raw)
    tifffile.imwrite(tmp_path / "c.tif", gt + 1)
    s = init_session(tmp_path / "s")
    catalog.ingest(s, tmp_path / "v.tif", voxel_size=(8, 8, 8))
    rnd = rounds.new_round(s)
    labels.add_crop(s, rnd["n"], "v", tmp_path / "c.tif", (0, 0, 0), ["bg", "blob", "other"])
    yield s
    s.close()


def spec_of(s, iterations=60, every=5, **kw):
    return {**rounds.train_spec(s, rounds.current(s), target="blob", iterations=iterations, checkpoint_every=every,
                                **{**NET, **kw}), "log_every": 1}


def weights(path):
    return torch.load(path, weights_only=False)["model"]


def same_weights(a, b) -> bool:
    a, b = weights(a), weights(b)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def progress_steps(d):
    return [e["step"] for e in jobfiles.read_events(d)[0] if e["type"] == "progress"]


def cancel_at(d: Dispatcher, job: dict, step: int, timeout=120) -> dict:
    """Cancel `job` once it logged `step`; wait until its process has stopped; the job row, updated."""
    jd = jobs.job_dir(d.session, job)
    t0 = time.monotonic()
    while not any(s >= step for s in progress_steps(jd)):
        assert time.monotonic() - t0 < timeout, jobfiles.tail(jd / "stderr.log")
        assert (jd / "result.json").exists() is False, "finished before it could be cancelled"
        time.sleep(0.05)
    d.cancel(job["id"])
    d._settle(jobs.get(d.session, job["id"]), 60)
    return jobs.get(d.session, job["id"])


def test_cancelled_training_resumes_to_identical_weights(sess, tmp_path):
    d = Dispatcher(sess)
    ref = d.submit(1, "train", spec_of(sess))  # the uninterrupted run, side by side (one thread each)
    job = d.submit(1, "train", spec_of(sess))
    old = cancel_at(d, job, 12)
    ref = d.wait(ref["id"], poll_s=0.2)
    assert ref["state"] == "COMPLETED"
    assert old["state"] == "CANCELLED"
    at = jobs.resumable(sess, old)
    stopped = [e for e in jobfiles.read_events(jobs.job_dir(sess, old))[0] if e["type"] == "interrupted"]
    assert stopped and at == stopped[0]["step"] and 12 <= at < 60  # SIGTERM: a checkpoint at the next step
    new = d.resume(job["id"])
    assert new["resumes"] == job["id"] and new["round"] == 1 and new["executor"] == "local"
    assert jobs.resumable(sess, jobs.get(sess, job["id"])) is None  # resumed once: not again
    with pytest.raises(FibError, match=f"already resumed by {new['id']}"):
        d.resume(job["id"])
    done = d.wait(new["id"], poll_s=0.2)
    assert done["state"] == "COMPLETED", d.log_tail(new["id"])
    nd = jobs.job_dir(sess, done)
    ev = jobfiles.read_events(nd)[0]
    assert [e["step"] for e in ev if e["type"] == "resumed"] == [at]
    spec = json.loads((nd / "spec.json").read_text())
    assert spec["resume_from"] == {"job": job["id"], "iteration": at} and spec["iterations"] == 60
    steps = [m["step"] for m in jobs.metrics(sess, new["id"], "loss")]
    assert steps == list(range(at + 1, 61))  # the metrics continue from the checkpoint
    assert [m["step"] for m in jobs.metrics(sess, new["id"], "lr")] == steps
    assert jobs.lineage(sess, job["id"]) == jobs.lineage(sess, new["id"]) == [job["id"], new["id"]]
    assert jobs.lineage(sess, ref["id"]) == [ref["id"]]
    assert same_weights(jobs.job_dir(sess, ref) / "model.pt", nd / "model.pt")
    assert jobs.resumable(sess, done) is None  # COMPLETED
    with pytest.raises(FibError, match="completed all its iterations"):
        rounds.resume_spec(sess, new["id"])


def test_resume_with_more_iterations_recomputes_the_schedule(sess):
    from remote.train import lr_factor

    d = Dispatcher(sess)
    job = d.submit(1, "train", spec_of(sess, iterations=40))
    old = cancel_at(d, job, 8)
    at = jobs.resumable(sess, old)
    with pytest.raises(FibError, match="fewer than the 40"):
        rounds.resume_spec(sess, job["id"], iterations=39)
    before = db_snapshot(sess.root)
    with pytest.raises(FibError, match="fewer than the 40"):
        d.resume(job["id"], iterations=20)
    assert db_snapshot(sess.root) == before  # refused: no job row, no directory
    new = d.resume(job["id"], iterations=70)
    done = d.wait(new["id"], poll_s=0.2)
    assert done["state"] == "COMPLETED", d.log_tail(new["id"])
    nd = jobs.job_dir(sess, done)
    assert json.loads((nd / "result.json").read_text())["iterations"] == 70
    assert progress_steps(nd)[-1] == 70 and done["progress"] == 1.0
    warmup = max(1, min(100, 40 // 20))  # the first attempt's warm-up; the decay follows the new total
    lrs = jobs.metrics(sess, new["id"], "lr")
    assert lrs[0]["step"] == at + 1
    for m in lrs:
        assert m["value"] == pytest.approx(1e-3 * lr_factor(m["step"], 70, warmup), rel=1e-6)


def test_resume_failing_at_submit_leaves_no_trace(sess, monkeypatch):
    d = Dispatcher(sess)
    job = d.submit(1, "train", spec_of(sess))
    old = cancel_at(d, job, 7)
    assert jobs.resumable(sess, old) is not None
    ex = d.executor("local")
    monkeypatch.setattr(ex, "submit", lambda job_dir: (_ for _ in ()).throw(OSError("no fork for you")))
    before = db_snapshot(sess.root)
    with pytest.raises(FibError, match="could not be submitted to local"):
        d.resume(job["id"])
    assert db_snapshot(sess.root) == before
    monkeypatch.undo()
    with pytest.raises(FibError, match="not in this session"):
        d.resume("r9-train-9")
    # an attempt stopped before its first step can itself be resumed: the copied checkpoint is its own
    at = jobs.resumable(sess, old)
    new = d.resume(job["id"])
    d.cancel(new["id"])
    d._settle(jobs.get(sess, new["id"]), 60)
    assert jobs.resumable(sess, jobs.get(sess, new["id"])) >= at
    assert jobs.lineage(sess, job["id"]) == [job["id"], new["id"]]


def test_resumable_only_for_stopped_trainings_with_a_checkpoint(sess):
    from remote.checkpoints import CHECKPOINT

    assert jobs.CHECKPOINT == CHECKPOINT
    # a job killed before it started has no checkpoint at all
    bare = jobs.create(sess, 1, "train", spec_of(sess), "local")
    jobs.finish(sess, bare, "FAILED", "test")
    assert jobs.resumable(sess, jobs.get(sess, bare["id"])) is None
    with pytest.raises(FibError, match="before its first checkpoint"):
        rounds.resume_spec(sess, bare["id"])
    # not a training
    pred = jobs.create(sess, 1, "predict", {}, "local")
    jobs.finish(sess, pred, "CANCELLED")
    assert jobs.resumable(sess, jobs.get(sess, pred["id"])) is None
    with pytest.raises(FibError, match="only a training can be resumed"):
        rounds.resume_spec(sess, pred["id"])
    # still running
    run = jobs.create(sess, 1, "train", spec_of(sess), "local")
    assert jobs.resumable(sess, run) is None
    with pytest.raises(FibError, match="still PENDING"):
        rounds.resume_spec(sess, run["id"])
    # a checkpoint recorded for a stopped job that another attempt already resumes
    stopped = jobs.create(sess, 1, "train", spec_of(sess), "local")
    jobs.finish(sess, stopped, "TIMEOUT")
    sess.db["checkpoints"].insert({"job": stopped["id"], "round": 1, "path": f"{stopped['dir']}/checkpoint.pt",
                                   "iteration": 30, "sha256": None, "created": "now"})
    assert jobs.resumable(sess, jobs.get(sess, stopped["id"])) == 30
    _, spec = rounds.resume_spec(sess, stopped["id"], iterations=90)
    assert spec["resume_from"] == {"job": stopped["id"], "iteration": 30} and spec["iterations"] == 90
    again = jobs.create(sess, 1, "train", spec, "local", resumes=stopped["id"])
    assert jobs.resumable(sess, jobs.get(sess, stopped["id"])) is None
    assert jobs.lineage(sess, stopped["id"]) == [stopped["id"], again["id"]]
    assert jobs.get(sess, again["id"])["resumes"] == stopped["id"]


# ----------------------------------------------------------------- fine-tuning follows the target

def _completed_train(s, n: int, target: str, base=4, levels=2, drop_stem=False, batch=None) -> dict:
    """A COMPLETED train job of round n for `target`, as the job would leave it (spec, model.pt, result.json);
    `drop_stem`: its spec as fibtui wrote it before stems existed."""
    spec = rounds.train_spec(s, rounds.get(s, n), target=target, iterations=1, init="scratch",
                             batch=batch, **{**NET, "base": base, "levels": levels})
    if drop_stem:
        del spec["model"]["stem"], spec["model"]["kernel_grid"]
    job = jobs.create(s, n, "train", spec, "local")
    jd = jobs.job_dir(s, job)
    (jd / "model.pt").write_bytes(b"weights")
    jobfiles.atomic_write_json(jd / "result.json", {"status": "completed", "checkpoint": "model.pt"})
    rounds.set_target(s, n, target)
    return jobs.finish(s, job, "COMPLETED")


def test_fine_tuning_follows_the_target(sess):
    r1 = _completed_train(sess, 1, "blob")
    rounds.new_round(sess, "other")
    r2 = _completed_train(sess, 2, "other")
    rounds.new_round(sess, "blob")
    r3 = rounds.get(sess, 3)
    spec = rounds.train_spec(sess, r3, target=None, iterations=5, **NET)  # the round's target: blob
    assert spec["init_job"] == r1["id"] and spec["init_checkpoint"].endswith(f"jobs/{r1['id']}/model.pt")
    spec = rounds.train_spec(sess, r3, target="other", iterations=5, **NET)
    assert spec["init_job"] == r2["id"] and spec["target_name"] == "other"
    spec = rounds.train_spec(sess, r3, target="blob", iterations=5, init="scratch", **NET)
    assert spec["init_job"] is None and spec["init_checkpoint"] is None
    spec = rounds.train_spec(sess, r3, target="blob", iterations=5, init=2, **NET)  # explicit: another target too
    assert spec["init_job"] == r2["id"]
    assert rounds.train_spec(sess, r3, target="blob", iterations=5, init="1", **NET)["init_job"] == r1["id"]
    for bad, msg in ((3, "not an earlier round"), (7, "not an earlier round"), (0, "not an earlier round"),
                     ("best", "use auto"), (True, "use auto")):
        with pytest.raises(FibError, match=msg):
            rounds.train_spec(sess, r3, target="blob", iterations=5, init=bad, **NET)
    # the latest completed training of the target wins; a failed later one does not count
    r1b = _completed_train(sess, 1, "blob")
    failed = jobs.create(sess, 2, "train", {**spec, "target_name": "blob"}, "local")
    jobs.finish(sess, failed, "FAILED")
    assert rounds.train_spec(sess, r3, target="blob", iterations=5, **NET)["init_job"] == r1b["id"]
    # the job row records where it started from; the round table shows it
    job = jobs.create(sess, 3, "train", rounds.train_spec(sess, r3, target="blob", iterations=5, **NET), "local")
    assert job["init_from"] == r1b["id"] and rounds.started_from(sess, 3) == r1b["id"]
    assert rounds.started_from(sess, 1) == "scratch"
    # a second training in round 3 (after proofreading) fine-tunes the first one, and keeps its patch
    r3a = _completed_train(sess, 3, "blob")
    spec = rounds.train_spec(sess, r3, target="blob", iterations=5, base=4, levels=2)
    assert spec["init_job"] == r3a["id"] and spec["patch"] == list(NET["patch"])
    assert rounds.train_spec(sess, r3, target="blob", iterations=5, base=16, levels=4, init="scratch")["patch"] == \
        list(rounds.default_patch((8, 8, 8)))  # scratch: the voxel size's default
    # the CLI's and the form's defaults agree with train_spec, also when --from comes after --patch
    from fibtui.actions import ACTIONS
    from fibtui.actions.base import parse
    assert parse(sess, ACTIONS["train"], {})["patch"] == NET["patch"]
    assert parse(sess, ACTIONS["train"], {"init": "scratch"})["patch"] == rounds.default_patch((8, 8, 8))
    rounds.new_round(sess)
    assert rounds.started_from(sess, 4) is None


def test_architecture_follows_the_init_model_or_is_refused(sess):
    _completed_train(sess, 1, "blob", base=4, levels=2)
    rounds.new_round(sess)
    r2 = rounds.get(sess, 2)
    spec = rounds.train_spec(sess, r2, target="blob", iterations=5, patch=(8, 32, 32))
    grid = train_options.DEFAULT_KERNEL_GRID
    assert spec["model"] == {"base": 4, "levels": 2, "stem": [1, 1, 1], "kernel_grid": grid}  # kept from the init model
    with pytest.raises(FibError, match=r"base 16, levels 2, stem 1,1,1, kernel grid \w+: r1-train-1, .* has base 4, "
                                       r"levels 2"):
        rounds.train_spec(sess, r2, target="blob", iterations=5, base=16)
    with pytest.raises(FibError, match=r"stem 1,2,2, .*: r1-train-1, .* stem 1,1,1, .*; pass those, or --from scratch"):
        rounds.train_spec(sess, r2, target="blob", iterations=5, stem=(1, 2, 2))
    other = next(g for g in train_options.KERNEL_GRIDS if g != grid)
    with pytest.raises(FibError, match=rf"kernel grid {other}: r1-train-1, .* kernel grid {grid}; pass those"):
        rounds.train_spec(sess, r2, target="blob", iterations=5, kernel_grid=other)
    assert rounds.train_spec(sess, r2, target="blob", iterations=5, base=16, init="scratch")["model"] == \
        {"base": 16, "levels": 4, "stem": [1, 1, 1], "kernel_grid": grid}  # 8 nm voxels: no stem
    # a model trained before stems existed (its spec has neither stem nor kernel grid) is fine-tuned as the plain
    # net it is, its plan drawn on the stem's grid as it was then
    old = _completed_train(sess, 2, "blob", drop_stem=True)
    assert "stem" not in jobs.spec(sess, old)["model"]
    rounds.new_round(sess)
    spec = rounds.train_spec(sess, rounds.get(sess, 3), target="blob", iterations=5, patch=(8, 32, 32))
    assert spec["init_job"] == old["id"] and spec["model"]["stem"] == [1, 1, 1]
    assert spec["model"]["kernel_grid"] == "stem"


def test_the_stem_and_batch_follow_the_voxel_size():
    assert rounds.default_stem((50, 4.6, 4.6)) == (1, 4, 4) and rounds.default_batch((50, 4.6, 4.6)) == 4
    assert rounds.default_stem((4, 4, 4)) == (2, 2, 2) and rounds.default_batch((4, 4, 4)) == 2
    assert rounds.default_stem((8, 8, 8)) == rounds.default_stem((12, 12, 12)) == (1, 1, 1)
    assert rounds.default_batch((8, 8, 8)) == rounds.default_batch((40, 8, 8)) == 2
    from remote.model import UNetConfig
    for vs in ((50, 4.6, 4.6), (40, 8, 8), (4, 4, 4), (8, 8, 8)):   # the default net takes the default patch
        div = UNetConfig(voxel_size=vs, levels=4, stem=rounds.default_stem(vs),
                         kernel_grid=train_options.DEFAULT_KERNEL_GRID).divisor
        assert all(p % d == 0 for p, d in zip(rounds.default_patch(vs), div)), (vs, div)


def test_a_fine_tune_keeps_the_batch_of_the_model_it_continues(sess):
    """Like the patch: the same cost per iteration as the model it continues, unless given."""
    _completed_train(sess, 1, "blob", batch=3)
    rounds.new_round(sess, "blob")
    r2 = rounds.get(sess, 2)
    assert rounds.default_batch((8, 8, 8)) != 3
    assert rounds.train_spec(sess, r2, target="blob", iterations=5)["batch"] == 3
    assert rounds.train_spec(sess, r2, target="blob", iterations=5, batch=1)["batch"] == 1
    assert rounds.train_spec(sess, r2, target="blob", iterations=5, init="scratch", **NET)["batch"] == \
        rounds.default_batch((8, 8, 8))
    from fibtui.actions import ACTIONS
    from fibtui.actions.base import parse
    assert parse(sess, ACTIONS["train"], {})["batch"] == 3                     # the form's and the CLI's default
    assert parse(sess, ACTIONS["train"], {"init": "scratch"})["batch"] == rounds.default_batch((8, 8, 8))


def test_a_refused_training_leaves_the_session_unchanged(sess):
    """Validation errors come before any change: no job row, no job directory, the round's target as it was."""
    _completed_train(sess, 1, "blob")
    rounds.new_round(sess, "blob")
    before = db_snapshot(sess.root)
    r2 = rounds.get(sess, 2)
    for kw, msg in (({"target": "other", "init": 5}, "not an earlier round"),
                    ({"target": "blob", "base": 16}, "has base 4"),
                    ({"target": "nope"}, "not one of this session's classes")):
        with pytest.raises(FibError, match=msg):
            spec = rounds.train_spec(sess, r2, iterations=5, **kw)
            Dispatcher(sess).submit(2, "train", spec)
        assert db_snapshot(sess.root) == before
    assert rounds.get(sess, 2)["target"] == "blob"
    # train_spec alone never writes the round's target; set_target does, after a submission
    rounds.train_spec(sess, r2, target="other", iterations=5, **NET)
    assert rounds.get(sess, 2)["target"] == "blob" and db_snapshot(sess.root) == before
    rounds.set_target(sess, 2, "other")
    assert rounds.get(sess, 2)["target"] == "other"
    with pytest.raises(FibError, match="not one of this session's classes"):
        rounds.set_target(sess, 2, "nope")


@pytest.mark.slow
def test_cli_resume_continues_a_cancelled_training(sess):
    """`fibtui round train --resume` finds the round's stopped training and continues it; settings stay."""
    from conftest import run_cli

    root = sess.root
    net = ["--patch", "8,32,32", "--base", "4", "--levels", "2", "--threads", "1", "--batch", "1"]
    out = run_cli("round", "train", "--session", root, "--target", "blob", "--iterations", "400", *net,
                  "--detach", "--json", check=True)
    job_id = json.loads(out.stdout)["id"]
    deadline = time.monotonic() + 180
    while not sess.db.execute("select count(*) from checkpoints where job = ?", [job_id]).fetchone()[0]:
        assert time.monotonic() < deadline, "no checkpoint in time"
        Dispatcher(sess).refresh()
        time.sleep(0.5)
    run_cli("jobs", "cancel", job_id, "--session", root, check=True)
    refused = run_cli("round", "train", "--session", root, "--resume", "--lr", "0.1")
    assert refused.returncode == 2 and "--lr: not used with --resume" in refused.stderr
    out = run_cli("round", "train", "--session", root, "--resume", "--iterations", "410", "--json", check=True)
    new = json.loads(out.stdout)
    assert new["state"] == "COMPLETED" and new["resumes"] == job_id
    spec = jobs.spec(sess, new)
    assert spec["iterations"] == 410 and spec["resume_from"]["job"] == job_id and spec["model"]["base"] == 4
    assert [e["action"] for e in sess.db["interventions"].rows_where(order_by="id")] == [
        "job submitted", "job cancelled", "training resumed"]
