"""Round and job commands: new round, train, predict, preview, evaluate, cancel; jobs; status."""

from __future__ import annotations

from pathlib import Path

import click

from fibtui.cli import cli
from fibtui.cli.common import (
    SESSION_HELP,
    action_options,
    json_option,
    open_dir,
    print_status,
    run_action,
    session_option,
)
from fibtui.output import console, emit_json, err_console, progress, table
from sessions.errors import FibError


@cli.group("round")
def round_() -> None:
    """Labeling rounds: new → train (fine-tunes from the last round) → predict → eval."""


@round_.command("new")
@session_option
@action_options("new_round")
@json_option
def round_new(session_dir, as_json, **raw) -> None:
    """Start a new round (crops added from now on belong to it)."""
    row = run_action(open_dir(session_dir), "new_round", raw)
    emit_json(row) if as_json else console.print(row["summary"])


def _follow_submitted(s, job: dict, detach: bool, as_json: bool) -> None:
    """Print the submitted job, or follow it to its end (Ctrl-C detaches); a failed job is a failed command."""
    from remote.dispatch import Dispatcher

    if detach:
        emit_json(job) if as_json else console.print(f"{job['summary']}; follow with `fibtui status --session {s.root}`")
        return
    if not as_json:
        console.print(job["summary"])
    job = follow(Dispatcher(s), job, quiet=as_json)
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


def _job_command(f):
    f = click.option("--detach", is_flag=True, help="Submit and return; do not follow progress.")(f)
    return session_option(json_option(f))


RESUME_KEEPS = ("target", "patch", "batch", "lr", "base", "levels", "seed", "threads", "init", "preprocess", "augment",
                "validation", "tta")


@round_.command("train")
@_job_command
@action_options("train")
@click.option("--resume", is_flag=True,
              help="Continue the round's stopped training (cancelled, timed out, preempted, lost) from its "
                   "checkpoint, as a new attempt of the same training; takes --iterations and --executor.")
def round_train(session_dir, detach, as_json, resume, **raw) -> None:
    """Train the round's model, fine-tuning from the last model of the same target class.

    --from scratch trains from scratch; --from N starts from round N's model.
    """
    s = open_dir(session_dir)
    if resume:
        given = [f"--{'from' if k == 'init' else k}" for k in RESUME_KEEPS if raw.get(k) is not None]
        if given:
            raise FibError(f"{', '.join(given)}: not used with --resume (a resumed training keeps its settings; "
                           "only --iterations and --executor can change)")
        job = run_action(s, "resume", {k: raw.get(k) for k in ("round_n", "iterations", "executor")})
    else:
        job = run_action(s, "train", raw)
    _follow_submitted(s, job, detach, as_json)


@round_.command("predict")
@_job_command
@action_options("predict")
def round_predict(session_dir, detach, as_json, **raw) -> None:
    """Predict the whole volume blockwise with the round's model."""
    s = open_dir(session_dir)
    _follow_submitted(s, run_action(s, "predict", raw), detach, as_json)


@round_.command("preview")
@_job_command
@action_options("preview_job")
def round_preview(session_dir, detach, as_json, **raw) -> None:
    """Predict only the blocks overlapping --region, as a small job of kind preview.

    For a region too large to preview in the viewer (P there asks to send it here). Its output is never
    taken for the round's prediction: evaluation, measuring and export read `round predict`'s.
    """
    s = open_dir(session_dir)
    _follow_submitted(s, run_action(s, "preview_job", raw), detach, as_json)


@round_.command("eval")
@_job_command
@action_options("evaluate")
def round_eval(session_dir, detach, as_json, **raw) -> None:
    """Score the round's prediction on the labelled held-out regions; count objects."""
    s = open_dir(session_dir)
    _follow_submitted(s, run_action(s, "evaluate", raw), detach, as_json)
    if not as_json and not detach:
        print_status(s)


@round_.command("cancel")
@session_option
@action_options("cancel_round")
@json_option
def round_cancel(session_dir, as_json, **raw) -> None:
    """Cancel every running job of a round (one scancel for all its Slurm jobs)."""
    out = run_action(open_dir(session_dir), "cancel_round", raw)
    emit_json(out["jobs"]) if as_json else console.print(out["summary"])


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

    s = open_dir(session_dir)
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
    job = run_action(open_dir(session_dir), "cancel_job", {"job": job_id})
    emit_json(job) if as_json else console.print(job["summary"])


@jobs.command("log")
@session_option
@click.argument("job_id")
@click.option("--lines", default=40, show_default=True, type=int)
def jobs_log(session_dir, job_id, lines) -> None:
    """Show the end of a job's stderr log (fetched from the cluster or remote host where it runs)."""
    from remote.dispatch import Dispatcher

    console.print(Dispatcher(open_dir(session_dir)).log_tail(job_id, lines) or "(empty)", markup=False,
                  highlight=False)




@cli.command()
@session_option
@json_option
def status(session_dir, as_json) -> None:
    """Rounds, jobs with their states, and the latest metrics."""
    from remote.dispatch import Dispatcher
    from sessions.summary import summarize

    s = open_dir(session_dir)
    Dispatcher(s).refresh()
    if as_json:
        emit_json(summarize(s))
    else:
        print_status(s)
