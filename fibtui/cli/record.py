"""The record of a session for others: the scientist's report, the deposit package, reproducing a round,
and the infrastructure benchmark."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from fibtui.cli import cli
from fibtui.cli.common import json_option, open_dir, session_option
from fibtui.cli.tools import bench
from fibtui.output import console, emit_json
from sessions.errors import FibError


@cli.command()
@session_option
@click.option("--out", type=click.Path(path_type=Path), help="Report directory  [default: <session>/exports/report]")
@json_option
def report(session_dir, out, as_json) -> None:
    """A static HTML report (one page plus its PNGs, opens offline) for the scientist."""
    from fibtui.report import build_report

    s = open_dir(session_dir)
    try:
        res = build_report(s, out)
    finally:
        s.close()
    if as_json:
        emit_json(res)
        return
    console.print(f"report: [bold]{escape(res['index'])}[/] ({len(res['images'])} images, {res['rounds']} rounds)",
                  highlight=False)


@cli.command()
@session_option
@click.option("--format", "fmt", required=True, type=click.Choice(["bagit", "ro-crate"]), help="Package format.")
@click.option("--out", type=click.Path(path_type=Path), help="Package directory  [default: <session>/exports/FORMAT]")
@click.option("--include", default="", metavar="predictions,models",
              help="Also include: predictions (probability OME-Zarrs), models (trained weights + training spec).")
@click.option("--license", "license_id", default="CC0-1.0", show_default=True,
              help="SPDX id of the license: CC0-1.0, CC-BY-4.0, CC-BY-SA-4.0, ODbL-1.0.")
@click.option("--no-thread", is_flag=True, help="Leave out the curator–scientist messages, interventions and notes.")
@click.option("--author", "authors", multiple=True, help="An author for CITATION.cff (repeat; default: the session's).")
@json_option
def export(session_dir, fmt, out, include, license_id, no_thread, authors, as_json) -> None:
    """The deposit package: a BagIt bag or an RO-Crate (labels, specs, metrics, record, checksums)."""
    from sessions import export as ex

    inc = ex.parse_include(include)
    s = open_dir(session_dir)
    try:
        res = ex.export(s, fmt, out, include=inc, thread=not no_thread, license_id=license_id,
                        authors=list(authors) or None)
    finally:
        s.close()
    if as_json:
        emit_json(res)
        return
    console.print(f"{fmt}: [bold]{escape(res['path'])}[/] ({res['files']} files, {res['bytes'] / 1e6:.1f} MB, "
                  "every file checksummed; the raw volume is referenced, not copied)", highlight=False)


@cli.command()
@click.option("--session", "session_dir", envvar="FIBTUI_SESSION", type=click.Path(path_type=Path),
              help="The session whose round to reproduce (or set FIBTUI_SESSION).")
@click.option("--package", type=click.Path(path_type=Path),
              help="Or: a package from `fibtui export` (with --include models for a fine-tuned round).")
@click.option("--round", "round_n", required=True, type=int, help="The round to reproduce.")
@click.option("--raw", type=click.Path(path_type=Path),
              help="With --package: the raw volume (OME-Zarr), when not at its recorded location.")
@click.option("--scratch", type=click.Path(path_type=Path),
              help="Where the new jobs run  [default: <session>/exports/reproduce-rN, or next to the package]")
@click.option("--executor", default="local", show_default=True, help="local | slurm[:PROFILE] | ssh:PROFILE")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Override the recorded device.")
@json_option
def reproduce(session_dir, package, round_n, raw, scratch, executor, device, as_json) -> None:
    """Re-run a round's training and evaluation from its recorded specs and compare the scores."""
    from fibtui import reproduce as rep
    from fibtui.output import table

    if package is not None:
        session_dir = None  # the package holds everything (a FIBTUI_SESSION in the environment is not meant)
    elif session_dir is None:
        raise FibError("give --session S (or set FIBTUI_SESSION), or --package DIR")
    res = rep.run(session_dir=session_dir, package=package, round_n=round_n, scratch=scratch, raw=raw,
                  executor=executor, device=device)
    if as_json:
        emit_json(res)
    else:
        console.print(f"round {res['round']} reproduced in [bold]{escape(res['scratch'])}[/] on {res['executor']}, "
                      f"{res['mode']}", highlight=False)
        console.print(table(None, ["score", "recorded", "reproduced", "difference", "tolerance", ""],
                            [[r["name"], str(r["recorded"]), str(r["reproduced"]),
                              "–" if r["diff"] is None else f"{r['diff']:.3g}",
                              "–" if r["tolerance"] is None else str(r["tolerance"]), "ok" if r["ok"] else "DIFFERS"]
                             for r in res["scores"]]))
        if res["weights_identical"] is not None:
            console.print("trained weights: " + ("bit-identical" if res["weights_identical"] else "differ"))
        console.print("[green]reproduced[/]" if res["ok"] else "[red]not reproduced[/]")
    if not res["ok"]:
        raise SystemExit(1)


@bench.command("infra")
@session_option
@click.option("--executor", "executors", multiple=True, default=("local",), show_default=True,
              help="Where to run the round: local, slurm[:PROFILE], ssh:PROFILE (repeat to compare).")
@click.option("--round", "round_n", type=int, help="The round whose recorded specs to run  [default: the latest evaluated]")
@click.option("--iterations", type=int, help="Training iterations (default: the round's own; fewer for a quick run).")
@click.option("--out", type=click.Path(path_type=Path),
              help="Scratch sessions, one per executor  [default: <session>/exports/bench-infra-<time>]")
@click.option("--config", type=click.Path(path_type=Path), help="Config with profiles and [costs] (default: the nearest).")
@json_option
def bench_infra(session_dir, executors, round_n, iterations, out, config, as_json) -> None:
    """Local vs Slurm vs SSH: submit→start latency, overhead beyond compute, polling load, cost per round."""
    import time

    from fibtui import bench_infra as bi
    from fibtui.output import table
    from remote.executors.named import executor_for
    from remote.profiles import load_costs

    costs = load_costs(str(config) if config else None)
    exs = [executor_for(name, str(config) if config else None) for name in executors]
    s = open_dir(session_dir)
    try:
        out = out or s.path("exports", time.strftime("bench-infra-%Y%m%dT%H%M%S"))
        res = bi.bench(s, round_n, exs, out, iterations=iterations, costs=costs)
    finally:
        s.close()
    if as_json:
        emit_json(res)
        return
    cols, rows = bi.rows(res)
    console.print(table(f"round {res['round']} ({res['iterations']} training iterations) per executor", cols, rows))
    if any(r["priced_as_one_gpu"] for r in res["results"]):
        console.print("* ran on CPUs: priced as one GPU held for the jobs' wall time")
    if not res["prices"]:
        console.print("no [costs] in the config: add prices per GPU-hour to see the cost per round (see README)")
