"""`fibtui reproduce`: a round re-run from its recorded specs (session or exported package) gives the
recorded scores exactly on CPU, and bit-identical weights; a difference is reported and exits 1."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import run_cli
from recorded import make_recorded


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    return make_recorded(tmp_path_factory.mktemp("repro"))


def reproduce(*args):
    return run_cli("reproduce", "--round", "1", "--json", *args)


def test_round_one_reproduces_exactly_from_the_session(recorded, tmp_path):
    before = sorted(p.name for p in (recorded / "jobs").iterdir())
    proc = reproduce("--session", recorded, "--scratch", tmp_path / "scratch")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["ok"] and res["exact"] and res["weights_identical"] is True
    names = {r["name"] for r in res["scores"]}
    assert {"iou", "f1", "precision", "recall"} <= names
    assert all(r["recorded"] == r["reproduced"] and r["tolerance"] == 0.0 for r in res["scores"])
    assert set(res["jobs"]) == {"train", "predict", "evaluate"}
    assert all(j["state"] == "COMPLETED" for j in res["jobs"].values())
    assert (tmp_path / "scratch" / "session" / "session.sqlite").is_file()  # a session of its own: `fibtui report` works
    assert sorted(p.name for p in (recorded / "jobs").iterdir()) == before  # the original is only read


def test_round_one_reproduces_from_an_exported_package(recorded, tmp_path):
    run_cli("export", "--session", recorded, "--format", "bagit", "--include", "models", "--out", tmp_path / "bag",
            check=True)
    moved = tmp_path / "moved"  # the package alone: the session's crops and labels are not used
    shutil.copytree(tmp_path / "bag", moved)
    raw = json.loads((moved / "data" / "fibtui-package.json").read_text())["raw"][0]["location"]
    proc = reproduce("--package", moved, "--raw", raw, "--scratch", tmp_path / "scratch")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["ok"] and res["weights_identical"] is True
    spec = json.loads(next((tmp_path / "scratch" / "session" / "jobs").glob("r1-train-*/spec.json")).read_text())
    assert all(c["path"].startswith(str(moved / "data" / "labels" / "crops")) for c in spec["crops"])


def test_a_different_recorded_score_is_reported_and_exits_1(recorded, tmp_path):
    copy = tmp_path / "s"
    shutil.copytree(recorded, copy)
    res_path = copy / "jobs" / "r1-evaluate-1" / "result.json"
    res = json.loads(res_path.read_text())
    res["metrics"]["iou"] = 0.5
    res_path.write_text(json.dumps(res))
    proc = reproduce("--session", copy, "--scratch", tmp_path / "scratch")
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    iou = next(r for r in out["scores"] if r["name"] == "iou")
    assert not out["ok"] and not iou["ok"] and iou["recorded"] == 0.5


def test_bad_input_is_one_line(recorded, tmp_path):
    proc = run_cli("reproduce", "--session", recorded, "--round", "7")
    assert proc.returncode == 2 and "--round 7: no such round" in proc.stderr
    proc = run_cli("reproduce", "--package", tmp_path, "--round", "1")
    assert proc.returncode == 2 and "not a fibtui export" in proc.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    proc = run_cli("reproduce", "--session", recorded, "--round", "1", "--scratch", tmp_path / "full")
    assert proc.returncode == 2 and "not empty" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
