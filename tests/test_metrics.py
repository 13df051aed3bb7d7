"""sessions.metrics on a real SQLite session: binned curves over attempts, scores per round, regressions."""

from __future__ import annotations

import json

import pytest

from sessions import jobs, metrics, rounds
from sessions.jobfiles import atomic_write_json
from sessions.workspace import init_session


@pytest.fixture
def session(tmp_path):
    s = init_session(tmp_path / "s")
    yield s
    s.close()


def add_metrics(s, job: dict, name: str, steps, value=lambda step: float(step)) -> None:
    s.db["metrics"].insert_all({"job": job["id"], "round": job["round"], "step": st, "name": name,
                                "value": value(st), "time": "t"} for st in steps)


def resumed_training(s):
    """Attempt 1 logs steps 0..59, is preempted; attempt 2 resumed from step 50 and logs 50..99."""
    r = rounds.new_round(s)
    a1 = jobs.finish(s, jobs.create(s, r["n"], "train", {}, "local"), "PREEMPTED")
    a2 = jobs.create(s, r["n"], "train", {}, "local")
    s.db["jobs"].update(a2["id"], {"resumes": a1["id"]})
    add_metrics(s, a1, "loss", range(0, 60), lambda st: 1000.0 + st)   # steps 50..59 are re-logged by a2
    add_metrics(s, a2, "loss", range(50, 100), lambda st: float(st))
    add_metrics(s, a1, "lr", range(0, 60), lambda st: 0.1)
    add_metrics(s, a2, "lr", range(50, 100), lambda st: 0.01)
    return a1, a2


def test_curve_bins_over_two_attempts(session):
    a1, a2 = resumed_training(session)
    assert jobs.lineage(session, a1["id"]) == [a1["id"], a2["id"]]
    got = metrics.curve(session, [a1["id"], a2["id"]], points=10)
    steps, loss = got["loss"]
    # 100 steps in 10 bins of 10; bins 0-4 from attempt 1, 5-9 from attempt 2 (it wins where both logged)
    assert steps == [round(sum(range(b * 10, b * 10 + 10)) / 10) for b in range(10)]
    assert loss == pytest.approx([1000 + b * 10 + 4.5 for b in range(5)] + [b * 10 + 4.5 for b in range(5, 10)])
    assert got["lr"][1] == pytest.approx([0.1] * 5 + [0.01] * 5)
    # unbinned when there are fewer steps than points; names without rows are left out
    full = metrics.curve(session, [a1["id"], a2["id"]], names=("loss", "accuracy"), points=500)
    assert list(full) == ["loss"]
    assert full["loss"][0] == list(range(100))
    assert full["loss"][1][49:51] == [1049.0, 50.0]


