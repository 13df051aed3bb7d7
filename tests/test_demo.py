"""The README's first promise: `fibtui demo` answers the scientist's question and leaves a session `status` can read."""

import json
import re

import pytest

from conftest import run_cli


@pytest.mark.slow
def test_demo_rounds_complete_and_the_answer_is_printed_beside_the_truth(tmp_path):
    proc = run_cli("demo", "--dir", tmp_path / "demo", "--no-tui", "--iterations", "150")
    assert proc.returncode == 0, proc.stderr
    assert "demo session:" in proc.stdout and str(tmp_path / "demo" / "session") in proc.stdout
    # the answer: per nucleus, pores on µm² of envelope = density [interval]; truth beside it
    answer = re.findall(r"nucleus \d+: (\d+) pores on ([\d.]+) µm² of envelope = ([\d.]+) /µm² \[([\d.]+)–([\d.]+)\]"
                        r".*; truth (\d+) pores", proc.stdout.replace("\n", " "))
    assert answer, proc.stdout
    st = json.loads(run_cli("status", "--session", tmp_path / "demo" / "session", "--json", check=True).stdout)
    env, pore = st["rounds"][0], st["rounds"][1]
    assert env["target"] == "envelope" and pore["target"] == "pore"
    assert [j["state"] for j in env["jobs"]] == ["COMPLETED"] * 3
    assert [j["state"] for j in pore["jobs"]] == ["COMPLETED"] * 4  # train, predict, evaluate, measure
    assert 0 <= env["metrics"]["iou"] <= 1 and env["metrics"]["iou"] > 0.3  # the dark envelope is learnt quickly
    assert {"object_f1", "count_error"} <= set(pore["metrics"])
    assert len(st["messages"]) == 1 and len(st["notes"]) == 1
    assert st["holdout"] == {"drawn": 3, "labelled": 3}
    # a second run finds the finished session instead of clobbering it
    again = run_cli("demo", "--dir", tmp_path / "demo", "--no-tui")
    assert again.returncode == 0 and "already complete" in again.stdout
