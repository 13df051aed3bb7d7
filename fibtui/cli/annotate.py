"""Where to label next (`suggest`) and labels in and out of other tools (`labels import|export`)."""

from __future__ import annotations

import click

from fibtui.cli import cli
from fibtui.cli.common import action_options, json_option, open_dir, run_action, session_option
from fibtui.output import console, emit_json, table


@cli.command("suggest")
@session_option
@click.option("--method", default="random", show_default=True, type=click.Choice(["random", "uncertainty",
                                                                                  "disagreement"]),
              help="Foreground-aware random boxes, highest mean prediction entropy, or most disagreement "
                   "between the last two predictions.")
@click.option("--count", default=5, show_default=True, type=int, help="How many boxes.")
@click.option("--size", metavar="Z,Y,X", help="Box shape (default: the held-out regions' shape, else 8,64,64).")
@click.option("--seed", type=int, help="Seed of the random draw (default: random, printed).")
@click.option("--volume", metavar="V", help="Volume (default: the session's only one).")
@json_option
def suggest_cmd(session_dir, method, count, size, seed, volume, as_json) -> None:
    """Candidate crop boxes to label next; never on held-out regions or existing crops."""
    from sessions.geometry import parse_triple
    from sessions.suggest import suggest

    s = open_dir(session_dir)
    rows = suggest(s, volume, method=method, count=count, seed=seed,
                   size=parse_triple(size, "--size", positive=True) if size else None)
    if as_json:
        emit_json(rows)
        return
    console.print(table(f"where to label next ({method}, seed {rows[0]['seed']})",
                        ["rank", "box z0:z1,y0:y1,x0:x1", "score", "foreground"],
                        [[r["rank"], r["range"], "" if r["score"] is None else f"{r['score']:.4f}",
                          "" if r["foreground"] is None else ("yes" if r["foreground"] else "")] for r in rows]))


@cli.group()
def labels() -> None:
    """Labels in and out of napari, Paintera and OME-Zarr viewers."""


@labels.command("import")
@session_option
@action_options("import_labels")
@json_option
def labels_import(session_dir, as_json, **raw) -> None:
    """Add crops from a napari TIFF/zarr, an OME-Zarr labels/ group or a Paintera/N5 label dataset."""
    out = run_action(open_dir(session_dir), "import_labels", raw)
    emit_json(out) if as_json else console.print(out["summary"])


@labels.command("export")
@session_option
@action_options("export_labels")
@json_option
def labels_export(session_dir, as_json, **raw) -> None:
    """Crops, held-out labels and the prediction as OME-Zarr labels/ beside the image (napari opens them)."""
    out = run_action(open_dir(session_dir), "export_labels", raw)
    emit_json(out) if as_json else console.print(out["summary"])