def test_curve_caps_points_and_a_bin_straddles_attempts(session):
    a1, a2 = resumed_training(session)
    for points in (1, 3, 7, 64, 99):
        steps, values = metrics.curve(session, [a1["id"], a2["id"]], names=("loss",), points=points)["loss"]
        assert 1 <= len(steps) <= points and steps == sorted(steps)
        width = -(-100 // points)
        # every bin is the mean of its rows, whichever attempt they came from
        rows = {st: 1000.0 + st for st in range(50)} | {st: float(st) for st in range(50, 100)}
        expect = [sum(rows[st] for st in range(b, min(b + width, 100))) / len(range(b, min(b + width, 100)))
                  for b in range(0, 100, width)]
        assert values == pytest.approx(expect)
    # one attempt alone, and the order of attempts given is the order of continuation
    assert metrics.curve(session, [a2["id"]], names=("loss",), points=5)["loss"][0][0] == round(54.5)
    assert metrics.curve(session, [], points=5) == {}


def test_curve_follows_a_running_training(session):
    """New steps of a running attempt show up; the cached bins of finished ranges are still right."""
    a1, a2 = resumed_training(session)
    before = metrics.curve(session, [a1["id"], a2["id"]], names=("loss",), points=10)["loss"]
    again = metrics.curve(session, [a1["id"], a2["id"]], names=("loss",), points=10)["loss"]
    assert again == before
    add_metrics(session, a2, "loss", range(100, 105), lambda st: 7.0)     # same bin width (10): last bin grows
    grown = metrics.curve(session, [a1["id"], a2["id"]], names=("loss",), points=11)["loss"]
    assert grown[0][:10] == before[0] and grown[1][:10] == pytest.approx(before[1])
    assert grown[0][-1] == 102 and grown[1][-1] == pytest.approx(7.0)
    add_metrics(session, a2, "loss", range(105, 200), lambda st: 7.0)    # wider bins now
    steps, values = metrics.curve(session, [a1["id"], a2["id"]], names=("loss",), points=10)["loss"]
    assert len(steps) == 10 and values[0] == pytest.approx(1000 + 9.5) and values[-1] == pytest.approx(7.0)


def evaluation(s, round_n: int, scores: dict, regions, state: str = "COMPLETED", spec: bool = True,
               target: str = "mito") -> dict:
    job = jobs.create(s, round_n, "evaluate", {"regions": [{"id": i, "offset": [0, 0, 0]} for i in regions],
                                               "target_name": target}, "local")
    if not spec:
        jobs.job_dir(s, job).joinpath("spec.json").unlink()
    add_metrics(s, job, "iou", [0], lambda _: -1.0)   # an older value of the same metric: the newest wins
    for name, value in scores.items():
        s.db["metrics"].insert({"job": job["id"], "round": round_n, "step": 0, "name": name, "value": value,
                                "time": "t"})
    atomic_write_json(jobs.job_dir(s, job) / "result.json", {"status": "completed"})
    return jobs.finish(s, job, state)


def test_round_scores_and_regressions_on_equal_region_sets(session):
    s = session
    for _ in range(6):
        rounds.new_round(s)
    evaluation(s, 1, {"iou": 0.70, "f1": 0.82, "precision": 0.8, "recall": 0.84}, [3, 1, 2])
    evaluation(s, 2, {"iou": 0.50, "f1": 0.60}, [1, 2, 3])           # superseded by the later evaluation
    evaluation(s, 2, {"iou": 0.701, "f1": 0.824, "precision": 0.81, "recall": 0.83, "object_f1": 0.75,
                      "object_precision": 0.7}, [1, 2, 3])  # object F1 is a score; its precision is not plotted
    evaluation(s, 2, {"iou": 0.1, "f1": 0.1}, [1, 2, 3], state="FAILED")   # not completed: ignored
    evaluation(s, 3, {"iou": 0.612, "f1": 0.759, "precision": 0.7, "recall": 0.8}, [2, 1, 3])
    evaluation(s, 4, {"iou": 0.55, "f1": 0.70}, [1, 2, 3, 4])        # lower, but on other regions
    evaluation(s, 5, {"iou": 0.56, "f1": 0.69}, [1, 2, 3, 4])        # F1 lower than round 4, IoU higher
    evaluation(s, 6, {"iou": 0.40, "f1": 0.50}, [1, 2, 3, 4], spec=False)  # regions unknown: never compared
    scores = metrics.round_scores(s)
    assert [(x["round"], x["job"]) for x in scores] == [
        (1, "r1-evaluate-1"), (2, "r2-evaluate-2"), (3, "r3-evaluate-1"), (4, "r4-evaluate-1"),
        (5, "r5-evaluate-1"), (6, "r6-evaluate-1")]
    assert scores[1] == {"round": 2, "job": "r2-evaluate-2", "iou": 0.701, "f1": 0.824, "precision": 0.81,
                         "recall": 0.83, "object_f1": 0.75, "regions": [1, 2, 3], "target": "mito"}
    assert scores[0]["regions"] == [1, 2, 3] and scores[3]["precision"] is None and scores[5]["regions"] is None
    assert scores[0]["object_f1"] is None  # an evaluation from before object scores
    assert metrics.regressions(scores) == [
        "round 3 IoU 0.612 < round 2 0.701, F1 0.759 < 0.824 on the same held-out regions",
        "round 5 F1 0.690 < round 4 0.700 on the same held-out regions",
    ]
    only_iou = [dict(scores[1]), {**scores[2], "f1": 0.9}]
    assert metrics.regressions(only_iou) == ["round 3 IoU 0.612 < round 2 0.701 on the same held-out regions"]
    # equal at three decimals is not a regression
    assert metrics.regressions([scores[1], {**scores[2], "iou": 0.7008, "f1": 0.8241}]) == []
    # one label at a time: a pore round is compared with the last pore round, never with an envelope round
    pore = {**scores[2], "target": "pore"}
    assert metrics.regressions([scores[1], pore]) == []
    assert metrics.regressions([{**scores[1], "target": "pore"}, scores[0], pore]) == [
        "round 3 IoU 0.612 < round 2 0.701, F1 0.759 < 0.824 on the same held-out regions"]


def test_round_scores_empty(session):
    assert metrics.round_scores(session) == [] and metrics.regressions([]) == []
    r = rounds.new_round(session)
    job = jobs.create(session, r["n"], "evaluate", {"regions": []}, "local")  # still running
    assert metrics.round_scores(session) == []
    jobs.finish(session, job, "COMPLETED")
    assert metrics.round_scores(session) == [{"round": 1, "job": job["id"], "iou": None, "f1": None,
                                              "precision": None, "recall": None, "object_f1": None, "regions": [],
                                              "target": None}]
    assert json.loads((jobs.job_dir(session, job) / "spec.json").read_text())["regions"] == []
