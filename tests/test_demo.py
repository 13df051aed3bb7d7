"""The README's first promise: `fibtui demo` runs a whole round and leaves a session `status` can read."""

import json

import pytest

from conftest import run_cli


@pytest.mark.slow
def test_demo_round_completes_and_status_reports_it(tmp_path):
    proc = run_cli("demo", "--dir", tmp_path / "demo", "--no-tui", "--iterations", "150")
    assert proc.returncode == 0, proc.stderr
    assert "demo session:" in proc.stdout and str(tmp_path / "demo" / "session") in proc.stdout
    st = json.loads(run_cli("status", "--session", tmp_path / "demo" / "session", "--json", check=True).stdout)
    rnd = st["rounds"][0]
    assert [j["state"] for j in rnd["jobs"]] == ["COMPLETED"] * 3
    assert 0 <= rnd["metrics"]["iou"] <= 1 and 0 <= rnd["metrics"]["f1"] <= 1
    assert rnd["metrics"]["iou"] > 0.3  # 150 iterations already separates mitochondria from most of the rest
    assert len(st["messages"]) == 1 and len(st["notes"]) == 1
    assert st["holdout"] == {"drawn": 3, "labelled": 3}
    # a second run finds the finished session instead of clobbering it
    again = run_cli("demo", "--dir", tmp_path / "demo", "--no-tui")
    assert again.returncode == 0 and "already complete" in again.stdout
