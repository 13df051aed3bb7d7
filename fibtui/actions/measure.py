"""The scientist's answer: pores per nucleus and their density, as a job."""

from __future__ import annotations

from pathlib import Path

from fibtui.actions.base import Context, _dispatcher, log
from sessions import rounds
from sessions.workspace import Session


def measure(session: Session, ctx: Context, *, pores: str | None, pores_labels: Path | None, envelope: str | None,
            envelope_labels: Path | None, threshold: float, high: float | None, block, split: bool,
            array_tasks: int | None, executor: str) -> dict:
    spec = rounds.measure_spec(session, pores=pores, pores_labels=pores_labels, envelope=envelope,
                               envelope_labels=envelope_labels, threshold=threshold, high=high, block=block,
                               split=split, array_tasks=array_tasks)
    n = rounds.current(session)["n"]  # a measure job belongs to the latest round, like its inputs
    job = _dispatcher(session, ctx).submit(n, "measure", spec, executor)
    prov = spec["provenance"]
    what = {role: (p.get("labels") or f"{p['target']} ({p['predict_job']})") for role, p in prov.items()}
    log(session, ctx, "job submitted", "job", job["id"], n,
        {"kind": "measure", "executor": executor, "pores": what["pores"], "envelope": what["envelope"],
         "threshold": threshold, "high": high, "split": split or None, "array_tasks": array_tasks})
    return {**job, "summary": f"submitted {job['id']} on {executor}: pores from {what['pores']} on the envelope "
                              f"from {what['envelope']}"}
