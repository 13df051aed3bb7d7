"""The `fibtui` command line: every TUI action as a scriptable subcommand.

User errors (`FibError`) print one line and exit 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from rich.markup import escape

from fibtui import __version__
from fibtui.output import console, emit_json, err_console, progress, stage_callback, table
from sessions.errors import FibError
from sessions.geometry import Box, parse_triple

SESSION_HELP = "Session directory (or set FIBTUI_SESSION)."


def session_option(f):
    return click.option("--session", "session_dir", envvar="FIBTUI_SESSION", required=True,
                        type=click.Path(path_type=Path), help=SESSION_HELP)(f)


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(f)


def _open(session_dir: Path):
    from sessions.workspace import open_session

    return open_session(session_dir)


def _classes(text: str | None) -> list[str] | None:
    return [c.strip() for c in text.split(",")] if text else None


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.option("--session", "session_dir", envvar="FIBTUI_SESSION", type=click.Path(path_type=Path),
              help="Open the TUI on this session (when no command is given).")
@click.version_option(__version__, prog_name="fibtui")
@click.pass_context
def cli(ctx: click.Context, debug: bool, session_dir: Path | None) -> None:
    """fibtui: curate FIB-SEM volumes from the terminal.

    Run without a command to open the TUI on --session (or the current
    directory, if it is a session).
    """
    if ctx.invoked_subcommand is None:
        _tui(session_dir or Path.cwd(), mouse=True)


# ---------------------------------------------------------------- session & data
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
    from sessions import volumes

    s = _open(session_dir)
    vs = parse_triple(voxel_size, "--voxel-size", positive=True, integer=False) if voxel_size else None
    with progress(not as_json) as p:
        row = volumes.ingest(s, source, name=name, voxel_size=vs, convert=convert_spec, workers=workers,
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
@click.option("--volume", help="Volume name (default: the session's only volume).")
@click.option("--labels", "labels_path", required=True, type=click.Path(path_type=Path),
              help="Label array: .tif or .zarr, Z,Y,X (or Y,X for one slice).")
@click.option("--offset", required=True, help="Position of the crop's first voxel in the volume, Z,Y,X.")
@click.option("--classes", help="Class names for labels 1..n, e.g. background,mito (first crop only).")
@click.option("--round", "round_n", type=int, help="Round to add to (default: the latest).")
@json_option
def crop_add(session_dir, volume, labels_path, offset, classes, round_n, as_json) -> None:
    """Add a labelled crop to a round."""
    from sessions import labels, rounds, volumes

    s = _open(session_dir)
    rnd = rounds.get(s, round_n)
    row = labels.add_crop(s, rnd["n"], volume or volumes.default_volume(s), labels_path,
                          parse_triple(offset, "--offset"), _classes(classes))
    if as_json:
        emit_json(row)
    else:
        console.print(f"crop {row['id']} added to round {rnd['n']}: {row['shape']} at {row['offset']}, "
                      f"{row['labelled_voxels']} labelled voxels")


@crop.command("list")
@session_option
@json_option
def crop_list(session_dir, as_json) -> None:
    """List the session's crops."""
    s = _open(session_dir)
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
@click.option("--volume", help="Volume name (default: the session's only volume).")
@click.option("--count", default=4, show_default=True, type=int, help="Number of regions.")
@click.option("--size", "size", required=True, help="Region shape Z,Y,X.")
@click.option("--within", help="Restrict to z0:z1,y0:y1,x0:x1 (e.g. a test range of slices).")
@click.option("--seed", type=int, help="Seed (default: random, recorded).")
@json_option
def holdout_draw(session_dir, volume, count, size, within, seed, as_json) -> None:
    """Draw held-out regions uniformly at random, avoiding crops; they are frozen afterwards."""
    from sessions import labels, volumes

    s = _open(session_dir)
    box = _parse_range(within) if within else None
    rows = labels.draw_holdout(s, volume or volumes.default_volume(s), count,
                               parse_triple(size, "--size", positive=True), within=box, seed=seed)
    if as_json:
        emit_json(rows)
    else:
        console.print(table("held-out regions (frozen)", ["id", "offset", "shape", "seed"],
                            [[r["id"], r["offset"], r["shape"], r["seed"]] for r in rows]))


