"""The message thread: kinds, replies, links (round, crop, job, region, viewer position), open questions,
and the `msg` / `note` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from fibtui.cli import main
from sessions import interventions, jobs, journal, labels, rounds
from sessions.errors import FibError
from sessions.volumes import catalog
from sessions.workspace import init_session, open_session

SHAPE = (16, 32, 24)


@pytest.fixture
def thread(tmp_path):
    """A session with a volume, a round, a crop, a held-out region and a job."""
    s = init_session(tmp_path / "s")
    catalog.write_volume(s, "vol", np.random.default_rng(0).integers(0, 256, SHAPE, dtype=np.uint8), (8, 8, 8),
                         source="test")
    rounds.new_round(s)
    tifffile.imwrite(tmp_path / "crop.tif", np.ones((4, 8, 8), np.uint8), photometric="minisblack")
    crop = labels.add_crop(s, 1, "vol", tmp_path / "crop.tif", (0, 0, 0), classes=["bg", "fg"])
    region = labels.draw_holdout(s, "vol", 1, (4, 8, 8), seed=1)[0]
    job = jobs.create(s, 1, "evaluate", {}, "local")
    yield s, crop["id"], region["id"], job["id"]
    s.close()


def count(s) -> int:
    return s.db["messages"].count


def test_kinds_replies_and_links(thread):
    s, crop, region, job = thread
    q = journal.add_message(s, "alice", "shading on the right?", kind="question", round_n=1, crop=crop,
                            at={"volume": "vol", "axis": "xz", "z": 15, "y": 31, "x": 0, "zoom": 2})
    assert q["kind"] == "question" and q["crop"] == crop and q["round"] == 1
    assert q["at"] == {"volume": "vol", "axis": "xz", "z": 15, "y": 31, "x": 0, "zoom": 2.0}
    a = journal.add_message(s, "bob", "yes, see region", kind="answer", reply_to=q["id"], region=region, job=job)
    assert (a["reply_to"], a["region"], a["job"]) == (q["id"], region, job)
    plain = journal.add_message(s, "scientist", "thanks", round_n=1)  # the demo's call still works
    assert plain["kind"] == "plain" and plain["at"] is None
    rows = journal.messages(s)
    assert [r["id"] for r in rows] == [q["id"], a["id"], plain["id"]]
    assert rows[0]["at"]["axis"] == "xz" and rows[1]["at"] is None  # decoded from JSON
    default = journal.add_message(s, "bob", "look here", at={"volume": "vol", "z": 1, "y": 2, "x": 3})
    assert default["at"] == {"volume": "vol", "axis": "xy", "z": 1, "y": 2, "x": 3, "zoom": 1.0}
    assert set(journal.KINDS) == {"question", "answer", "result", "decision", "deadlock", "plain"}


def test_unanswered_until_an_answer_or_decision_replies(thread):
    s, *_ = thread
    q1 = journal.add_message(s, "a", "one?", kind="question")
    q2 = journal.add_message(s, "a", "two?", kind="question")
    q3 = journal.add_message(s, "a", "three?", kind="question")
    journal.add_message(s, "b", "not an answer", reply_to=q1["id"])            # a plain reply keeps it open
    journal.add_message(s, "b", "we go with B", kind="decision", reply_to=q2["id"])
    assert [q["id"] for q in journal.unanswered(s)] == [q1["id"], q3["id"]]
    assert journal.unanswered_count(s) == 2
    journal.add_message(s, "b", "yes", kind="answer", reply_to=q1["id"])
    assert [q["id"] for q in journal.unanswered(s)] == [q3["id"]] and journal.unanswered_count(s) == 1


def test_unanswered_is_one_query_on_many_messages(thread):
    s, *_ = thread
    rows = [{"time": "2024-01-01T00:00:00+00:00", "author": "a", "text": f"q{i}", "kind": "question"}
            for i in range(5000)]
    s.db["messages"].insert_all(rows)
    first = s.db.execute("select min(id) from messages").fetchone()[0]
    s.db["messages"].insert_all({"time": "2024-01-02T00:00:00+00:00", "author": "b", "text": "a",
                                 "kind": "answer", "reply_to": first + i} for i in range(0, 5000, 2))
    calls = []
    s.db.conn.set_trace_callback(calls.append)
    try:
        assert journal.unanswered_count(s) == 2500
        assert len(journal.unanswered(s)) == 2500
    finally:
        s.db.conn.set_trace_callback(None)
    assert len(calls) == 2
    plan = " ".join(str(r) for r in s.db.execute("explain query plan select q.* " + journal._OPEN).fetchall())
    assert "reply_to" in plan  # the reply lookup uses the index, not a scan per question


BAD = {
    "kind": (dict(kind="rumour"), "--kind 'rumour': use one of question, answer, result, decision, deadlock, plain"),
    "reply_to": (dict(reply_to=999), "--reply-to 999: no such message"),
    "answer without reply": (dict(kind="answer"), "--kind answer needs --reply-to"),
    "round": (dict(round_n=7), "--round 7: no such round"),
    "crop": (dict(crop=99), "--crop 99: no such crop"),
    "job": (dict(job="r9-train-1"), "--job r9-train-1: no such job"),
    "region": (dict(region=42), "--region 42: no such held-out region"),
    "at volume": (dict(at={"volume": "nope", "z": 0, "y": 0, "x": 0}), "volume 'nope' not in this session"),
    "at axis": (dict(at={"volume": "vol", "axis": "zz", "z": 0, "y": 0, "x": 0}), "--axis 'zz': use one of xy"),
    "at outside": (dict(at={"volume": "vol", "z": 16, "y": 0, "x": 0}), "--at z=16: outside volume 'vol'"),
    "at negative": (dict(at={"volume": "vol", "z": 0, "y": -1, "x": 0}), "--at y=-1: outside"),
    "at fraction": (dict(at={"volume": "vol", "z": 0.5, "y": 0, "x": 0}), "--at z=0.5: expected an integer"),
    "at missing": (dict(at={"volume": "vol", "z": 0, "y": 0}), "--at x=None: expected an integer"),
    "at field": (dict(at={"volume": "vol", "z": 0, "y": 0, "x": 0, "t": 3}), "unknown field(s) t"),
    "zoom": (dict(at={"volume": "vol", "z": 0, "y": 0, "x": 0, "zoom": 0}), "--zoom 0.0: must be a finite number > 0"),
    "zoom nan": (dict(at={"volume": "vol", "z": 0, "y": 0, "x": 0, "zoom": float("nan")}), "--zoom nan"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_error_and_writes_nothing(thread, case):
    s, *_ = thread
    kwargs, expect = BAD[case]
    before = count(s)
    with pytest.raises(FibError) as e:
        journal.add_message(s, "alice", "hello", **kwargs)
    assert expect in str(e.value) and "\n" not in str(e.value)
    assert count(s) == before


def test_empty_text_and_author_are_refused(thread):
    s, *_ = thread
    for author, text in (("a", "  "), ("", "hi")):
        with pytest.raises(FibError):
            journal.add_message(s, author, text)
    assert count(s) == 0


# -- the commands ------------------------------------------------------------------


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_msg_commands(thread, capsys):
    s, crop, region, job = thread
    root = s.root
    code, out, _ = cli(capsys, "msg", "add", "--session", root, "misses on the right?", "--kind", "question",
                       "--at", "5,6,7", "--axis", "yz", "--zoom", "2", "--round", "1", "--author", "sci", "--json")
    assert code == 0
    q = json.loads(out)
    assert q["at"] == {"volume": "vol", "axis": "yz", "z": 5, "y": 6, "x": 7, "zoom": 2.0}  # the only volume
    code, out, _ = cli(capsys, "msg", "add", "--session", root, "shading, yes", "--kind", "answer",
                       "--reply-to", q["id"], "--job", job, "--region", region, "--author", "cur")
    assert code == 0 and "added (answer)" in out
    code, out, _ = cli(capsys, "msg", "add", "--session", root, "and crop 1?", "--kind", "question",
                       "--crop", crop, "--author", "sci", "--json")
    q2 = json.loads(out)
    code, out, _ = cli(capsys, "msg", "list", "--session", root)
    assert code == 0
    lines = out.splitlines()
    assert any(f"#{q['id']}" in ln and "question" in ln and "at vol yz z=5 y=6 x=7 ×2" in ln for ln in lines)
    assert any(f"↳ #{q['id']} (sci)" in ln and "answer" in ln and f"job {job}" in ln and f"region {region}" in ln
               for ln in lines)
    code, out, _ = cli(capsys, "msg", "list", "--session", root, "--unanswered", "--json")
    assert code == 0 and [m["id"] for m in json.loads(out)] == [q2["id"]]
    code, out, _ = cli(capsys, "msg", "list", "--session", root, "--unanswered")
    assert "and crop 1?" in out and "misses" not in out
    code, out, _ = cli(capsys, "msg", "list", "--session", root, "--json")
    assert [m["kind"] for m in json.loads(out)] == ["question", "answer", "question"]


@pytest.mark.parametrize("args, expect", [
    (["--kind", "rumour"], "--kind 'rumour'"),
    (["--reply-to", "77"], "--reply-to 77"),
    (["--at", "1,2"], "--at '1,2': expected three"),
    (["--at", "99,0,0"], "--at z=99: outside"),
    (["--at", "0,0,0", "--zoom", "-1"], "--zoom -1.0"),
    (["--at", "0,0,0", "--volume", "other"], "volume 'other' not in this session"),
    (["--zoom", "2"], "add --at Z,Y,X"),
    (["--job", "nope"], "--job nope"),
])
def test_msg_add_bad_input_exits_2_with_one_line(thread, capsys, args, expect):
    s, *_ = thread
    code, out, err = cli(capsys, "msg", "add", "--session", s.root, "hello", *args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and expect in lines[0], err
    assert count(s) == 0


def test_at_needs_a_volume_when_there_are_several(thread, capsys):
    s, *_ = thread
    catalog.write_volume(s, "vol2", np.zeros((4, 4, 4), np.uint8), (8, 8, 8), source="test")
    code, _, err = cli(capsys, "msg", "add", "--session", s.root, "hi", "--at", "0,0,0")
    assert code == 2 and "2 volumes; pass --volume NAME" in err
    code, out, _ = cli(capsys, "msg", "add", "--session", s.root, "hi", "--at", "3,3,3", "--volume", "vol2", "--json")
    assert code == 0 and json.loads(out)["at"]["volume"] == "vol2"


def test_note_list_shows_automatic_entries_and_notes_and_why_attaches(thread, capsys):
    s, *_ = thread
    auto = interventions.record(s, "job submitted", subject="job", subject_id="r1-train-1", round_n=1,
                                params={"iterations": 300}, author="cur")
    root = s.root
    code, _, _ = cli(capsys, "note", "add", "--session", root, "relabelled crop 1", "--why", "missed mito",
                     "--author", "cur")
    assert code == 0
    code, out, _ = cli(capsys, "note", "list", "--session", root, "--json")
    rows = json.loads(out)
    autos = [r for r in rows if r["type"] == "auto"]
    notes = [r for r in rows if r["type"] == "note"]
    assert [a["id"] for a in autos if a["action"] == "job submitted"] == [auto["id"]]
    assert notes[-1]["action"] == "relabelled crop 1" and notes[-1]["reason"] == "missed mito"
    code, out, _ = cli(capsys, "note", "list", "--session", root)
    assert f"auto #{auto['id']}" in out and "note #1" in out and "job submitted job r1-train-1" in out

    code, out, _ = cli(capsys, "note", "why", "--session", root, auto["id"], "--why", "the loss had plateaued",
                       "--json")
    assert code == 0 and json.loads(out)["reason"] == "the loss had plateaued"
    code, out, _ = cli(capsys, "note", "list", "--session", root)
    assert "— the loss had plateaued" in out
    code, _, err = cli(capsys, "note", "why", "--session", root, 999, "--why", "x")
    assert code == 2 and "intervention 999 does not exist" in err
    code, _, err = cli(capsys, "note", "why", "--session", root, auto["id"], "--why", " ")
    assert code == 2 and "reason is empty" in err
    s2 = open_session(root)
    assert s2.db["interventions"].get(auto["id"])["reason"] == "the loss had plateaued"
    s2.close()


@pytest.mark.parametrize("cmd", [["msg", "add"], ["msg", "list"], ["note", "add"], ["note", "list"],
                                 ["note", "why"], ["timeline"]])
def test_commands_have_help(capsys, cmd):
    code, out, _ = cli(capsys, *cmd, "--help")
    assert code == 0 and "Usage:" in out and len(out.splitlines()) > 4
