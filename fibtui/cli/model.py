"""Models of the session's rounds as files other tools run: `fibtui model export`."""

from __future__ import annotations

from pathlib import Path

import click

from fibtui.cli import cli
from fibtui.cli.common import json_option, open_dir, session_option
from fibtui.output import console, emit_json, err_console


@cli.group()
def model() -> None:
    """A round's trained model, exported for napari, bioimage.io tools, or any ONNX runtime."""


@model.command("export")
@session_option
@click.option("--round", "round_n", type=int, help="Round whose model to export (default: the latest).")
@click.option("--format", "fmt", default="onnx", show_default=True, metavar="torchscript|onnx",
              help="TorchScript (torch, deepImageJ) or ONNX (onnxruntime, ilastik, any ONNX runtime).")
@click.option("--out", type=click.Path(path_type=Path),
              help="Model file to write (default: <session>/exports/r<N>-<target>.<pt|onnx>); a .json sidecar "
                   "beside it records voxel size, halo, preprocessing and provenance.")
@click.option("--bioimageio", is_flag=True,
              help="Also write a bioimage.io model package (<out>.bioimageio.zip: rdf.yaml, weights, test tensors "
                   "from the session's prediction, cover, README), validated by bioimageio.spec if installed.")
@json_option
def model_export(session_dir, round_n, fmt, out, bioimageio, as_json) -> None:
    """Export the round's model with its preprocessing inside (or, for per-slice methods, described beside it)
    and its voxel size recorded beside it."""
    from remote.bioimageio import write_package
    from remote.model_export import FORMATS, check_format, export, warning
    from sessions import interventions, jobs, rounds
    from sessions.errors import FibError
    from sessions.provenance import code_version

    check_format(fmt)
    s = open_dir(session_dir)
    rnd = rounds.get(s, round_n)
    spec = rounds.predict_spec(s, rnd)  # the round's completed training, or one line saying there is none
    train = jobs.spec(s, jobs.get(s, spec["train_job"])) or {}
    out = out or s.path("exports", f"r{rnd['n']}-{train.get('target_name', 'model')}{FORMATS[fmt]}")
    if not out.parent.is_dir():
        raise FibError(f"--out {out}: folder {out.parent} does not exist")
    side = export(Path(spec["checkpoint"]), fmt, out,
                  {"round": rnd["n"], "train_job": spec["train_job"], "session": str(s.root),
                   "exported_by": code_version()})
    pkg = write_package(out, side, Path(spec["checkpoint"]), spec["volume"]["path"]) if bioimageio else None
    interventions.record(s, "model exported", subject="job", subject_id=spec["train_job"], round_n=rnd["n"],
                         params={"format": fmt, "file": str(out), **({"bioimageio": pkg["path"]} if pkg else {})})
    warn = warning(side)
    if warn:
        err_console.print(f"[yellow]warning:[/] {warn}", highlight=False, soft_wrap=True)
    if as_json:
        emit_json({"path": str(out), **side, **({"bioimageio": pkg} if pkg else {})})
        return
    console.print(f"round {rnd['n']} model ({spec['train_job']}) → [bold]{out}[/] ({fmt}); "
                  f"voxel size {side['voxel_size_nm']} nm, halo {side['halo']}, input extents × {side['input']['divisor']}")
    if pkg:
        console.print(f"bioimage.io package → [bold]{pkg['path']}[/] ({pkg['note']})", soft_wrap=True)
