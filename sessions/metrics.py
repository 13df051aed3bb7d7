"""Metric series the TUI plots, read so that a session with millions of metric rows stays fast.

Every query walks the `metrics (job, name, step)` index over one job's range
of one metric and aggregates in SQL: a curve comes back as at most `points`
bins, whatever the number of logged steps. Plain data in, plain data out:
no Textual here.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict

from sessions.workspace import Session

SCORES = ("iou", "f1", "precision", "recall", "object_f1")  # object_f1: pores matched by centroid (remote/evaluate.py)
COMPARED = (("iou", "IoU"), ("f1", "F1"))   # what a regression is judged on, and how it is named


def curve(session: Session, job_ids: list[str], names=("loss", "lr"),
          points: int = 200) -> dict[str, tuple[list[int], list[float]]]:
    """Per metric name, (steps, mean values) over the attempts `job_ids` (in order, e.g. `jobs.lineage`),
    in ≤ `points` bins of steps.

    Later attempts continue the step count of earlier ones. Where an attempt
    re-logs steps its predecessor already logged (it resumed from a
    checkpoint older than the predecessor's last step), the later attempt's
    values win: attempt i contributes its steps below attempt i+1's first.
    Bins are `width` steps wide from the first step; a bin's step is the mean
    step of its rows. Names without rows are left out.

    Cost: two index seeks per attempt and name, then one SQL pass over the bins
    not already known. A bin's sums are kept (per process, per session file) while
    its step range is unchanged; metric steps only grow, so a refresh during
    training reads just the last bin(s) again, not the whole run.
    """
    points = max(1, int(points))
    out: dict[str, tuple[list[int], list[float]]] = {}
    for name in names:
        spans = _spans(session, job_ids, name)
        if not spans:
            continue
        first = min(lo for _, lo, _ in spans)
        last = max(stop for _, _, stop in spans) - 1
        width = max(1, -(-(last - first + 1) // points))
        bins: dict[int, list[float]] = {}
        for job, lo, stop in spans:
            for b, (s_step, s_value, n) in _span_bins(session, job, name, lo, stop, first, width).items():
                acc = bins.setdefault(b, [0.0, 0.0, 0])
                acc[0] += s_step
                acc[1] += s_value
                acc[2] += n
        keys = sorted(bins)
        out[name] = ([int(round(bins[b][0] / bins[b][2])) for b in keys], [bins[b][1] / bins[b][2] for b in keys])
    return out


def _spans(session: Session, job_ids: list[str], name: str) -> list[tuple[str, int, int]]:
    """(job, first step, one past the last step it contributes) per attempt with rows of `name`."""
    ranges = []
    for job in job_ids:
        # two statements: SQLite answers a lone min() or max() with one index seek, both together with a scan
        lo = session.db.execute("select min(step) from metrics where job = ? and name = ?", [job, name]).fetchone()[0]
        hi = session.db.execute("select max(step) from metrics where job = ? and name = ?", [job, name]).fetchone()[0]
        if lo is not None:
            ranges.append((job, lo, hi))
    spans = []
    for i, (job, lo, hi) in enumerate(ranges):
        stop = hi + 1 if i + 1 == len(ranges) else min(hi + 1, ranges[i + 1][1])
        if stop > lo:
            spans.append((job, lo, stop))
    return spans


_BINS_SQL = """
with recursive bins(b) as (select ?3 union all select b + 1 from bins where b < ?4)
select b, (select json_array(sum(step), sum(value), count(value)) from metrics
           where job = ?1 and name = ?2 and step >= max(?5 + b * ?6, ?7) and step < min(?5 + (b + 1) * ?6, ?8))
from bins
"""
_CACHE_KEYS = 256
_cache: OrderedDict[tuple, dict[int, tuple[tuple[int, int], tuple[float, float, int]]]] = OrderedDict()
_cache_lock = threading.Lock()


def _span_bins(session: Session, job: str, name: str, lo: int, stop: int, first: int,
               width: int) -> dict[int, tuple[float, float, int]]:
    """{bin: (sum of steps, sum of values, rows)} of one attempt's steps [lo, stop) in bins of `width` from `first`.

    Each bin is one indexed range read (no sort of the rows). Bins whose step range is the
    same as when they were read come from the cache."""
    key = (str(session.db_path), job, name, first, width)
    with _cache_lock:
        known = _cache.get(key, {})
        if key in _cache:
            _cache.move_to_end(key)
    b0, b1 = (lo - first) // width, (stop - 1 - first) // width
    out, missing = {}, []
    for b in range(b0, b1 + 1):
        rng = (max(first + b * width, lo), min(first + (b + 1) * width, stop))
        hit = known.get(b)
        if hit is not None and hit[0] == rng:
            out[b] = hit[1]
        else:
            missing.append(b)
    if missing:
        fresh = {}
        for b, packed in session.db.execute(_BINS_SQL, [job, name, missing[0], missing[-1], first, width, lo, stop]):
            if b in out:
                continue
            s_step, s_value, n = json.loads(packed)
            rng = (max(first + b * width, lo), min(first + (b + 1) * width, stop))
            fresh[b] = (rng, (s_step or 0, s_value or 0.0, n))
        with _cache_lock:
            entry = _cache.setdefault(key, {})
            entry.update(fresh)
            _cache.move_to_end(key)
            while len(_cache) > _CACHE_KEYS:
                _cache.popitem(last=False)
        out.update((b, v[1]) for b, v in fresh.items())
    return {b: v for b, v in out.items() if v[2]}


def round_scores(session: Session) -> list[dict]:
    """Per round with a completed evaluation, its latest one: {round, job, iou, f1, precision, recall, object_f1,
    regions, target}.

    `regions` are the sorted held-out region ids listed in the evaluate job's
    spec.json; None when the spec cannot be read (such a round is never compared).
    A score the job did not record is None. Ordered by round.
    """
    db = session.db
    latest = db.execute(
        "select round, id, dir from jobs where rowid in (select max(rowid) from jobs "
        "where kind = 'evaluate' and state = 'COMPLETED' group by round) order by round").fetchall()
    if not latest:
        return []
    ids = [job for _, job, _ in latest]
    marks = ",".join("?" * len(ids))
    names = ",".join("?" * len(SCORES))
    values: dict[tuple[str, str], float] = {}
    for job, name, value in db.execute(
            f"select job, name, value from metrics where id in (select max(id) from metrics "
            f"where job in ({marks}) and name in ({names}) group by job, name)", [*ids, *SCORES]):
        values[(job, name)] = value
    out = []
    for round_n, job, d in latest:
        regions, target = _regions_and_target(session, d)
        out.append({"round": round_n, "job": job, **{k: values.get((job, k)) for k in SCORES},
                    "regions": regions, "target": target})
    return out


def _regions_and_target(session: Session, job_dir: str) -> tuple[list[int] | None, str | None]:
    """The held-out region ids an evaluation used and the class it scored, from its spec.json."""
    try:
        spec = json.loads(session.path(job_dir, "spec.json").read_text())
        regions = sorted(r["id"] if isinstance(r, dict) else r for r in spec["regions"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, None
    return regions, spec.get("target_name")


def regressions(scores: list[dict]) -> list[str]:
    """One warning per round that scores lower (IoU or F1, at 3 decimals) than the scored round before it of
    the same target class, when both were evaluated on the same held-out regions. A pore round is never
    compared with an envelope round: one label at a time, each target has its own curve."""
    out, last = [], {}
    for cur in scores:
        prev = last.get(cur.get("target"))
        last[cur.get("target")] = cur
        if prev is None or prev.get("regions") is None or prev.get("regions") != cur.get("regions"):
            continue
        drops = []
        for key, label in COMPARED:
            a, b = cur.get(key), prev.get(key)
            if a is not None and b is not None and round(a, 3) < round(b, 3):
                drops.append((label, a, b))
        if drops:
            parts = [f"{label} {a:.3f} < " + (f"round {prev['round']} " if i == 0 else "") + f"{b:.3f}"
                     for i, (label, a, b) in enumerate(drops)]
            out.append(f"round {cur['round']} " + ", ".join(parts) + " on the same held-out regions")
    return out