def _parse_range(text: str) -> Box:
    try:
        parts = [tuple(int(v) for v in p.split(":")) for p in text.split(",")]
        assert len(parts) == 3 and all(len(p) == 2 and 0 <= p[0] < p[1] for p in parts)
    except (ValueError, AssertionError):
        raise FibError(f"--within {text!r}: expected z0:z1,y0:y1,x0:x1 with start < stop") from None
    return Box(tuple(p[0] for p in parts), tuple(p[1] - p[0] for p in parts))


@holdout.command("label")
@session_option
@click.option("--region", "region_id", required=True, type=int, help="Held-out region id.")
@click.option("--labels", "labels_path", required=True, type=click.Path(path_type=Path),
              help="Label array of exactly the region's shape (.tif or .zarr).")
@click.option("--classes", help="Class names for labels 1..n (if no crop defined them yet).")
@json_option
def holdout_label(session_dir, region_id, labels_path, classes, as_json) -> None:
    """Attach labels to a held-out region (once; then they are frozen)."""
    from sessions import labels

    s = _open(session_dir)
    row = labels.label_holdout(s, region_id, labels_path, _classes(classes))
    if as_json:
        emit_json(row)
    else:
        console.print(f"held-out region {region_id} labelled")


@holdout.command("list")
@session_option
@json_option
def holdout_list(session_dir, as_json) -> None:
    """List held-out regions and whether they are labelled."""
    s = _open(session_dir)
    rows = list(s.db["holdout"].rows_where(order_by="id"))
    if as_json:
        emit_json(rows)
        return
    console.print(table("held-out regions", ["id", "volume", "offset", "shape", "labelled"],
                        [[r["id"], r["volume"], r["offset"], r["shape"], "yes" if r["labels_path"] else "no"]
                         for r in rows]))


# ---------------------------------------------------------------- rounds & jobs
@cli.group("round")
def round_() -> None:
    """Labeling rounds: new → train (fine-tunes from the last round) → predict → eval."""


@round_.command("new")
@session_option
@click.option("--target", help="The class this round trains (one label at a time).")
@json_option
def round_new(session_dir, target, as_json) -> None:
    """Start a new round (crops added from now on belong to it)."""
    from sessions import rounds

    row = rounds.new_round(_open(session_dir), target)
    if as_json:
        emit_json(row)
    else:
        console.print(f"round {row['n']} started" + (f", target {row['target']}" if row["target"] else ""))


def _submit_and_follow(s, rnd: dict, kind: str, spec: dict, executor: str, detach: bool, as_json: bool) -> None:
    from remote.dispatch import Dispatcher

    d = Dispatcher(s)
    job = d.submit(rnd["n"], kind, spec, executor)
    if detach:
        if as_json:
            emit_json(job)
        else:
            console.print(f"submitted {job['id']} ({executor}); follow with `fibtui status --session {s.root}`")
        return
    job = follow(d, job, quiet=as_json)
    if as_json:
        emit_json(job)
    if job["state"] != "COMPLETED":
        raise FibError(f"job {job['id']} {job['state']}: {job['reason'] or 'see its stderr.log'} "
                       f"({s.path(job['dir'], 'stderr.log')})")


def follow(d, job: dict, quiet: bool = False) -> dict:
    """Show a job's progress until it ends; Ctrl-C detaches and leaves it running."""
    try:
        with progress(not quiet) as p:
            task = p.add_task(job["id"], total=100, info="")
            return d.wait(job["id"], lambda j: p.update(task, completed=100 * (j["progress"] or 0),
                                                         info=j["message"] or j["state"]))
    except KeyboardInterrupt:
        err_console.print(f"detached from {job['id']}; it keeps running. `fibtui status` shows it.")
        raise SystemExit(130) from None


