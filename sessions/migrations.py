"""The session schema, as an ordered list of sqlite-utils migrations.

Append new migrations at the end; never edit an applied one. Every session
file records which ran in `_sqlite_migrations`.
"""

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("fibtui")


@migrations()
def m001_initial(db: Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["volumes"].create(
        {
            "name": str, "path": str, "shape": str, "dtype": str, "voxel_size": str,
            "levels": int, "source": str, "source_sha256": str, "created": str,
        },
        pk="name",
    )
    db["rounds"].create(
        {"n": int, "created": str, "target": str, "parent": int, "status": str},
        pk="n",
    )
    db["crops"].create(
        {
            "id": int, "round": int, "volume": str, "path": str, "offset": str,
            "shape": str, "classes": str, "source": str, "sha256": str,
            "labelled_voxels": int, "created": str,
        },
        pk="id",
        foreign_keys=[("round", "rounds", "n"), ("volume", "volumes", "name")],
    )
    db["holdout"].create(
        {
            "id": int, "volume": str, "offset": str, "shape": str, "seed": int,
            "labels_path": str, "classes": str, "created": str,
        },
        pk="id",
        foreign_keys=[("volume", "volumes", "name")],
    )
    db["jobs"].create(
        {
            "id": str, "round": int, "kind": str, "executor": str, "external_id": str,
            "state": str, "reason": str, "dir": str, "submitted": str, "started": str,
            "ended": str, "progress": float, "message": str, "events_offset": int,
            "heartbeat": str,
        },
        pk="id",
        foreign_keys=[("round", "rounds", "n")],
    )
    db["metrics"].create(
        {"id": int, "job": str, "round": int, "step": int, "name": str, "value": float, "time": str},
        pk="id",
    )
    db["metrics"].create_index(["job", "name", "step"])
    db["checkpoints"].create(
        {"id": int, "job": str, "round": int, "path": str, "iteration": int, "sha256": str, "created": str},
        pk="id",
    )
    db["messages"].create(
        {"id": int, "time": str, "author": str, "text": str, "round": int, "crop": int},
        pk="id",
    )
    db["notes"].create(
        {"id": int, "time": str, "author": str, "action": str, "reason": str, "round": int},
        pk="id",
    )


@migrations()
def m002_job_resources(db: Database) -> None:
    """Resource use per job: wall time run so far, GPUs allocated, GPU-hours (elapsed × GPUs, summed over
    runs and, for a job array, over its tasks); `elapsed_prev_s` holds the runs before a requeue."""
    db["jobs"].add_column("elapsed_s", float)
    db["jobs"].add_column("gpus", int)
    db["jobs"].add_column("gpu_hours", float)
    db["jobs"].add_column("elapsed_prev_s", float)
    db["jobs"].add_column("gpu_hours_prev", float)


@migrations()
def m003_volume_provenance(db: Database) -> None:
    """How a volume was made: the source checksum named by its algorithm ("blake3:…", as `b3sum` prints it;
    older volumes keep "sha256:…"), source format and dtype, the conversion to uint8 (JSON), and the ingest
    plan (a hash of source files, conversion and layout) that makes a rerun resume or recognise finished work."""
    db["volumes"].transform(rename={"source_sha256": "source_checksum"})
    db.execute("update volumes set source_checksum = 'sha256:' || source_checksum where source_checksum is not null")
    db["volumes"].add_column("source_format", str)
    db["volumes"].add_column("source_dtype", str)
    db["volumes"].add_column("conversion", str)
    db["volumes"].add_column("plan", str)


@migrations()
def m004_rounds_in_the_tui(db: Database) -> None:
    """What the TUI's round needs recorded.

    - jobs.resumes: the job this one continues (a resumed training is a new attempt of the same training);
      jobs.init_from: the job whose model a training started from (NULL: from scratch).
    - messages: a kind (question, answer, result, decision, deadlock, plain), the message it replies to,
      and links to a job, a held-out region or a viewer position (JSON: volume, axis, z, y, x, zoom).
    - interventions: one structured row per curator action (what, on what, with which parameters, by whom,
      when, from where), written by the action itself; a reason can be attached afterwards.
    """
    db["jobs"].add_column("resumes", str)
    db["jobs"].add_column("init_from", str)
    db["messages"].add_column("kind", str, not_null_default="plain")
    db["messages"].add_column("reply_to", int)
    db["messages"].add_column("job", str)
    db["messages"].add_column("region", int)
    db["messages"].add_column("at", str)
    db["interventions"].create(
        {"id": int, "time": str, "author": str, "action": str, "subject": str, "subject_id": str,
         "round": int, "params": str, "reason": str, "via": str},
        pk="id",
    )
    db["interventions"].create_index(["time"])
    db["messages"].create_index(["reply_to"])
