"""`fibtui bench infra`: the same small round (train → predict → evaluate, from a session's recorded specs)
through each executor, and what the infrastructure adds to it.

Per executor, measured in one run side by side:
- submit → start latency: from the call to `Dispatcher.submit` to the job's own `started` event
  (mean over the round's three jobs; on a remote host its clock, so a skewed clock shows here);
- overhead beyond compute: the round's wall time as the client saw it (first submit → last job seen
  finished) minus the compute the jobs report (training and prediction loops, the evaluation's run):
  scheduling, interpreter and import start-up, syncing (SSH) and the poll that notices the end;
- polling load: status queries per minute (each one `squeue` for all jobs on Slurm, one SSH round trip
  over SSH, a look at /proc locally), with the Dispatcher's usual back-off;
- cost per round: the round's GPU-hours × each price per GPU-hour in `[costs]` (remote/profiles.py). A job
  that ran on CPUs (0 GPUs) is priced as if it held one GPU for its wall time, and the table says so: a
  CPU machine gives the shape of the comparison, a GPU cluster its numbers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from fibtui.reproduce import Recorded, _relocated, from_session
from sessions.errors import FibError

KINDS = ("train", "predict", "evaluate")


class CountingExecutor:
    """An executor that counts its status queries (everything else is passed through)."""

    def __init__(self, inner):
        self.inner = inner
        self.status_calls = 0

    def status(self, jobs):
        self.status_calls += 1
        return self.inner.status(jobs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _events(d: Path) -> dict[str, float]:
    out = {}
    try:
        for line in (d / "events.jsonl").read_text().splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("type") in ("started", "finished") and ev.get("type") not in out:
                out[ev["type"]] = float(ev["t"])
    except OSError:
        pass
    return out


def run_round(rec: Recorded, scratch: Path, executor, *, iterations: int | None = None) -> dict:
    """One round on one executor (an Executor object) in a scratch session; returns its measurements."""
    from remote.dispatch import Dispatcher
    from sessions import jobs
    from sessions.workspace import init_session

    s = init_session(scratch)
    counting = CountingExecutor(executor)
    try:
        s.db["rounds"].insert_all(rec.rounds, pk="n")
        d = Dispatcher(s, executors={executor.name: counting})
        t_first = time.time()
        rows, submits, seen = {}, {}, {}
        prev = None
        for kind in KINDS:
            spec = _relocated(rec.specs[kind], rec, **({"iterations": iterations} if kind == "train" else {}))
            if kind == "predict":
                spec["checkpoint"] = str(jobs.job_dir(s, prev) / (jobs.result(s, prev) or {}).get("checkpoint",
                                                                                                  "model.pt"))
            if kind == "evaluate":
                spec["prediction"] = str(jobs.job_dir(s, prev) / (jobs.result(s, prev) or {}).get(
                    "output", "prediction.ome.zarr"))
            submits[kind] = time.time()
            job = d.submit(rec.round_n, kind, spec, executor.name)
            prev = d.wait(job["id"], poll_s=1.0)
            seen[kind] = time.time()
            if prev["state"] != "COMPLETED":
                raise FibError(f"bench infra on {executor.name}: {kind} job {prev['id']} {prev['state']} "
                               f"({prev['reason'] or 'see `fibtui jobs log`'}); scratch session {scratch}")
            rows[kind] = prev
        wall = time.time() - t_first
        latency, compute, gpu_h, billable_h, gpus = [], 0.0, 0.0, 0.0, 0
        for kind in KINDS:
            j = jobs.get(s, rows[kind]["id"])
            ev = _events(jobs.job_dir(s, j))
            if "started" in ev:
                latency.append(ev["started"] - submits[kind])
            res = jobs.result(s, j) or {}
            run_s = (ev.get("finished", 0) - ev.get("started", 0)) if len(ev) == 2 else (j["elapsed_s"] or 0)
            compute += float(res["seconds"]) if res.get("seconds") is not None else run_s
            gpu_h += j["gpu_hours"] or 0.0
            gpus = max(gpus, j["gpus"] or 0)
            billable_h += (j["gpu_hours"] or 0.0) if j["gpus"] else (j["elapsed_s"] or run_s) / 3600.0
        return {"executor": executor.name, "wall_s": wall, "compute_s": compute, "overhead_s": wall - compute,
                "latency_s": sum(latency) / len(latency) if latency else None,
                "latency_max_s": max(latency) if latency else None,
                "status_calls": counting.status_calls, "calls_per_min": counting.status_calls / (wall / 60.0),
                "gpus": gpus, "gpu_hours": gpu_h, "billable_gpu_hours": billable_h,
                "priced_as_one_gpu": gpus == 0, "scratch": str(scratch),
                "jobs": [rows[k]["id"] for k in KINDS]}
    finally:
        executor.close()
        s.close()


def bench(session, round_n: int | None, executors: list, out: Path, *, iterations: int | None = None,
          costs: dict | None = None) -> dict:
    """Run the round once per executor (Executor objects); results with costs per [costs] price."""
    if round_n is None:
        done = session.db.execute("select max(round) from jobs where kind = 'evaluate' and state = 'COMPLETED'") \
            .fetchone()[0]
        if done is None:
            raise FibError(f"{session.root}: no evaluated round to run; finish a round first (or pass --round)")
        round_n = int(done)
    rec = from_session(session, round_n)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FibError(f"--out {out}: exists and is not empty; give a new directory")
    out.mkdir(parents=True, exist_ok=True)
    costs = costs or {"currency": "", "prices": {}, "source": None}
    results = []
    for i, ex in enumerate(executors):
        r = run_round(rec, out / f"{i}-{ex.name.replace(':', '-')}", ex, iterations=iterations)
        r["cost"] = {name: r["billable_gpu_hours"] * price for name, price in costs["prices"].items()}
        results.append(r)
    return {"round": round_n, "iterations": iterations or rec.specs["train"].get("iterations"),
            "currency": costs["currency"], "prices": costs["prices"], "costs_from": costs["source"],
            "results": results}


def rows(res: dict) -> tuple[list[str], list[list[str]]]:
    """The printed table: one row per measurement, one column per executor (fits a narrow terminal)."""
    rs = res["results"]
    cols = ["", *(r["executor"] for r in rs)]
    out = [
        ["submit → start (s, mean of 3 jobs)", *(f"{r['latency_s']:.2f}" if r["latency_s"] is not None else "–"
                                                 for r in rs)],
        ["round wall time (s)", *(f"{r['wall_s']:.1f}" for r in rs)],
        ["compute (s)", *(f"{r['compute_s']:.1f}" for r in rs)],
        ["overhead beyond compute (s)", *(f"{r['overhead_s']:.1f} ({100 * r['overhead_s'] / r['wall_s']:.0f} %)"
                                          for r in rs)],
        ["status queries per minute", *(f"{r['calls_per_min']:.1f} ({r['status_calls']})" for r in rs)],
        ["GPU-hours per round", *(f"{r['billable_gpu_hours']:.5f}" + (" *" if r["priced_as_one_gpu"] else "")
                                  for r in rs)],
    ]
    for name, price in res["prices"].items():
        out.append([f"cost at {name} ({price:g} {res['currency']}/GPU-h)".replace(" )", ")"),
                    *(f"{r['cost'][name]:.5f}" for r in rs)])
    return cols, out