def _common_job_options(f):
    f = click.option("--round", "round_n", type=int, help="Round (default: the latest).")(f)
    f = click.option("--executor", default="local", show_default=True,
                     help="Where the job runs: local, slurm[:PROFILE] or ssh:PROFILE (profiles in fibtui.toml).")(f)
    f = click.option("--detach", is_flag=True, help="Submit and return; do not follow progress.")(f)
    f = json_option(f)
    return session_option(f)


@round_.command("train")
@_common_job_options
@click.option("--target", help="Class to train (default: the round's target).")
@click.option("--iterations", default=600, show_default=True, type=int)
@click.option("--patch", help="Patch shape Z,Y,X (default from the voxel size).")
@click.option("--batch", default=2, show_default=True, type=int)
@click.option("--lr", default=1e-3, show_default=True, type=float, help="Peak learning rate (cosine decay).")
@click.option("--base", default=16, show_default=True, type=int, help="U-Net channels at the first level.")
@click.option("--levels", default=4, show_default=True, type=int, help="U-Net levels.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--threads", default=0, show_default=True, type=int, help="CPU threads (0: all).")
def round_train(session_dir, round_n, executor, detach, as_json, target, iterations, patch, batch, lr, base,
                levels, seed, threads) -> None:
    """Train the round's model (fine-tuning from the previous round's model when there is one)."""
    from sessions import rounds

    s = _open(session_dir)
    rnd = rounds.get(s, round_n)
    if iterations < 1 or batch < 1 or base < 1 or levels < 1 or not lr > 0:
        raise FibError("--iterations, --batch, --base and --levels must be ≥ 1 and --lr > 0")
    spec = rounds.train_spec(s, rnd, target=target, iterations=iterations,
                             patch=parse_triple(patch, "--patch", positive=True) if patch else None, batch=batch,
                             lr=lr, base=base, levels=levels, seed=seed, threads=threads)
    _submit_and_follow(s, rnd, "train", spec, executor, detach, as_json)


@round_.command("predict")
@_common_job_options
@click.option("--block", help="Block shape Z,Y,X (default 32,256,256).")
@click.option("--threads", default=0, show_default=True, type=int, help="CPU threads (0: all).")
def round_predict(session_dir, round_n, executor, detach, as_json, block, threads) -> None:
    """Predict the whole volume blockwise with the round's model."""
    from sessions import rounds

    s = _open(session_dir)
    rnd = rounds.get(s, round_n)
    spec = rounds.predict_spec(s, rnd, block=parse_triple(block, "--block", positive=True) if block else None,
                               threads=threads)
    _submit_and_follow(s, rnd, "predict", spec, executor, detach, as_json)


@round_.command("eval")
@_common_job_options
@click.option("--threshold", default=0.5, show_default=True, type=float)
def round_eval(session_dir, round_n, executor, detach, as_json, threshold) -> None:
    """Score the round's prediction on the labelled held-out regions; count objects."""
    from sessions import rounds

    s = _open(session_dir)
    rnd = rounds.get(s, round_n)
    spec = rounds.eval_spec(s, rnd, threshold=threshold)
    _submit_and_follow(s, rnd, "evaluate", spec, executor, detach, as_json)
    if not as_json:
        _print_status(s)


@round_.command("cancel")
@session_option
@click.option("--round", "round_n", type=int, help="Round (default: the latest).")
@json_option
def round_cancel(session_dir, round_n, as_json) -> None:
    """Cancel every running job of a round (one scancel for all its Slurm jobs)."""
    from remote.dispatch import Dispatcher
    from sessions import rounds

    s = _open(session_dir)
    rnd = rounds.get(s, round_n)
    done = Dispatcher(s).cancel_round(rnd["n"])
    if as_json:
        emit_json(done)
    else:
        console.print(f"round {rnd['n']}: " + (", ".join(f"{j['id']} {j['state']}" for j in done)
                                                or "no running jobs"))


