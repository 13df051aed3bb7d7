"""One time axis for a session: rounds, jobs, evaluations, messages, interventions, notes.

`build(session)` reads each table once (six queries, however many messages)
and returns {"events": [...], "rounds": [...]}: the events in time order, and
per round the counts a study of curator–scientist communication needs.

Which round a message belongs to: the round it links to (its round, else the
round of its job, else of its crop), else the round of the message it replies
to (an answer is about its question), else the latest round created at or
before it. Interventions and notes: their round, else the latest one created
before them. Items before the first round fall in round None.

The communication pattern of a round, over its messages M (n = |M|) and a
window W (`window_s`, default 24 h), with
  result anchors   = the end of every COMPLETED evaluate job and every message of
                     kind "result", anywhere in the session;
  after a result   = sent within [anchor, anchor + W] of some result anchor;
  deadlock-driven  = of kind "deadlock", or replying (directly or through a
                     reply chain) to a deadlock, or sent within [d, d + W] of a
                     deadlock message d of the same round;
  coverage         = the share of the round's W-wide time bins, from its
                     creation to the next round's creation (the last round: to
                     the session's last event), that hold at least one message;
the rules are tried in this order and the first that holds wins:
  "silent"                     n = 0;
  "only at deadlocks"          the round has a deadlock and every message is deadlock-driven;
  "feedback around results"    more than half of the messages are after a result;
  "constant contact"           n >= 3 and coverage >= 1/2 (messages in most of the round's days);
  "sporadic"                   anything else (a few messages, not tied to results or deadlocks).
The shares and the coverage are reported with the pattern so a reader can check it.
"""

from __future__ import annotations

import bisect
import json
import math
from collections import Counter, defaultdict
from datetime import datetime
from statistics import median

from sessions.journal import ANSWERING, KINDS
from sessions.workspace import Session

RESULT_WINDOW_S = 24 * 3600.0
PATTERNS = ("silent", "only at deadlocks", "feedback around results", "constant contact", "sporadic")
EVENT_FIELDS = ("time", "round", "type", "id", "what", "author", "kind", "reply_to", "state", "job",
                "iou", "f1", "d_iou", "d_f1", "at")
# same-second ties: causes before effects
_RANK = {"round": 0, "intervention": 1, "job submitted": 2, "job started": 3, "job ended": 4, "evaluation": 5,
         "message": 6, "note": 7}


def _t(stamp: str | None) -> float | None:
    return datetime.fromisoformat(stamp).timestamp() if stamp else None


def _event(time: str, round_n, type_: str, id_, what: str, **extra) -> dict:
    ev = dict.fromkeys(EVENT_FIELDS)
    ev.update(time=time, round=round_n, type=type_, id=id_, what=what, **extra)
    return ev


