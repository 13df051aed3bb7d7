"""Session and data commands: init, synth, ingest, crops and held-out regions."""

from __future__ import annotations

from pathlib import Path

import click

from fibtui.cli import cli
from fibtui.cli.common import action_options, json_option, open_dir, run_action, session_option
from fibtui.output import console, emit_json, progress, stage_callback, table
from sessions.errors import FibError
from sessions.geometry import parse_triple


@cli.command()
@click.argument("session_dir", type=click.Path(path_type=Path))
@json_option
def init(session_dir: Path, as_json: bool) -> None:
    """Create a session workspace and its SQLite file."""
    from sessions.workspace import init_session

    s = init_session(session_dir)
    if as_json:
        emit_json({"session": str(s.root)})
    else:
        console.print(f"session created at [bold]{s.root}[/]")


@cli.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--shape", default="64,256,256", show_default=True, help="Volume shape Z,Y,X in voxels.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed (same seed, same volume).")
@click.option("--voxel-size", default="8,8,8", show_default=True, help="Voxel size Z,Y,X in nm.")
@click.option("--labels", "labels_out", type=click.Path(path_type=Path),
              help="Where to write the ground-truth labels (default: <out stem>.labels.tif).")
def synth(out: Path, shape: str, seed: int, voxel_size: str, labels_out: Path | None) -> None:
    """Generate a synthetic FIB-SEM-like volume with exact ground truth (streamed to disk).

    OUT ending in .tif/.tiff writes a multipage BigTIFF; ending in .ome.zarr
    writes an OME-Zarr image. Ground-truth labels (0 background, 1 nucleus,
    2 envelope, 3 pore, 4 mito) and a .truth.json with counts and densities
    are written beside it.
    """
    from sessions import synth as synthmod

    shp = parse_triple(shape, "--shape", positive=True)
    vs = parse_triple(voxel_size, "--voxel-size", positive=True, integer=False)
    scene = synthmod.make_scene(shp, seed, voxel_size=vs)
    name = out.name
    if not (name.endswith((".tif", ".tiff", ".ome.zarr"))):
        raise FibError(f"{out}: output must end in .tif, .tiff or .ome.zarr")
    stem = name.split(".")[0]
    labels_out = labels_out or out.with_name(f"{stem}.labels.tif")
    if out.exists():
        raise FibError(f"{out}: already exists; choose another path or remove it")
    with progress() as p:
        cb = stage_callback(p)
        if name.endswith(".ome.zarr"):
            synthmod.write_ome_zarr(scene, out, labels_out, progress=lambda d, t: cb("synth", d, t))
        else:
            synthmod.write_tiff(scene, out, labels_out, progress=lambda d, t: cb("synth", d, t))
    truth = scene.truth()
    console.print(f"wrote [bold]{out}[/] {shp} and labels [bold]{labels_out}[/]; "
                  f"{truth['pore_count']} pores, {truth['mitochondria_count']} mitochondria")


@cli.command()
@click.argument("source", type=click.Path(path_type=Path))
@session_option
@click.option("--voxel-size", help="Voxel size Z,Y,X in nm (required unless the source's metadata carries it).")
@click.option("--name", help="Volume name in the session (default: the source's name).")
@click.option("--convert", "convert_spec", metavar="SPEC",
              help="Conversion to uint8, required for other dtypes: 'percentile' (0.1/99.9 % of a sample), "
                   "'percentile:LO,HI' or 'range:LO,HI' (source values mapped to 0 and 255).")
@click.option("--workers", type=click.IntRange(1, 256), help="Threads (default: the CPUs this process may use).")
@json_option
def ingest(source: Path, session_dir: Path, voxel_size: str | None, name: str | None, convert_spec: str | None,
           workers: int | None, as_json: bool) -> None:
    """Convert a raw volume into a multiscale OME-Zarr in the session.

    SOURCE is a multipage (Big)TIFF, a folder of TIFF slices, an HDF5 dataset
    (file.h5:/path), or an N5 or zarr (v2/v3, OME-Zarr) array. Interrupted? Run
    the same command again: it resumes where it stopped.
    """
    from sessions.volumes import catalog

    s = open_dir(session_dir)
    vs = parse_triple(voxel_size, "--voxel-size", positive=True, integer=False) if voxel_size else None
    with progress(not as_json) as p:
        row = catalog.ingest(s, source, name=name, voxel_size=vs, convert=convert_spec, workers=workers,
                             progress=stage_callback(p),
                             announce=None if as_json else lambda line: p.console.print(line, markup=False, soft_wrap=True))
    if as_json:
        emit_json(row)
    else:
        done = "already ingested" if row["status"] == "exists" else "ingested"
        console.print(f"volume [bold]{row['name']}[/] {done}: {row['shape']} @ {row['voxel_size']} nm, "
                      f"{row['levels']} levels, {row['source_checksum'][:19]}…")


# ---------------------------------------------------------------- crops & held-out regions
@cli.group()
def crop() -> None:
    """Labelled crops (sparse: 0 = unlabelled, 1..n = classes)."""


@crop.command("add")
@session_option
@action_options("add_crop")
@json_option
def crop_add(session_dir, as_json, **raw) -> None:
    """Add a labelled crop to a round (a label TIFF or zarr from napari, Paintera or any tool)."""
    row = run_action(open_dir(session_dir), "add_crop", raw)
    emit_json(row) if as_json else console.print(row["summary"])


@crop.command("list")
@session_option
@json_option
def crop_list(session_dir, as_json) -> None:
    """List the session's crops."""
    s = open_dir(session_dir)
    rows = list(s.db["crops"].rows_where(order_by="id"))
    if as_json:
        emit_json(rows)
        return
    console.print(table("crops", ["id", "round", "volume", "offset", "shape", "labelled", "source"],
                        [[r["id"], r["round"], r["volume"], r["offset"], r["shape"], r["labelled_voxels"],
                          r["source"]] for r in rows]))


@cli.group()
def holdout() -> None:
    """Held-out evaluation regions: drawn at random once, frozen, then labelled."""


@holdout.command("draw")
@session_option
@action_options("draw_holdout")
@json_option
def holdout_draw(session_dir, as_json, **raw) -> None:
    """Draw held-out regions uniformly at random, avoiding crops; they are frozen afterwards."""
    rows = run_action(open_dir(session_dir), "draw_holdout", raw)["regions"]
    if as_json:
        emit_json(rows)
    else:
        console.print(table("held-out regions (frozen)", ["id", "offset", "shape", "seed"],
                            [[r["id"], r["offset"], r["shape"], r["seed"]] for r in rows]))


@holdout.command("label")
@session_option
@action_options("label_holdout")
@json_option
def holdout_label(session_dir, as_json, **raw) -> None:
    """Attach labels to a held-out region (once; then they are frozen)."""
    row = run_action(open_dir(session_dir), "label_holdout", raw)
    emit_json(row) if as_json else console.print(row["summary"])


@holdout.command("list")
@session_option
@json_option
def holdout_list(session_dir, as_json) -> None:
    """List held-out regions and whether they are labelled."""
    s = open_dir(session_dir)
    rows = list(s.db["holdout"].rows_where(order_by="id"))
    if as_json:
        emit_json(rows)
        return
    console.print(table("held-out regions", ["id", "volume", "offset", "shape", "labelled"],
                        [[r["id"], r["volume"], r["offset"], r["shape"], "yes" if r["labels_path"] else "no"]
                         for r in rows]))
