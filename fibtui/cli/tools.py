"""Tools around the session: doctor, demo, the TUI, benchmarks."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.markup import escape

from fibtui.cli import cli
from fibtui.cli.common import json_option, open_tui, print_status, session_option
from fibtui.output import console, emit_json


@cli.command()
@click.option("--session", "session_dir", envvar="FIBTUI_SESSION", type=click.Path(path_type=Path),
              help="Check this session's filesystem too.")
@click.option("--config", type=click.Path(path_type=Path), help="Cluster profiles file (default: the nearest).")
@json_option
def doctor(session_dir, config, as_json) -> None:
    """What works here: terminal colours, session filesystem, GPU, Slurm, SSH profiles."""
    from fibtui.doctor import run_all

    checks = run_all(session_dir, str(config) if config else None)
    if as_json:
        emit_json([{"check": n, "ok": ok, "detail": d} for n, ok, d in checks])
        return
    mark = {True: "[green]ok[/]", False: "[red]!![/]", None: "[dim]--[/]"}
    for name, ok, detail in checks:
        console.print(f"{mark[ok]}  [bold]{escape(name)}[/]: {escape(detail)}", highlight=False)




@cli.command()
@click.option("--dir", "demo_dir", default="fibtui-demo", show_default=True, type=click.Path(path_type=Path),
              help="Where to put the demo session and its synthetic volume.")
@click.option("--no-tui", is_flag=True, help="Print the summary instead of opening the TUI.")
@click.option("--iterations", default=None, type=int, help="Training iterations (default 400, about 2 min on 2 CPU cores).")
@json_option
def demo(demo_dir: Path, no_tui: bool, iterations: int | None, as_json: bool) -> None:
    """Make a synthetic volume and run one full round locally, then open the TUI."""
    from fibtui.demo import answer_lines, run_demo
    from sessions import measure
    from sessions.summary import summarize

    s = run_demo(demo_dir, iterations=iterations, quiet=as_json)
    if as_json:
        emit_json({**summarize(s), "answer": measure.latest(s)})
        return
    print_status(s)
    console.print("\n[bold]the answer[/] (pores per µm² of nuclear envelope, beside the generator's truth):")
    for line in answer_lines(s):
        console.print("  " + line, highlight=False)
    console.print(f"\ndemo session: [bold]{s.root}[/]\n  fibtui status --session {s.root}\n"
                  f"  fibtui tui --session {s.root}")
    if not no_tui and sys.stdout.isatty() and sys.stdin.isatty():
        open_tui(s.root, mouse=True)


@cli.command()
@session_option
@click.option("--no-mouse", is_flag=True, help="Do not capture the mouse (lets the terminal select text).")
@click.option("--read-only", is_flag=True,
              help="The scientist's view: sees everything, writes messages, never submits, cancels or changes "
                   "the round (also: role = \"scientist\" in fibtui.toml).")
@click.option("--config", type=click.Path(path_type=Path), help="Config file (default: the nearest fibtui.toml).")
def tui(session_dir, no_mouse, read_only, config) -> None:
    """Open the terminal UI on a session."""
    open_tui(session_dir, mouse=not no_mouse, read_only=read_only, config=config)



@cli.group()
def bench() -> None:
    """Measure storage formats and layouts on this machine."""


@bench.command()
@click.option("--shape", help="Volume Z,Y,X  [default: the --source's shape, else 128,1024,1024]")
@click.option("--source", type=click.Path(path_type=Path),
              help="Multipage uint8 TIFF to store (loaded into memory; tiled or cut to --shape).")
@click.option("--crop", default="32,256,256", show_default=True, help="3D crop Z,Y,X (a training/prediction block).")
@click.option("--slice-size", "side", default=512, show_default=True, type=int,
              help="Side of the xy slice region and width of the xz one (which spans all of Z).")
@click.option("--crops", "n_crops", default=50, show_default=True, type=int, help="Random 3D crops per format.")
@click.option("--slices", "n_slices", default=50, show_default=True, type=int,
              help="Random xy and xz slices per format.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed for positions (and synthetic data).")
@click.option("--workdir", type=click.Path(path_type=Path),
              help="Where to write (use the filesystem you care about)  [default: system temp]")
@click.option("--keep", is_flag=True, help="Keep the written files (their folder is printed).")
@click.option("--warm", is_flag=True, help="Do not evict files from the page cache before reading.")
@json_option
def formats(**options) -> None:
    """TIFF vs HDF5 vs Zarr vs Parquet read speed.

    Writes one volume in each format, then times the same random 3D crops and
    xy/xz slices through each, every request from a cold page cache unless --warm.
    """
    from fibtui import bench_formats

    bench_formats.formats(**options)
