"""TUI responsiveness on a big session, side by side with an empty one.

Two sessions are built in a temp dir with `init_session` and bulk inserts:
*empty* (just initialised) and *big*: 5 rounds, each with a completed train,
predict and evaluate job (the last training resumed once), 10^6 metric rows
(loss and lr per step of the 6 training attempts, plus the evaluations'
scores), 10^4 messages and 10^3 notes.

(a) cold start: from `FibApp(root)` to the first snapshot painted
    (`app.screen.snap` set, then the next screen refresh), headless at 200×60;
    empty and big alternate, median of --repeats.
(b) key → repaint while 200 jobs are polled: 200 RUNNING local jobs, each a
    real `/bin/sh -c 'sleep …' <job dir>` process (what the local executor
    recognises as the job), are added to both sessions; a few of them log
    progress between presses, so the poll keeps finding changes and never
    backs off. The focused widget (the jobs table) gets `down` keys; the
    latency is from posting the key to the first screen refresh after the
    cursor moved (`Widget.wait_for_refresh`), median and p95 over --presses.
    Pilot's own `press`/`pause` wait for the *process* to look idle (CPU
    time), which a polling worker thread never is, so they measure the poll,
    not the repaint; they are reported too, as "press+pause".

It relies only on `FibApp(root, refresh_s=...)`, `app.screen.snap` and
public Textual/Pilot APIs, so a rerun measures whatever the TUI is now.
`--profile` also times `fibtui.tui.snapshot.read` and the metric queries
on both sessions (outside the app).

    python benchmarks/tui_responsiveness.py [--repeats 3] [--presses 30] [--jobs 200] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from textual import events  # noqa: E402

from fibtui.tui.app import FibApp  # noqa: E402
from sessions.jobfiles import append_event  # noqa: E402
from sessions.timeutil import now  # noqa: E402
from sessions.workspace import init_session, open_session  # noqa: E402

METRIC_ROWS = 10 ** 6
MESSAGES = 10 ** 4
NOTES = 10 ** 3
ROUNDS = 5
SIZE = (200, 60)


def job_row(jid: str, round_n: int, kind: str, state: str, **kw) -> dict:
    return {"id": jid, "round": round_n, "kind": kind, "executor": "local", "external_id": None, "state": state,
            "reason": None, "dir": f"jobs/{jid}", "submitted": now(), "started": now(),
            "ended": now() if state not in ("RUNNING", "PENDING") else None,
            "progress": 1.0 if state == "COMPLETED" else 0.0, "message": None, "events_offset": 0,
            "heartbeat": None, "resumes": None, **kw}


def build_big(root: Path) -> dict:
    """Rounds 1..5, each train (round 5's resumed once) → predict → evaluate; 10^6 metric rows."""
    s = init_session(root)
    db = s.db
    t = now()
    db["rounds"].insert_all({"n": n, "created": t, "target": "mito", "parent": n - 1 or None, "status": "open"}
                            for n in range(1, ROUNDS + 1))
    rows, trains = [], []
    for n in range(1, ROUNDS + 1):
        if n < ROUNDS:
            trains.append(f"r{n}-train-1")
            rows.append(job_row(f"r{n}-train-1", n, "train", "COMPLETED"))
        else:  # preempted, then resumed
            trains += [f"r{n}-train-1", f"r{n}-train-2"]
            rows.append(job_row(f"r{n}-train-1", n, "train", "PREEMPTED"))
            rows.append(job_row(f"r{n}-train-2", n, "train", "COMPLETED", resumes=f"r{n}-train-1"))
        rows.append(job_row(f"r{n}-predict-1", n, "predict", "COMPLETED"))
        rows.append(job_row(f"r{n}-evaluate-1", n, "evaluate", "COMPLETED"))
    db["jobs"].insert_all(rows)
    for r in rows:
        d = s.path(r["dir"])
        d.mkdir(parents=True)
        spec = {"kind": r["kind"], "job_id": r["id"]}
        if r["kind"] == "evaluate":
            spec["regions"] = [{"id": i} for i in range(1, 9)]
        (d / "spec.json").write_text(json.dumps(spec))
    evals = [(f"r{n}-evaluate-1", n) for n in range(1, ROUNDS + 1)]
    score_rows = [(job, n, 0, name, 0.5 + 0.05 * n, t) for job, n in evals
                  for name in ("iou", "f1", "precision", "recall", "objects_pred_heldout", "objects_true_heldout")]
    per_job = (METRIC_ROWS - len(score_rows)) // (2 * len(trains))
    with s.write() as tx:
        tx.execute("select 1")
        conn = tx.conn
        for i, job in enumerate(trains):
            n = int(job[1])
            first = per_job if job.endswith("-2") else 0   # the resumed attempt continues the step count
            conn.executemany(
                "insert into metrics (job, round, step, name, value, time) values (?, ?, ?, ?, ?, ?)",
                ((job, n, step, name, (1.0 / (1 + step / 5000) if name == "loss" else 1e-3), t)
                 for step in range(first, first + per_job) for name in ("loss", "lr")))
        conn.executemany("insert into metrics (job, round, step, name, value, time) values (?, ?, ?, ?, ?, ?)",
                         score_rows)
        conn.executemany("insert into messages (time, author, text, round, kind) values (?, ?, ?, ?, 'plain')",
                         ((t, "alice" if i % 2 else "bob", f"message {i}: those false negatives on one side?", 1)
                          for i in range(MESSAGES)))
        conn.executemany("insert into notes (time, author, action, reason, round) values (?, ?, ?, ?, ?)",
                         ((t, "bob", f"relabelled crop {i}", "missed mitochondria", 1) for i in range(NOTES)))
    counts = {k: db[k].count for k in ("metrics", "messages", "notes", "jobs")}
    s.close()
    return counts


def build_empty(root: Path) -> dict:
    s = init_session(root)
    counts = {k: s.db[k].count for k in ("metrics", "messages", "notes", "jobs")}
    s.close()
    return counts


def add_running_jobs(root: Path, n: int) -> list[subprocess.Popen]:
    """`n` RUNNING local predict jobs in a new round, each a live process naming its job dir."""
    s = open_session(root)
    try:
        last = s.db.execute("select max(n) from rounds").fetchone()[0] or 0
        r = last + 1
        s.db["rounds"].insert({"n": r, "created": now(), "target": "mito", "parent": last or None, "status": "open"})
        procs, rows = [], []
        for i in range(1, n + 1):
            jid = f"r{r}-predict-{i}"
            d = s.path("jobs", jid)
            d.mkdir(parents=True)
            (d / "spec.json").write_text(json.dumps({"kind": "predict", "job_id": jid}))
            p = subprocess.Popen(["/bin/sh", "-c", "sleep 900", str(d.resolve())], start_new_session=True,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(p)
            append_event(d, "started", pid=p.pid, gpus=0)
            append_event(d, "progress", step=1, total=1000)
            (d / "stderr.log").write_text(f"job {jid} predicting\n")
            rows.append(job_row(jid, r, "predict", "RUNNING", external_id=str(p.pid), ended=None))
        s.db["jobs"].insert_all(rows)
        return procs
    finally:
        s.close()


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # the shell and its sleep
        except ProcessLookupError:
            pass
    for p in procs:
        p.wait()


async def until(predicate, timeout: float = 60.0, step: float = 0.001) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError("the TUI did not get there in time")
        await asyncio.sleep(step)


async def cold_start(root: Path) -> float:
    t0 = time.perf_counter()
    app = FibApp(root, refresh_s=30)
    async with app.run_test(size=SIZE):
        await until(lambda: getattr(app.screen, "snap", None) is not None)
        await app.screen.wait_for_refresh()
        dt = time.perf_counter() - t0
    return dt


def cursor(app) -> object:
    w = app.focused
    return (id(w), getattr(w, "cursor_coordinate", None), getattr(w, "scroll_y", None))


async def key_latency(root: Path, presses: int, refresh_s: float, progress_dirs: list[Path]) -> dict:
    app = FibApp(root, refresh_s=refresh_s)
    lat, idle = [], []
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: getattr(app.screen, "snap", None) is not None)
        await pilot.pause(2 * refresh_s)  # a few polls in: the steady state
        for i in range(presses):
            for d in progress_dirs[i % 4::4][:5]:  # some jobs log progress: the poll keeps finding changes
                append_event(d, "progress", step=2 + i, total=1000)
            await asyncio.sleep(0.1 + 0.37 * refresh_s * ((i * 7) % 10) / 10)  # sample every phase of the poll
            before = cursor(app)
            t0 = time.perf_counter()
            app.post_message(events.Key("down", None))
            if before[1] is not None:  # a table-like widget has focus: wait until its cursor moved
                await until(lambda: cursor(app) != before, timeout=10)
            await app.screen.wait_for_refresh()
            lat.append(time.perf_counter() - t0)
        for i in range(max(3, presses // 3)):  # what Pilot's press + pause see (process idle by CPU time)
            t0 = time.perf_counter()
            await pilot.press("down")
            await pilot.pause()
            idle.append(time.perf_counter() - t0)
        polled = sum(1 for j in getattr(app.screen.snap, "jobs", []) if j.get("state") == "RUNNING")
    return {"median": statistics.median(lat), "p95": pct(lat, 95), "max": max(lat),
            "idle_median": statistics.median(idle), "running_jobs": polled}


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q / 100 * (len(xs) - 1)))]


