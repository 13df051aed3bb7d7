"""The session timeline: one time axis, per-round counts, answer times, communication patterns,
the `timeline` command and the TUI screen."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from textual.app import App
from textual.widgets import DataTable

from fibtui.cli import main
from fibtui.tui.screens.timeline import TimelineScreen
from fibtui.tui.screens.viewer import ViewerScreen
from sessions import interventions, jobs, journal, timeline
from sessions.volumes import catalog
from sessions.workspace import init_session

T0 = datetime(2024, 3, 1, 8, 0, tzinfo=timezone.utc)
AT = {"volume": "vol", "axis": "xy", "z": 5, "y": 10, "x": 12, "zoom": 2.0}


def T(hours: float) -> str:
    return (T0 + timedelta(hours=hours)).isoformat(timespec="seconds")


def job(s, round_n, kind, state, submitted, started, ended, **scores):
    j = jobs.create(s, round_n, kind, {}, "local")
    jobs.finish(s, j, state)
    s.db["jobs"].update(j["id"], {"submitted": T(submitted), "started": T(started), "ended": T(ended)})
    for name, value in scores.items():  # an earlier value first: the latest row per name counts
        s.db["metrics"].insert_all([{"job": j["id"], "round": round_n, "step": 0, "name": name, "value": 0.0},
                                    {"job": j["id"], "round": round_n, "step": 1, "name": name, "value": value}])
    return j["id"]


def msg(s, hours, text, **kw) -> int:
    row = journal.add_message(s, kw.pop("author", "sci"), text, **kw)
    s.db["messages"].update(row["id"], {"time": T(hours)})
    return row["id"]


@pytest.fixture
def story(tmp_path):
    """Round 1: talk every day. Round 2: talk after evaluations. Round 3: talk only at a deadlock. Round 4: silence."""
    s = init_session(tmp_path / "s")
    catalog.write_volume(s, "vol", np.zeros((16, 32, 24), np.uint8), (8, 8, 8), source="test")
    for n, h in ((1, 0), (2, 72), (3, 144), (4, 210)):
        s.db["rounds"].insert({"n": n, "created": T(h), "target": "mito", "parent": n - 1 or None, "status": "open"})
    job(s, 1, "train", "COMPLETED", 0, 0.5, 60)
    ev1 = job(s, 1, "evaluate", "COMPLETED", 70, 70.5, 71, iou=0.5, f1=0.6)
    job(s, 2, "train", "FAILED", 100, 101, 120)
    job(s, 2, "evaluate", "COMPLETED", 139, 139.5, 140, iou=0.62, f1=0.7)
    ids = {"early": msg(s, -1, "hello before anything")}
    ids["q1"] = msg(s, 1, "which class is the envelope?", kind="question", round_n=1)
    msg(s, 3, "class 2", kind="answer", reply_to=ids["q1"], author="cur")                  # 2 h
    msg(s, 26, "crops look fine", round_n=1)
    ids["q2"] = msg(s, 50, "more crops on the left?", kind="question", round_n=1)
    msg(s, 60, "yes", kind="answer", reply_to=ids["q2"], author="cur")                    # 10 h
    msg(s, 160, "about round 1's score", job=ev1)                                          # round 1 by its job
    msg(s, 73, "better than I hoped")                                                      # round 2 by time
    ids["q3"] = msg(s, 74, "why the misses on the right?", kind="question")
    msg(s, 80, "shading", kind="decision", reply_to=ids["q3"], author="cur")               # 6 h
    ids["open"] = msg(s, 110, "and the pores?", kind="question")
    msg(s, 141, "iou 0.62", kind="result", author="cur")
    msg(s, 142, "good")
    ids["dead"] = msg(s, 150, "stuck: the model ignores the envelope", kind="deadlock", round_n=3, at=AT,
                      author="cur")
    ids["reply"] = msg(s, 170, "try more negatives", reply_to=ids["dead"])                  # round 3 by its parent
    msg(s, 200, "we relabel the envelope", kind="decision", reply_to=ids["reply"], author="cur")
    e = interventions.record(s, "crop added", subject="crop", subject_id=1, author="cur")
    s.db["interventions"].update(e["id"], {"time": T(90)})
    n = journal.add_note(s, "asked a colleague", None, "cur")
    s.db["notes"].update(n["id"], {"time": T(151)})
    yield s, ids
    s.close()


def test_events_are_in_time_order_with_rounds_first(story):
    s, ids = story
    ev = timeline.build(s)["events"]
    times = [datetime.fromisoformat(e["time"]) for e in ev]
    assert times == sorted(times)
    assert ev[0]["type"] == "message" and ev[0]["round"] is None       # before round 1
    assert [e["type"] for e in ev[1:4]] == ["round", "job submitted", "job started"]  # same second: round first
    types = {e["type"] for e in ev}
    assert types == {"round", "job submitted", "job started", "job ended", "evaluation", "message", "intervention",
                     "note"}
    ended = [e for e in ev if e["type"] == "job ended"]
    assert [e["state"] for e in ended] == ["COMPLETED", "COMPLETED", "FAILED", "COMPLETED"]
    evals = [e for e in ev if e["type"] == "evaluation"]
    assert [(e["round"], e["iou"], e["f1"]) for e in evals] == [(1, 0.5, 0.6), (2, 0.62, 0.7)]
    assert evals[0]["d_iou"] is None and evals[1]["d_iou"] == pytest.approx(0.12)
    assert evals[1]["d_f1"] == pytest.approx(0.1) and "iou 0.620 (+0.120)" in evals[1]["what"]
    dead = next(e for e in ev if e["type"] == "message" and e["id"] == ids["dead"])
    assert dead["kind"] == "deadlock" and dead["author"] == "cur" and dead["at"] == AT
    reply = next(e for e in ev if e["type"] == "message" and e["id"] == ids["reply"])
    assert reply["reply_to"] == ids["dead"] and reply["round"] == 3
    assert next(e for e in ev if e["type"] == "intervention")["round"] == 2
    assert next(e for e in ev if e["type"] == "note")["round"] == 3


def test_per_round_counts_answer_times_and_patterns(story):
    s, _ = story
    rounds = {r["round"]: r for r in timeline.build(s)["rounds"]}
    assert list(rounds) == [None, 1, 2, 3, 4]
    r1, r2, r3, r4 = rounds[1], rounds[2], rounds[3], rounds[4]
    assert r1["messages"] == 6 and r1["by_kind"]["question"] == 2 and r1["by_kind"]["answer"] == 2
    assert r1["answer_median_s"] == 6 * 3600 and r1["answer_max_s"] == 10 * 3600 and r1["unanswered"] == 0
    assert r1["jobs"] == 2 and r1["evaluations"] == 1
    assert r1["pattern"] == "constant contact" and r1["coverage"] >= 0.5

    assert r2["messages"] == 6 and r2["by_kind"]["result"] == 1 and r2["by_kind"]["decision"] == 1
    assert (r2["answered"], r2["unanswered"], r2["answer_median_s"]) == (1, 1, 6 * 3600)
    assert r2["interventions"] == 1 and r2["jobs"] == 2
    assert r2["pattern"] == "feedback around results" and r2["share_after_result"] == pytest.approx(5 / 6, abs=1e-3)

    assert r3["messages"] == 3 and r3["deadlocks"] == 1 and r3["notes"] == 1 and r3["answer_median_s"] is None
    assert r3["pattern"] == "only at deadlocks" and r3["share_deadlock"] == 1.0
    assert r4["messages"] == 0 and r4["pattern"] == "silent"
    assert rounds[None]["messages"] == 1


def test_classify_rules():
    day = 86400.0
    c = timeline.classify
    assert c([], [], [], [], 0, day)[0] == "silent"
    assert c([0, day * 1.5], ["plain", "plain"], [False, False], [], 0, 10 * day)[0] == "sporadic"
    assert c([0, day, 2 * day], ["plain"] * 3, [False] * 3, [], 0, 3 * day)[0] == "constant contact"
    # two of three after a result: feedback, even though they span the round
    assert c([0, day, 2 * day], ["plain"] * 3, [False] * 3, [day - 60, 2 * day - 60], 0, 3 * day)[0] == \
        "feedback around results"
    # a deadlock and a reply within the window; one unrelated message breaks "only"
    assert c([0, 3600], ["deadlock", "plain"], [True, False], [], 0, day)[0] == "only at deadlocks"
    assert c([0, 3600, 5 * day], ["deadlock", "plain", "plain"], [True, False, False], [], 0, 6 * day)[0] != \
        "only at deadlocks"
    # the window is a parameter
    assert c([0, 3 * 3600], ["result", "plain"], [False, False], [0], 0, day, window_s=3600)[0] == "sporadic"


def test_build_is_a_few_queries_on_many_messages(story):
    s, _ = story
    s.db["messages"].insert_all({"time": T(145 + i / 1000), "author": "a", "text": f"m{i}", "kind": kind,
                                 "reply_to": None, "round": None} for i, kind in
                                zip(range(10_000), ["question", "plain", "answer", "deadlock"] * 2500))
    calls = []
    s.db.conn.set_trace_callback(calls.append)
    t = time.perf_counter()
    try:
        data = timeline.build(s)
    finally:
        s.db.conn.set_trace_callback(None)
    assert len(calls) <= 6, calls
    assert time.perf_counter() - t < 5
    assert sum(r["messages"] for r in data["rounds"]) == 10_016


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_timeline_command_json_csv_and_table(story, capsys):
    s, ids = story
    code, out, _ = cli(capsys, "timeline", "--session", s.root, "--json")
    assert code == 0
    data = json.loads(out)
    assert set(data) == {"events", "rounds"} and data == json.loads(json.dumps(timeline.build(s)))
    code, out, _ = cli(capsys, "timeline", "--session", s.root, "--csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == len(data["events"]) and list(rows[0]) == list(timeline.EVENT_FIELDS)
    dead = next(r for r in rows if r["type"] == "message" and r["id"] == str(ids["dead"]))
    assert json.loads(dead["at"]) == AT and dead["kind"] == "deadlock" and dead["round"] == "3"
    code, out, _ = cli(capsys, "timeline", "--session", s.root)
    assert code == 0 and "Timeline" in out and "Per round" in out and "only at deadlocks" in out
    assert "[deadlock]" in out  # user text and kinds are not taken for markup
    code, _, err = cli(capsys, "timeline", "--session", s.root, "--json", "--csv")
    assert code == 2 and "choose one" in err
    code, _, err = cli(capsys, "timeline", "--session", s.root, "--window", "0")
    assert code == 2 and "--window 0.0" in err
    code, out, _ = cli(capsys, "timeline", "--session", s.root, "--json", "--window", "1")
    assert code == 0 and {r["round"]: r["pattern"] for r in json.loads(out)["rounds"]}[2] == "sporadic"


class Tiny(App):
    def __init__(self, root):
        super().__init__()
        self.root = root

    def on_mount(self) -> None:
        self.push_screen(TimelineScreen(self.root))


async def wait_for(pilot, predicate, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out waiting for the UI"
        await pilot.pause(0.05)


async def test_timeline_screen_lists_events_and_opens_linked_position(story):
    s, ids = story
    events = timeline.build(s)["events"]
    app = Tiny(s.root)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        assert isinstance(screen, TimelineScreen)
        table = screen.query_one("#timeline-events", DataTable)
        await wait_for(pilot, lambda: table.row_count == len(events))
        assert screen.query_one("#timeline-rounds", DataTable).row_count == 5
        assert [str(c) for c in screen.query_one("#timeline-rounds", DataTable).get_row_at(3)][-1] == \
            "only at deadlocks"
        assert {b.description for b in screen.BINDINGS} >= {"Open position", "Reload", "Back"}
        assert all(b.description for b in screen.BINDINGS)

        await pilot.press("o")  # the first event (a plain message) links nowhere: a notice, no viewer
        assert app.screen is screen
        row = next(i for i, e in enumerate(events) if e["type"] == "message" and e["id"] == ids["dead"])
        assert "stuck" in str(table.get_row_at(row)[3])
        table.move_cursor(row=row)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ViewerScreen))
        viewer = app.screen
        status = viewer.query_one("#status")
        await wait_for(pilot, lambda: "z 5/15" in str(status.content))
        assert "│ xy │" in str(status.content) and "zoom ×2" in str(status.content)
        assert viewer.view.focus == (5.0, 10.0, 12.0)
        await pilot.press("escape")
        assert app.screen is screen
