"""Prediction split into array tasks, without a cluster: prepare → tasks (any order) → finalize equals the
single-process prediction; each task writes only its own ledger and events; progress from the ledgers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_cluster_jobs import _predict_session


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("arr")
    s, spec = _predict_session(root, shape=(32, 256, 128))
    yield root, s, {**spec, "kind": "predict", "job_id": "p"}
    s.close()


def test_tasks_then_finalize_equal_one_process(setup, tmp_path):
    from remote import job_array, predict
    from remote.run import main
    from sessions import jobs
    from sessions.volumes import omezarr
    from sessions.jobfiles import atomic_write_json

    root, s, spec = setup
    d = tmp_path / "job"
    d.mkdir()
    atomic_write_json(d / "spec.json", spec)
    info = job_array.prepare(spec, d, 9)
    assert info == {"tasks": 4, "blocks": 4}  # capped at the number of blocks
    assert jobs.array_info(d) == info and jobs.blocks_done(d) == 0
    for t in (2, 0, 3, 1):  # any order
        assert main([str(d), "--task", str(t)]) == 0
        assert json.loads((d / "tasks" / str(t) / "result.json").read_text())["status"] == "completed"
    assert jobs.blocks_done(d) == 4 and not (d / "blocks.done").exists() and not (d / "events.jsonl").exists()
    assert main([str(d), "--finalize"]) == 0
    res = json.loads((d / "result.json").read_text())
    assert res["status"] == "completed" and res["tasks"] == 4
    one = tmp_path / "one"
    one.mkdir()
    predict.run(spec, one)
    a, b = omezarr.open_multiscale(d / "prediction.ome.zarr"), omezarr.open_multiscale(one / "prediction.ome.zarr")
    for la, lb in zip(a.levels, b.levels, strict=True):
        np.testing.assert_array_equal(la[...], lb[...])


def test_finalize_refuses_missing_blocks(setup, tmp_path):
    from remote import job_array
    from remote.run import main
    from sessions.jobfiles import atomic_write_json

    root, s, spec = setup
    d = tmp_path / "job"
    d.mkdir()
    atomic_write_json(d / "spec.json", spec)
    job_array.prepare(spec, d, 2)
    assert main([str(d), "--task", "0"]) == 0
    assert main([str(d), "--finalize"]) == 1
    res = json.loads((d / "result.json").read_text())
    assert res["status"] == "failed" and "2 of 4 blocks were not predicted" in res["error"]


def test_run_usage_and_unknown_kind(tmp_path):
    from remote.run import main
    from sessions.jobfiles import atomic_write_json, read_events

    assert main([]) == 2 and main([str(tmp_path), "--task"]) == 2 and main([str(tmp_path), "--bogus"]) == 2
    atomic_write_json(tmp_path / "spec.json", {"kind": "noop"})
    assert main([str(tmp_path)]) == 1
    assert "unknown job kind 'noop'" in json.loads((tmp_path / "result.json").read_text())["error"]
    started = read_events(tmp_path)[0][0]
    assert started["type"] == "started" and started["gpus"] == 0


def test_array_kinds_and_a_kind_that_cannot_be_an_array(tmp_path):
    from remote import job_array
    from sessions.jobs import ARRAY_KINDS

    assert set(job_array.HOOKS) == ARRAY_KINDS == {"predict", "measure"}
    with pytest.raises(ValueError, match="a train job cannot run as a job array"):
        job_array.prepare({"kind": "train"}, tmp_path, 2)
    assert job_array.main([str(tmp_path)]) == 2
