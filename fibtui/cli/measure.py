"""`fibtui measure`: pores per nucleus and their density per µm² of nuclear envelope."""

from __future__ import annotations

import csv
import sys

import click

from fibtui.cli import cli
from fibtui.cli.common import action_options, json_option, open_dir, run_action, session_option
from fibtui.output import console, emit_json, table
from sessions.errors import FibError


def print_answer(answer: dict) -> None:
    r = answer["readout"]
    console.print(table(f"pores per nucleus ({answer['job']})",
                        ["nucleus", "pores", "envelope µm²", "density /µm²", "95 % interval", "note"],
                        [[n["nucleus"], n["pores"], f"{n['envelope_um2']:.2f}", f"{n['density_per_um2']:.2f}",
                          f"{n['ci95'][0]:.2f}–{n['ci95'][1]:.2f}", "; ".join(n["warnings"])] for n in r["nuclei"]]))
    from sessions.measure import with_truth

    for line in with_truth(answer):
        console.print(line, highlight=False)
    for role, p in answer["provenance"].items():
        src = p.get("labels") or (f"target {p['target']}: round {p['round']}, {p['predict_job']} "
                                  f"(model {p['train_job']}, crops {','.join(map(str, p['crops']))})")
        console.print(f"  {role}: {src}", highlight=False)


@cli.command()
@session_option
@action_options("measure")
@click.option("--detach", is_flag=True, help="Submit and return; do not follow progress.")
@click.option("--csv", "as_csv", is_flag=True, help="Per-nucleus table as CSV on stdout.")
@json_option
def measure(session_dir, detach, as_csv, as_json, **raw) -> None:
    """Count pores per nucleus and their density per µm² of envelope (a job: local, Slurm or SSH).

    Pores and envelope come from a target's latest prediction (--pores/--envelope, default pore and
    envelope) or from label volumes (--pores-labels/--envelope-labels). The pore and nucleus tables
    are exported to the session's exports/<job>/ as Parquet and CSV.
    """
    from fibtui.cli.rounds import follow
    from remote.dispatch import Dispatcher
    from sessions import measure as m

    s = open_dir(session_dir)
    job = run_action(s, "measure", raw)
    if detach:
        emit_json(job) if as_json else console.print(job["summary"])
        return
    if not (as_json or as_csv):
        console.print(job["summary"])
    job = follow(Dispatcher(s), job, quiet=as_json or as_csv)
    if job["state"] != "COMPLETED":
        raise FibError(f"job {job['id']} {job['state']}: {job['reason'] or 'see its stderr.log'} "
                       f"({s.path(job['dir'], 'stderr.log')})")
    answer = m.latest(s)
    dest = m.export(s, answer)
    if as_json:
        emit_json({**answer, "exports": str(dest)})
    elif as_csv:
        w = csv.writer(sys.stdout)
        w.writerow(["nucleus", "pores", "envelope_um2", "density_per_um2", "ci95_lo", "ci95_hi", "partial"])
        for n in answer["readout"]["nuclei"]:
            w.writerow([n["nucleus"], n["pores"], n["envelope_um2"], n["density_per_um2"], *n["ci95"], n["partial"]])
    else:
        print_answer(answer)
        console.print(f"tables: {dest}")