def _rows(session: Session, sql: str) -> list[dict]:
    cur = session.db.execute(sql)
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def build(session: Session, window_s: float = RESULT_WINDOW_S) -> dict:
    """{"events": [...], "rounds": [...]}: see the module docstring for the rules."""
    rounds = _rows(session, "select n, created, target from rounds order by created, n")
    jobs = _rows(session, "select id, round, kind, state, reason, submitted, started, ended from jobs order by rowid")
    metrics = _rows(session, """
        select m.job, m.name, m.value from metrics m where m.id in (
          select max(id) from metrics where name in ('iou', 'f1') and job in
            (select id from jobs where kind = 'evaluate' and state = 'COMPLETED') group by job, name)""")
    msgs = _rows(session, """
        select m.id, m.time, m.author, m.text, m.kind, m.reply_to, m.round, m.crop, m.job, m.region, m.at,
               coalesce(m.round, j.round, c.round) as linked
        from messages m left join jobs j on j.id = m.job left join crops c on c.id = m.crop order by m.id""")
    autos = _rows(session, "select id, time, author, action, subject, subject_id, round, reason from interventions "
                           "order by id")
    notes = _rows(session, "select id, time, author, action, reason, round from notes order by id")

    created = [_t(r["created"]) for r in rounds]

    def round_at(t: float | None):
        i = bisect.bisect_right(created, t) - 1 if t is not None else -1
        return rounds[i]["n"] if i >= 0 else None

    events: list[dict] = []
    for r in rounds:
        events.append(_event(r["created"], r["n"], "round", r["n"], f"round {r['n']} created"
                             + (f" (target {r['target']})" if r["target"] else "")))
    for j in jobs:
        for col, type_ in (("submitted", "job submitted"), ("started", "job started"), ("ended", "job ended")):
            if j[col]:
                what = f"{j['kind']} {j['id']}" + (f" {j['state']}" if col == "ended" else "")
                if col == "ended" and j["reason"]:
                    what += f": {j['reason']}"
                events.append(_event(j[col], j["round"], type_, j["id"], what, state=j["state"] if col == "ended"
                                     else None, job=j["id"]))

    # evaluations: held-out iou/f1 and the change vs the previous evaluated round's latest evaluation
    scores: dict[str, dict] = defaultdict(dict)
    for m in metrics:
        scores[m["job"]][m["name"]] = m["value"]
    evals = [j for j in jobs if j["kind"] == "evaluate" and j["state"] == "COMPLETED"]
    evals.sort(key=lambda j: (j["round"], _t(j["ended"] or j["started"] or j["submitted"]) or 0.0))
    last_of_round: dict[int, dict] = {}
    for j in evals:
        last_of_round[j["round"]] = scores.get(j["id"], {})
    evaluated = sorted(last_of_round)
    result_anchors: list[float] = []
    for j in evals:
        s = scores.get(j["id"], {})
        i = bisect.bisect_left(evaluated, j["round"])
        prev = last_of_round[evaluated[i - 1]] if i > 0 else {}
        delta = {f"d_{k}": (s[k] - prev[k]) if k in s and k in prev else None for k in ("iou", "f1")}
        stamp = j["ended"] or j["started"] or j["submitted"]
        result_anchors.append(_t(stamp))
        what = f"{j['id']}: " + "  ".join(
            f"{k} {s[k]:.3f}" + (f" ({delta['d_' + k]:+.3f})" if delta["d_" + k] is not None else "")
            for k in ("iou", "f1") if k in s) if s else f"{j['id']}: no held-out scores"
        events.append(_event(stamp, j["round"], "evaluation", j["id"], what, job=j["id"], iou=s.get("iou"),
                             f1=s.get("f1"), **delta))

    # messages: their round, replies, answer times
    by_id = {m["id"]: m for m in msgs}
    for m in msgs:
        m["t"] = _t(m["time"])
    for m in msgs:  # ids grow with time, so a parent's round is known before its replies'
        parent = by_id.get(m["reply_to"])
        m["rnd"] = m["linked"] if m["linked"] is not None else (
            parent["rnd"] if parent is not None and "rnd" in parent else round_at(m["t"]))
        m["dl"] = m["kind"] == "deadlock" or bool(parent is not None and parent.get("dl"))
        if m["kind"] == "result":
            result_anchors.append(m["t"])
        at = json.loads(m["at"]) if m["at"] else None
        links = [f"↳ #{m['reply_to']}" if m["reply_to"] else "", f"job {m['job']}" if m["job"] else "",
                 f"region {m['region']}" if m["region"] else "", f"crop {m['crop']}" if m["crop"] else "",
                 f"at {at['volume']} {at['axis']} z{at['z']} y{at['y']} x{at['x']}" if at else ""]
        link = " ".join(x for x in links if x)
        events.append(_event(m["time"], m["rnd"], "message", m["id"],
                             f"[{m['kind']}] {m['text']}" + (f" ({link})" if link else ""),
                             author=m["author"], kind=m["kind"], reply_to=m["reply_to"], job=m["job"], at=at))
    answer_s: dict[int, float] = {}
    for m in msgs:
        q = by_id.get(m["reply_to"])
        if q is not None and q["kind"] == "question" and m["kind"] in ANSWERING and q["id"] not in answer_s:
            answer_s[q["id"]] = max(0.0, m["t"] - q["t"])

    for a in autos:
        rnd = a["round"] if a["round"] is not None else round_at(_t(a["time"]))
        subject = f" {a['subject']} {a['subject_id']}" if a["subject_id"] else ""
        events.append(_event(a["time"], rnd, "intervention", a["id"], f"{a['action']}{subject}"
                             + (f" — {a['reason']}" if a["reason"] else ""), author=a["author"]))
    for n in notes:
        rnd = n["round"] if n["round"] is not None else round_at(_t(n["time"]))
        events.append(_event(n["time"], rnd, "note", n["id"], n["action"] + (f" — {n['reason']}" if n["reason"]
                                                                               else ""), author=n["author"]))

    times = {id(e): _t(e["time"]) for e in events}
    events.sort(key=lambda e: (times[id(e)], _RANK[e["type"]]))
    last_t = max(times.values(), default=None)
    return {"events": events, "rounds": _per_round(rounds, created, msgs, answer_s, events, result_anchors,
                                                   last_t, window_s)}