@cli.group(invoke_without_command=True)
@click.option("--session", "session_dir", envvar="FIBTUI_SESSION", type=click.Path(path_type=Path), help=SESSION_HELP)
@json_option
@click.pass_context
def jobs(ctx, session_dir, as_json) -> None:
    """Jobs of every round on every executor: state, reason, progress, GPU-hours."""
    if ctx.invoked_subcommand is not None:
        return
    if session_dir is None:
        raise FibError("no session: pass --session DIR (or set FIBTUI_SESSION)")
    from remote.dispatch import Dispatcher

    s = _open(session_dir)
    Dispatcher(s).refresh()
    rows = list(s.db["jobs"].rows_where(order_by="submitted, rowid"))
    if as_json:
        emit_json(rows)
        return
    console.print(table("jobs", ["job", "executor", "id", "state", "progress", "GPU-h", "message / reason"],
                        [[j["id"], j["executor"], j["external_id"], j["state"], f"{100 * (j['progress'] or 0):.0f}%",
                          f"{j['gpu_hours']:.2f}" if j.get("gpu_hours") is not None else "",
                          j["reason"] or j["message"] or ""] for j in rows]))


@jobs.command("cancel")
@session_option
@click.argument("job_id")
@json_option
def jobs_cancel(session_dir, job_id, as_json) -> None:
    """Cancel a running job (it stops; its checkpoints stay)."""
    from remote.dispatch import Dispatcher

    job = Dispatcher(_open(session_dir)).cancel(job_id)
    emit_json(job) if as_json else console.print(f"{job['id']} {job['state']}")


@jobs.command("log")
@session_option
@click.argument("job_id")
@click.option("--lines", default=40, show_default=True, type=int)
def jobs_log(session_dir, job_id, lines) -> None:
    """Show the end of a job's stderr log (fetched from the cluster or remote host where it runs)."""
    from remote.dispatch import Dispatcher

    console.print(Dispatcher(_open(session_dir)).log_tail(job_id, lines) or "(empty)", markup=False,
                  highlight=False)


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
@session_option
@json_option
def status(session_dir, as_json) -> None:
    """Rounds, jobs with their states, and the latest metrics."""
    from remote.dispatch import Dispatcher
    from sessions.summary import summarize

    s = _open(session_dir)
    Dispatcher(s).refresh()
    if as_json:
        emit_json(summarize(s))
    else:
        _print_status(s)


def _print_status(s) -> None:
    from sessions.summary import summarize

    summ = summarize(s)
    console.print(f"session [bold]{summ['session']}[/]")
    for v in summ["volumes"]:
        console.print(f"  volume {v['name']} {v['shape']} @ {v['voxel_size']} nm ({v['levels']} levels)")
    for r in summ["rounds"]:
        m = r["metrics"]
        score = (f"IoU {m['iou']:.3f}  F1 {m['f1']:.3f}  P {m['precision']:.3f}  R {m['recall']:.3f}"
                 if m else "not evaluated")
        console.print(f"[bold]round {r['n']}[/] target {r['target']}  crops {r['crops']}  {score}")
        console.print(table(None, ["job", "state", "progress", "message / reason"],
                            [[j["id"], j["state"], f"{100 * (j['progress'] or 0):.0f}%",
                              j["reason"] or j["message"] or ""] for j in r["jobs"]]))


# ---------------------------------------------------------------- thread & log
@cli.group()
def msg() -> None:
    """The curator–scientist message thread."""


@msg.command("add")
@session_option
@click.argument("text")
@click.option("--author", default=lambda: os.environ.get("USER", "curator"), show_default="$USER")
@click.option("--round", "round_n", type=int, help="Link the message to a round.")
@click.option("--crop", type=int, help="Link the message to a crop.")
@json_option
def msg_add(session_dir, text, author, round_n, crop, as_json) -> None:
    """Add a message to the thread."""
    from sessions import journal

    row = journal.add_message(_open(session_dir), author, text, round_n, crop)
    emit_json(row) if as_json else console.print(f"message {row['id']} added")


