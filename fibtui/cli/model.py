"""Models of the session's rounds as files other tools run: `fibtui model export`."""

from __future__ import annotations

from pathlib import Path

import click

from fibtui.cli import cli
from fibtui.cli.common import json_option, open_dir, session_option
from fibtui.output import console, emit_json


@cli.group()
def model() -> None:
    """A round's trained model, exported for napari, bioimage.io tools, or any ONNX runtime."""


@model.command("export")
@session_option
@click.option("--round", "round_n", type=int, help="Round whose model to export (default: the latest).")
@click.option("--format", "fmt", type=click.Choice(["torchscript", "onnx"]), default="onnx", show_default=True)
@click.option("--out", type=click.Path(path_type=Path),
              help="Model file to write (default: <session>/exports/r<N>-<target>.<pt|onnx>); a .json sidecar "
                   "beside it records voxel size, halo, preprocessing and provenance.")
@json_option
def model_export(session_dir, round_n, fmt, out, as_json) -> None:
    """Export the round's model with its preprocessing inside and its voxel size recorded beside it."""
    from remote.model_export import FORMATS, export
    from sessions import interventions, jobs, rounds
    from sessions.errors import FibError
    from sessions.provenance import code_version

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
    interventions.record(s, "model exported", subject="job", subject_id=spec["train_job"], round_n=rnd["n"],
                         params={"format": fmt, "file": str(out)})
    if as_json:
        emit_json({"path": str(out), **side})
    else:
        console.print(f"round {rnd['n']} model ({spec['train_job']}) → [bold]{out}[/] ({fmt}); "
                      f"voxel size {side['voxel_size_nm']} nm, halo {side['halo']}, input extents × {side['input']['divisor']}")