def _per_round(rounds, created, msgs, answer_s, events, result_anchors, last_t, window_s) -> list[dict]:
    anchors = sorted(a for a in result_anchors if a is not None)
    by_round: dict = defaultdict(list)
    for m in msgs:
        by_round[m["rnd"]].append(m)
    counts: dict = defaultdict(Counter)
    for e in events:
        if e["type"] in ("intervention", "note", "job submitted", "evaluation"):
            counts[e["round"]][e["type"]] += 1
    keys = ([None] if by_round.get(None) or counts.get(None) else []) + [r["n"] for r in rounds]
    ends = created[1:] + [last_t]
    span = {r["n"]: (c, e) for r, c, e in zip(rounds, created, ends)}
    out = []
    for key in keys:
        ms = by_round.get(key, [])
        kinds = Counter(m["kind"] for m in ms)
        waits = [answer_s[m["id"]] for m in ms if m["id"] in answer_s]
        questions = kinds.get("question", 0)
        start, end = span.get(key, (min((m["t"] for m in ms), default=None), created[0] if created else last_t))
        pattern, shares = classify([m["t"] for m in ms], [m["kind"] for m in ms], [m["dl"] for m in ms],
                                   anchors, start, end, window_s)
        c = counts.get(key, Counter())
        out.append({
            "round": key, "created": next((r["created"] for r in rounds if r["n"] == key), None),
            "messages": len(ms), "by_kind": {k: kinds.get(k, 0) for k in KINDS},
            "questions": questions, "answered": len(waits), "unanswered": questions - len(waits),
            "answer_median_s": median(waits) if waits else None, "answer_max_s": max(waits) if waits else None,
            "deadlocks": kinds.get("deadlock", 0), "interventions": c["intervention"], "notes": c["note"],
            "jobs": c["job submitted"], "evaluations": c["evaluation"], "pattern": pattern, **shares,
        })
    return out


def classify(times: list[float], kinds: list[str], deadlock_thread: list[bool], result_anchors: list[float],
             start: float | None, end: float | None, window_s: float = RESULT_WINDOW_S) -> tuple[str, dict]:
    """The pattern of one round's messages (module docstring) and the numbers it rests on.

    `deadlock_thread[i]`: message i is a deadlock or replies (through a chain) to one;
    `result_anchors`: sorted times of results; `start`/`end`: the round's time span."""
    n = len(times)
    if n == 0:
        return "silent", {"share_after_result": None, "share_deadlock": None, "coverage": None}
    anchors = sorted(result_anchors)

    def after(t: float, points: list[float]) -> bool:
        i = bisect.bisect_right(points, t) - 1
        return i >= 0 and t - points[i] <= window_s

    deadlocks = sorted(t for t, k in zip(times, kinds) if k == "deadlock")
    dl = [flag or after(t, deadlocks) for t, flag in zip(times, deadlock_thread)]
    share_result = sum(after(t, anchors) for t in times) / n
    share_dl = sum(dl) / n
    start = min(times) if start is None else min(start, min(times))
    end = max(times) if end is None else max(end, max(times))
    bins = max(1, math.ceil((end - start) / window_s))
    hit = {min(bins - 1, int((t - start) // window_s)) for t in times}
    coverage = len(hit) / bins
    shares = {"share_after_result": round(share_result, 3), "share_deadlock": round(share_dl, 3),
              "coverage": round(coverage, 3)}
    if deadlocks and all(dl):
        return "only at deadlocks", shares
    if share_result > 0.5:
        return "feedback around results", shares
    if n >= 3 and coverage >= 0.5:
        return "constant contact", shares
    return "sporadic", shares