def profile(root: Path) -> dict:
    """Where a snapshot's time goes (outside the app, on the session as it is): the first read after
    opening (cold caches, as at start-up) and the next ones (as on every refresh)."""
    import cProfile
    import pstats

    from fibtui.tui import snapshot
    from sessions import jobs, metrics

    getattr(metrics, "_cache", {}).clear()
    s = open_session(root)
    out = {}
    try:
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.runcall(snapshot.read, s, None)
        out["snapshot.read, first"] = (time.perf_counter() - t0) * 1e3
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            snapshot.read(s, None)
            ts.append(time.perf_counter() - t0)
        out["snapshot.read, again"] = statistics.median(ts) * 1e3
        train = next(s.db["jobs"].rows_where("kind = 'train'", order_by="rowid desc", limit=1), None)
        if train:
            chain = jobs.lineage(s, train["id"])
            getattr(metrics, "_cache", {}).clear()
            t0 = time.perf_counter()
            metrics.curve(s, chain)
            out[f"metrics.curve cold ({len(chain)} attempts, loss+lr)"] = (time.perf_counter() - t0) * 1e3
        stats = pstats.Stats(prof)
        rows = sorted(((v[3], f"{Path(k[0]).name}:{k[1]}({k[2]})") for k, v in stats.stats.items()), reverse=True)
        out["top"] = ", ".join(f"{name} {t * 1e3:.0f}" for t, name in rows[1:6])
    finally:
        s.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--presses", type=int, default=30)
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--refresh", type=float, default=0.5, help="FibApp refresh_s during (b)")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fibtui-bench-") as tmp:
        roots = {"empty": Path(tmp) / "empty", "big": Path(tmp) / "big"}
        t0 = time.perf_counter()
        counts = {"empty": build_empty(roots["empty"]), "big": build_big(roots["big"])}
        print(f"built in {time.perf_counter() - t0:.1f} s: " +
              "; ".join(f"{k} {v}" for k, v in counts.items()), flush=True)
        if args.profile:
            for k, root in roots.items():
                p = profile(root)
                top = p.pop("top")
                print(f"profile {k}: " + ", ".join(f"{n} {v:.1f} ms" for n, v in p.items()))
                print(f"    cumulative ms, first read: {top}")

        asyncio.run(cold_start(roots["empty"]))  # warm-up: imports, CSS parse
        cold = {"empty": [], "big": []}
        for _ in range(args.repeats):
            for k in ("empty", "big"):
                cold[k].append(asyncio.run(cold_start(roots[k])))
        ce, cb = (statistics.median(cold[k]) for k in ("empty", "big"))
        print(f"(a) cold start to first snapshot painted, {SIZE[0]}x{SIZE[1]}, median of {args.repeats}: "
              f"empty {ce * 1e3:.0f} ms, big {cb * 1e3:.0f} ms; ratio big/empty {cb / ce:.2f} "
              f"(target: big <= 1000 ms: {'met' if cb <= 1.0 else 'NOT met'})", flush=True)

        procs = []
        try:
            dirs = {}
            for k, root in roots.items():
                procs += add_running_jobs(root, args.jobs)
                dirs[k] = sorted(p for p in (root / "jobs").iterdir() if (p / "events.jsonl").exists()
                                 and "-predict-" in p.name and p.name.startswith(f"r{ROUNDS + 1 if k == 'big' else 1}-"))
            cold_jobs = {k: asyncio.run(cold_start(roots[k])) for k in ("empty", "big")}
            print(f"    with {args.jobs} running jobs (one run each): empty {cold_jobs['empty'] * 1e3:.0f} ms, "
                  f"big {cold_jobs['big'] * 1e3:.0f} ms", flush=True)
            res = {k: asyncio.run(key_latency(roots[k], args.presses, args.refresh, dirs[k])) for k in ("empty", "big")}
        finally:
            stop(procs)
        e, b = res["empty"], res["big"]
        print(f"(b) key -> repaint, {args.jobs} running jobs polled every {args.refresh} s, {args.presses} presses: "
              f"empty median {e['median'] * 1e3:.1f} ms p95 {e['p95'] * 1e3:.1f} ms; "
              f"big median {b['median'] * 1e3:.1f} ms p95 {b['p95'] * 1e3:.1f} ms (max {b['max'] * 1e3:.0f}); "
              f"ratio big/empty median {b['median'] / e['median']:.2f} p95 {b['p95'] / e['p95']:.2f} "
              f"(target p95 <= 100 ms: {'met' if b['p95'] <= 0.1 else 'NOT met'})")
        print(f"    Pilot press+pause (waits for CPU idle): empty {e['idle_median'] * 1e3:.0f} ms, "
              f"big {b['idle_median'] * 1e3:.0f} ms; RUNNING jobs listed in the last snapshot: "
              f"{e['running_jobs']}/{b['running_jobs']}")
    print("reproduce: python benchmarks/tui_responsiveness.py " +
          " ".join(f"--{k} {v}" for k, v in (("repeats", args.repeats), ("presses", args.presses),
                                               ("jobs", args.jobs), ("refresh", args.refresh)))
          + (" --profile" if args.profile else ""))


if __name__ == "__main__":
    main()
