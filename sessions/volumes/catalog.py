"""Raw volumes of a session: ingest into OME-Zarr, register, look up.

Everything is written to `<name>.ome.zarr.partial` and renamed only when
complete, so an interrupted ingest never looks finished.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sessions.errors import FibError
from sessions.geometry import fmt, unfmt
from sessions.timeutil import now
from sessions.volumes import omezarr
from sessions.volumes.convert import plan_conversion
from sessions.volumes.ingest import Ingest
from sessions.volumes.sources import ArraySource, open_source
from sessions.workspace import Session

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise FibError(f"volume name {name!r}: use 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit")
    return name


def check_voxel_size(vs) -> tuple[float, float, float]:
    if vs is None:
        raise FibError("voxel size unknown: pass --voxel-size Z,Y,X in nanometres (e.g. 8,8,8)")
    vs = tuple(float(v) for v in vs)
    if len(vs) != 3 or not all(np.isfinite(v) and v > 0 for v in vs):
        raise FibError(f"voxel size {vs}: need three positive numbers Z,Y,X in nanometres")
    return vs


def volume_dir(session: Session, name: str) -> Path:
    return session.path("volumes", f"{name}.ome.zarr")


def ingest(session: Session, source_path: str | Path, *, name: str | None = None, voxel_size=None,
           convert: str | None = None, workers: int | None = None,
           progress: Callable[..., None] | None = None, announce: Callable[[str], None] | None = None) -> dict:
    """Convert a raw volume into the session's OME-Zarr pyramid and register it (see `sessions.volumes.ingest`).

    Running the same command again resumes an interrupted ingest, or returns the
    finished volume with `"status": "exists"`; other content under the name is refused.
    `announce` gets one line on the source as read and the output, before the work starts.
    """
    src = open_source(source_path)
    vs = check_voxel_size(voxel_size if voxel_size is not None else src.voxel_size)
    name = check_name(name or src.path.name.split(".")[0])
    return _ingest(session, src, plan_conversion(src, convert), vs, name, workers, progress, announce)


def write_volume(session: Session, name: str, array: np.ndarray, voxel_size, *, source: str = "array") -> dict:
    """Register an in-memory uint8 array as a volume (tests, generated data), through the same ingest."""
    src = ArraySource(np.asarray(array), source)
    return _ingest(session, src, plan_conversion(src, None), check_voxel_size(voxel_size), check_name(name), 1, None)


def _ingest(session: Session, src, conv, vs, name: str, workers, progress, announce=None) -> dict:
    job = Ingest(src, conv, vs, volume_dir(session, name).with_name(f"{name}.ome.zarr.partial"), name,
                 workers=workers, progress=progress, announce=announce)
    final = volume_dir(session, name)
    row = next(session.db["volumes"].rows_where("name = ?", [name]), None)
    if row is not None:
        if row.get("plan") == job.plan and final.exists():
            return {**row, "status": "exists"}
        raise FibError(f"volume {name!r} already exists in this session with different content "
                       f"(from {row['source']}); pass --name to choose another")
    if final.exists():
        try:
            meta = omezarr.open_multiscale(final).group.attrs.get("fibtui", {})
        except FibError:
            meta = {}
        if meta.get("plan") != job.plan:
            raise FibError(f"{final}: exists with different content; remove it or pass --name to choose another")
    else:
        try:
            meta = job.run()
        except KeyboardInterrupt:
            raise FibError(f"ingest of {src.path} interrupted; run the same command again to resume") from None
        omezarr.publish(job.partial, final)
    ms = omezarr.open_multiscale(final)
    row = {
        "name": name, "path": session.rel(final), "shape": fmt(src.shape), "dtype": "uint8",
        "voxel_size": fmt(vs), "levels": len(ms.levels), "source": str(src.path.resolve()),
        "source_checksum": meta["source_checksum"], "created": now(), "source_format": src.kind,
        "source_dtype": str(src.dtype), "conversion": json.dumps(conv.to_json()), "plan": job.plan,
    }
    session.db["volumes"].insert(row)
    return {**row, "status": "ingested"}


def get_volume(session: Session, name: str) -> dict:
    row = next(session.db["volumes"].rows_where("name = ?", [name]), None)
    if row is None:
        names = [r["name"] for r in session.db["volumes"].rows]
        hint = f"known: {', '.join(names)}" if names else "ingest one with `fibtui ingest`"
        raise FibError(f"volume {name!r} not in this session; {hint}")
    row["shape"] = unfmt(row["shape"])
    row["voxel_size"] = unfmt(row["voxel_size"], float)
    return row


def open_volume(session: Session, name: str) -> omezarr.Multiscale:
    return omezarr.open_multiscale(session.path(get_volume(session, name)["path"]))


def default_volume(session: Session) -> str:
    rows = list(session.db["volumes"].rows)
    if len(rows) != 1:
        raise FibError("this session has " + ("no volume; ingest one first" if not rows else
                       f"{len(rows)} volumes; pass --volume NAME"))
    return rows[0]["name"]
