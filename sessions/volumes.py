"""Raw volumes of a session: ingest into OME-Zarr, register, look up.

Ingest streams z-slabs from the source into level 0, then builds the
pyramid; everything goes to `<name>.ome.zarr.partial` and is renamed only
when complete, so an interrupted ingest never looks finished.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from sessions import omezarr
from sessions.errors import FibError
from sessions.geometry import fmt, unfmt
from sessions.sources import open_source
from sessions.timeutil import now
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


def write_volume(session: Session, name: str, shape, voxel_size, slabs: Iterable[tuple[int, np.ndarray]], *,
                 source: str, sha256: str, progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Write a volume from (z0, slab) pairs, build its pyramid, register it."""
    check_name(name)
    if session.db["volumes"].count_where("name = ?", [name]):
        raise FibError(f"volume {name!r} already exists in this session; pass --name to choose another")
    final = volume_dir(session, name)
    if final.exists():
        raise FibError(f"{final}: exists on disk but is not registered; remove it or choose another --name")
    partial = final.with_name(final.name + ".partial")
    omezarr.discard(partial)
    try:
        ms = omezarr.create(partial, shape, voxel_size, name=name)
        for z0, slab in slabs:
            ms.levels[0][z0: z0 + slab.shape[0]] = slab
            if progress:
                progress("level 0", z0 + slab.shape[0], shape[0])
        omezarr.build_pyramid(ms, (lambda d, t: progress("pyramid", d, t)) if progress else None)
        omezarr.publish(partial, final)
    except BaseException:
        omezarr.discard(partial)
        raise
    row = {
        "name": name, "path": session.rel(final), "shape": fmt(shape), "dtype": str(ms.levels[0].dtype),
        "voxel_size": fmt(voxel_size), "levels": len(ms.levels), "source": source, "source_sha256": sha256,
        "created": now(),
    }
    session.db["volumes"].insert(row)
    return row


def ingest(session: Session, source_path: str | Path, *, name: str | None = None, voxel_size=None,
           progress: Callable[[str, int, int], None] | None = None) -> dict:
    src = open_source(source_path)
    vs = check_voxel_size(voxel_size if voxel_size is not None else src.voxel_size)
    name = check_name(name or src.path.name.split(".")[0])
    if session.db["volumes"].count_where("name = ?", [name]):
        raise FibError(f"volume {name!r} already exists in this session; pass --name to choose another")
    sha = src.sha256()
    step = omezarr.DEFAULT_CHUNKS[0]
    slabs = ((z0, src.read(z0, z1)) for z0, z1 in omezarr.slabs(src.shape[0], step))
    return write_volume(session, name, src.shape, vs, slabs, source=str(src.path.resolve()), sha256=sha,
                        progress=progress)


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
