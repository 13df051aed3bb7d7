"""Defaults and choices read from the session: what a form is prefilled with and what it offers."""

from __future__ import annotations

from fibtui.actions.base import Param, integer, text
from sessions import jobs, labels, rounds
from sessions.errors import FibError
from sessions.volumes import catalog
from sessions.workspace import Session


def latest_round(session: Session, ctx: dict) -> int | None:
    r = rounds.current(session, required=False)
    return r["n"] if r else None


def round_target(session: Session, ctx: dict) -> str | None:
    n = ctx.get("round_n")
    r = rounds.get(session, n) if n else rounds.current(session, required=False)
    return r["target"] if r else None


def only_volume(session: Session, ctx: dict) -> str | None:
    try:
        return catalog.default_volume(session)
    except FibError:
        return None


def starting_job(session: Session, ctx: dict) -> dict | None:
    """The training `train_spec` would fine-tune from, for the values given so far (None: from scratch)."""
    target = ctx.get("target") or round_target(session, ctx)
    if not target:
        return None
    try:
        return rounds.init_job(session, rounds.get(session, ctx.get("round_n")), target, ctx.get("init", "auto"))
    except FibError:
        return None


def default_patch(session: Session, ctx: dict):
    """The patch `train_spec` would use: the starting model's when fine-tuning, else the voxel size's."""
    return _from_start_or_volume(session, ctx, rounds.train_patch)


def default_batch(session: Session, ctx: dict):
    """The batch `train_spec` would use: the starting model's when fine-tuning, else the voxel size's."""
    return _from_start_or_volume(session, ctx, rounds.train_batch)


def _from_start_or_volume(session: Session, ctx: dict, rule):
    """`rule(session, starting job, voxel size)` for the only volume (None without one)."""
    vol = only_volume(session, ctx)
    if not vol:
        return None
    return rule(session, starting_job(session, ctx), catalog.get_volume(session, vol)["voxel_size"])


def default_preprocess(session: Session, ctx: dict) -> str:
    """The preprocessing `train_spec` would use: the starting model's when fine-tuning, else the default."""
    from sessions.train_options import DEFAULT_PREPROCESS

    prev = starting_job(session, ctx)
    if prev is None:
        return DEFAULT_PREPROCESS
    return ((jobs.spec(session, prev) or {}).get("preprocess") or {"method": "none"})["method"]


def class_names(session: Session) -> list[str]:
    return labels.known_classes(session)


def volume_names(session: Session) -> list[str]:
    return [v["name"] for v in session.db["volumes"].rows_where(order_by="name")]


def round_numbers(session: Session) -> list[str]:
    return [str(r["n"]) for r in session.db["rounds"].rows_where(order_by="n desc")]


def unlabelled_regions(session: Session) -> list[str]:
    return [str(r["id"]) for r in session.db["holdout"].rows_where("labels_path is null", order_by="id")]


def first_unlabelled_region(session: Session, ctx: dict) -> str | None:
    return next(iter(unlabelled_regions(session)), None)


def active_jobs(session: Session) -> list[str]:
    return [j["id"] for j in jobs.active(session)][::-1]


def resumable_jobs(session: Session) -> list[str]:
    rows = session.db["jobs"].rows_where("kind = 'train' and state not in ('PENDING', 'RUNNING', 'COMPLETED')",
                                         order_by="rowid desc")
    return [j["id"] for j in rows if jobs.resumable(session, j) is not None]


def first_resumable(session: Session, ctx: dict) -> str | None:
    n = ctx.get("round_n")
    for job_id in resumable_jobs(session):
        if n is None or jobs.get(session, job_id)["round"] == n:
            return job_id
    return None


def executors(session: Session) -> list[str]:
    from remote.profiles import executor_names

    try:
        return executor_names()
    except FibError:
        return ["local", "slurm"]


def latest_executor(session: Session, ctx: dict) -> str:
    """Where the session's latest job ran (local when none): a preview job goes where the curator's jobs go,
    not onto the login node the viewer runs on."""
    row = next(session.db["jobs"].rows_where(order_by="rowid desc", limit=1), None)
    return row["executor"] if row else "local"


def last_threshold(session: Session, ctx: dict) -> float:
    row = next(session.db["jobs"].rows_where("kind = 'evaluate'", order_by="rowid desc", limit=1), None)
    return (jobs.spec(session, row) or {}).get("threshold", 0.5) if row else 0.5


ROUND = Param("round_n", "--round", "Round", integer(1), latest_round, "round number (default: the latest)",
              choices=round_numbers)
EXECUTOR = Param("executor", "--executor", "Executor", text, "local",
                 "where the job runs: local, slurm[:PROFILE] or ssh:PROFILE (profiles in fibtui.toml)",
                 choices=executors)
VOLUME = Param("volume", "--volume", "Volume", text, only_volume, "volume name (default: the session's only one)",
               choices=volume_names)
