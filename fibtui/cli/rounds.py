"""Round and job commands: new round, train, predict, evaluate, cancel; jobs; status."""

from __future__ import annotations

from pathlib import Path

import click

from fibtui.cli import cli
from fibtui.cli.common import SESSION_HELP, json_option, open_dir, print_status, session_option
from fibtui.output import console, emit_json, err_console, progress, table
from sessions.errors import FibError
from sessions.geometry import parse_triple


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

    row = rounds.new_round(open_dir(session_dir), target)
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

    s = open_dir(session_dir)
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

    s = open_dir(session_dir)
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

    s = open_dir(session_dir)
    rnd = rounds.get(s, round_n)
    spec = rounds.eval_spec(s, rnd, threshold=threshold)
    _submit_and_follow(s, rnd, "evaluate", spec, executor, detach, as_json)
    if not as_json:
        print_status(s)


@round_.command("cancel")
@session_option
@click.option("--round", "round_n", type=int, help="Round (default: the latest).")
@json_option
def round_cancel(session_dir, round_n, as_json) -> None:
    """Cancel every running job of a round (one scancel for all its Slurm jobs)."""
    from remote.dispatch import Dispatcher
    from sessions import rounds

    s = open_dir(session_dir)
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
    from remote.dispatch import Dispatcher

    job = Dispatcher(open_dir(session_dir)).cancel(job_id)
    emit_json(job) if as_json else console.print(f"{job['id']} {job['state']}")


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