@msg.command("list")
@session_option
@json_option
def msg_list(session_dir, as_json) -> None:
    """Show the thread."""
    from sessions import journal

    rows = journal.messages(_open(session_dir))
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        link = " ".join(x for x in (f"round {r['round']}" if r["round"] else "", f"crop {r['crop']}" if r["crop"] else "") if x)
        console.print(f"[dim]{r['time']}[/] [bold]{r['author']}[/]{' (' + link + ')' if link else ''}: {r['text']}")


@cli.group()
def note() -> None:
    """The curator's intervention log: what was done and why."""


@note.command("add")
@session_option
@click.argument("action")
@click.option("--why", "reason", help="Why it was done.")
@click.option("--author", default=lambda: os.environ.get("USER", "curator"), show_default="$USER")
@click.option("--round", "round_n", type=int, help="Link the note to a round.")
@json_option
def note_add(session_dir, action, reason, author, round_n, as_json) -> None:
    """Record an intervention."""
    from sessions import journal

    row = journal.add_note(_open(session_dir), action, reason, author, round_n)
    emit_json(row) if as_json else console.print(f"note {row['id']} added")


@note.command("list")
@session_option
@json_option
def note_list(session_dir, as_json) -> None:
    """Show the intervention log."""
    from sessions import journal

    rows = journal.notes(_open(session_dir))
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        console.print(f"[dim]{r['time']}[/] [bold]{r['author']}[/]: {r['action']}"
                      + (f" — {r['reason']}" if r["reason"] else ""))


# ---------------------------------------------------------------- demo & TUI
@cli.command()
@click.option("--dir", "demo_dir", default="fibtui-demo", show_default=True, type=click.Path(path_type=Path),
              help="Where to put the demo session and its synthetic volume.")
@click.option("--no-tui", is_flag=True, help="Print the summary instead of opening the TUI.")
@click.option("--iterations", default=None, type=int, help="Training iterations (default 400, about 2 min on 2 CPU cores).")
@json_option
def demo(demo_dir: Path, no_tui: bool, iterations: int | None, as_json: bool) -> None:
    """Make a synthetic volume and run one full round locally, then open the TUI."""
    from fibtui.demo import run_demo
    from sessions.summary import summarize

    s = run_demo(demo_dir, iterations=iterations, quiet=as_json)
    if as_json:
        emit_json(summarize(s))
        return
    _print_status(s)
    console.print(f"\ndemo session: [bold]{s.root}[/]\n  fibtui status --session {s.root}\n"
                  f"  fibtui tui --session {s.root}")
    if not no_tui and sys.stdout.isatty() and sys.stdin.isatty():
        _tui(s.root, mouse=True)


@cli.command()
@session_option
@click.option("--no-mouse", is_flag=True, help="Do not capture the mouse (lets the terminal select text).")
def tui(session_dir, no_mouse) -> None:
    """Open the terminal UI on a session."""
    _tui(session_dir, mouse=not no_mouse)


# ---------------------------------------------------------------- benchmarks
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


def _tui(session_dir: Path, mouse: bool) -> None:
    _open(session_dir).close()  # validate first: one clear line, not a crashed app
    from fibtui.tui.app import run_tui

    run_tui(Path(session_dir), mouse=mouse)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        cli.main(args=argv, prog_name="fibtui", standalone_mode=False)
    except FibError as e:
        if "--debug" in argv:
            raise
        err_console.print(f"[red]fibtui: error:[/] {e}", highlight=False, soft_wrap=True)
        return e.exit_code
    except click.exceptions.Abort:
        err_console.print("aborted")
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except SystemExit as e:
        return int(e.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
