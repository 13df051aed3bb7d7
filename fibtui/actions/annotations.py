"""Labels made outside the round commands: the viewer's painted crop, and napari/Paintera/OME-Zarr
labels in and out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fibtui.actions.base import Context, log
from sessions import annotations, labels, rounds
from sessions.errors import FibError
from sessions.volumes import catalog
from sessions.workspace import Session


def commit_crop(session: Session, ctx: Context, *, round_n: int | None) -> dict:
    """The viewer's painted crop box (its autosave in the session) → a crop of the round, through
    `add_crop`'s checks; one "crop painted" entry, one entry per proofreading decision in it."""
    ann = annotations.Annotation.load(session.root)
    if ann is None or ann.empty:
        raise FibError("nothing painted to commit: paint in a crop box in the viewer first")
    rnd = rounds.get(session, round_n)
    arr = ann.dense()
    if not arr.any():
        raise FibError(f"crop box {ann.box} is empty: every voxel is unlabelled; paint some voxels first")
    row = labels.add_crop_array(session, rnd["n"], ann.volume, arr, ann.box.offset,
                                source=annotations.source_tag(ann), what=f"painted crop box {ann.box}")
    counts = {int(v): int((arr == v).sum()) for v in np.unique(arr) if v}
    log(session, ctx, "crop painted", "crop", row["id"], rnd["n"],
        {"offset": row["offset"], "shape": row["shape"], "labelled_voxels": row["labelled_voxels"],
         "classes": ",".join(f"{k}:{n}" for k, n in counts.items()), "decisions": len(ann.decisions)})
    for d in ann.decisions:
        log(session, ctx, annotations.DECISIONS[d["decision"]], "object", d.get("object"), rnd["n"],
            {"crop": row["id"], "voxels": d["voxels"], "class": d.get("class"), "at": d.get("at")})
    annotations.discard(session.root)
    return {**row, "summary": f"crop {row['id']} committed to round {rnd['n']}: {row['shape']} at {row['offset']}, "
                              f"{row['labelled_voxels']} labelled voxels, {len(ann.decisions)} object decisions"}




def import_labels(session: Session, ctx: Context, *, source: Path, offset, volume: str | None,
                  classes: list[str] | None, round_n: int | None) -> dict:
    """Crops from napari (TIFF, zarr, OME-Zarr labels/) or Paintera/N5; a full-volume label image becomes
    one crop per group of labelled islands. All are checked before any is written."""
    from sessions.volumes import labels_io

    rnd = rounds.get(session, round_n)
    volume = volume or catalog.default_volume(session)
    arr, meta_offset, kind = labels_io.read_any(source)
    vol_shape = tuple(catalog.get_volume(session, volume)["shape"])
    if offset is None and meta_offset is None and arr.shape == vol_shape:
        boxes = labels_io.split_crops(arr)
        if not boxes:
            raise FibError(f"{source}: every voxel is 0 (unlabelled); nothing to import")
        parts = [(b.offset, arr[b.slices]) for b in boxes]
    else:
        at = offset if offset is not None else meta_offset
        if at is None:
            raise FibError(f"--offset: required — {source} ({kind}, shape {','.join(map(str, arr.shape))}) is "
                           f"smaller than the volume ({','.join(map(str, vol_shape))}) and says nowhere where it lies")
        parts = [(tuple(at), arr)]
    for off, part in parts:  # every check first (outside, held-out overlap, classes, empty): all or nothing
        labels.check_crop_array(session, volume, part, off, classes, what=f"{source}")
    rows = []
    for off, part in parts:
        row = labels.add_crop_array(session, rnd["n"], volume, part, off, classes, source=f"{kind}:{source}",
                                    what=str(source))
        log(session, ctx, "crop imported", "crop", row["id"], rnd["n"],
            {"source": str(source), "format": kind, "offset": row["offset"], "shape": row["shape"],
             "labelled_voxels": row["labelled_voxels"]})
        rows.append(row)
    return {"crops": rows, "summary": f"{len(rows)} crop{'s' * (len(rows) != 1)} imported from {kind} into round "
                                      f"{rnd['n']}: " + ", ".join(f"{r['id']} {r['shape']} at {r['offset']}"
                                                                  for r in rows)}


def export_labels(session: Session, ctx: Context, *, volume: str | None, what: list[str]) -> dict:
    """Crops, held-out labels and the latest prediction as NGFF label images in the volume's OME-Zarr."""
    import zarr as _zarr

    from sessions.volumes import labels_io
    from sessions.volumes.slices import latest_prediction

    volume = volume or catalog.default_volume(session)
    unknown = set(what) - {"crops", "holdout", "prediction"}
    if unknown:
        raise FibError(f"--what {','.join(what)}: choose from crops, holdout, prediction")
    ms = catalog.open_volume(session, volume)
    image, classes, done = catalog.volume_dir(session, volume), labels.known_classes(session), []
    pred = latest_prediction(session, volume) if "prediction" in what else None
    if "prediction" in what and pred is None:
        raise FibError(f"--what prediction: volume {volume!r} has no completed prediction yet")
    for kind, table, col in (("crops", "crops", "path"), ("holdout", "holdout", "labels_path")):
        if kind in what:
            rows = [r for r in session.db[table].rows_where("volume = ?", [volume], order_by="id") if r[col]]
            blocks = [(labels._box(r), _zarr.open_array(str(session.path(r[col])), mode="r")[:]) for r in rows]
            done.append(str(labels_io.export(image, kind, ms, classes, blocks)))
    if pred is not None:
        done.append(str(labels_io.export_prediction(image, "prediction", ms, pred)))
    log(session, ctx, "labels exported", "volume", volume, None, {"what": ",".join(what), "to": ",".join(done)})
    return {"paths": done, "summary": "exported " + ", ".join(done)}
