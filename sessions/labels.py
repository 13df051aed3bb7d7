"""Labelled crops and held-out regions: validated, stored as small zarr arrays, indexed in SQLite.

Labels are sparse: 0 = unlabelled (ignored everywhere), 1..n = the session's
classes. Held-out regions are drawn at random once per volume and frozen, so
evaluation never drifts towards the regions where the model looks good.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import zarr
import zarr.codecs

from sessions.errors import FibError
from sessions.geometry import Box, fmt, unfmt
from sessions.timeutil import now
from sessions.volumes import catalog
from sessions.volumes.sources import read_labels
from sessions.workspace import Session


def session_classes(session: Session, given: list[str] | None) -> list[str]:
    """The class names are fixed by the first crop; later crops must agree.

    Only checks: the caller stores new names (`fix_classes`) once its labels are written, so a crop
    refused for another reason leaves the session without classes, as it was."""
    stored = session.meta("classes")
    if stored is None:
        if not given:
            raise FibError("no classes defined yet: pass --classes name1,name2,... (label 1 = name1, ...)")
        if len(set(given)) != len(given) or not all(given):
            raise FibError(f"--classes {','.join(given)}: names must be distinct and non-empty")
        return given
    classes = json.loads(stored)
    if given and given != classes:
        raise FibError(f"--classes {','.join(given)}: this session's classes are {','.join(classes)}")
    return classes


def known_classes(session: Session) -> list[str]:
    """The session's class names (label 1 = the first), or [] before the first crop defines them."""
    return json.loads(session.meta("classes") or "[]")


def fix_classes(session: Session, names: list[str]) -> None:
    if session.meta("classes") is None:
        session.set_meta("classes", names)


def _check_labels(arr: np.ndarray, classes: list[str], where: str) -> None:
    if int(arr.max()) > len(classes):
        raise FibError(f"{where}: label value {int(arr.max())} but only {len(classes)} classes "
                       f"({','.join(classes)}); relabel or extend --classes")
    if not arr.any():
        raise FibError(f"{where}: every voxel is 0 (unlabelled); nothing to learn from")


def _write_array(path, arr: np.ndarray, attrs: dict) -> None:
    partial = path.with_name(path.name + ".partial")
    a = zarr.create_array(str(partial), shape=arr.shape, chunks=arr.shape, dtype="uint8",
                          compressors=zarr.codecs.ZstdCodec(level=3), fill_value=0, overwrite=True)
    a[:] = arr
    a.attrs.update(attrs)
    partial.rename(path)


def _volume_box(session: Session, volume: str, offset, shape, what: str) -> Box:
    vol = catalog.get_volume(session, volume)
    box = Box(tuple(offset), tuple(shape))
    if not box.inside(vol["shape"]):
        raise FibError(f"{what} {box} lies outside volume {volume!r} of shape {fmt(vol['shape'])} (Z,Y,X); "
                       "check --offset and the label shape")
    return box


def holdout_boxes(session: Session, volume: str) -> list[tuple[int, Box]]:
    return [(r["id"], Box(unfmt(r["offset"]), unfmt(r["shape"])))
            for r in session.db["holdout"].rows_where("volume = ?", [volume])]


def crop_boxes(session: Session, volume: str) -> list[tuple[int, Box]]:
    return [(r["id"], Box(unfmt(r["offset"]), unfmt(r["shape"])))
            for r in session.db["crops"].rows_where("volume = ?", [volume])]


def add_crop(session: Session, round_n: int, volume: str, labels_path, offset, classes: list[str] | None = None,
             source: str | None = None) -> dict:
    return add_crop_array(session, round_n, volume, read_labels(labels_path), offset, classes,
                          source=source or str(labels_path), what=str(labels_path))


def check_crop_array(session: Session, volume: str, arr: np.ndarray, offset, classes: list[str] | None = None,
                     *, what: str = "painted crop") -> tuple[Box, list[str]]:
    """Every check `add_crop` makes, nothing written: (box, class names)."""
    box = _volume_box(session, volume, offset, arr.shape, f"crop {what}")
    for hid, hbox in holdout_boxes(session, volume):
        if box.overlaps(hbox):
            raise FibError(f"crop {box} overlaps held-out region {hid} {hbox}; training labels must stay "
                           "out of the evaluation regions — move the crop")
    names = session_classes(session, classes)
    _check_labels(arr, names, what)
    return box, names


def _box(row: dict) -> Box:
    return Box(unfmt(row["offset"]), unfmt(row["shape"]))


def add_crop_array(session: Session, round_n: int, volume: str, arr: np.ndarray, offset,
                   classes: list[str] | None = None, *, source: str, what: str = "painted crop") -> dict:
    """`add_crop` for labels already in memory (the viewer's painted crops): the same checks, in the same order."""
    arr = np.asarray(arr, np.uint8)
    box, names = check_crop_array(session, volume, arr, offset, classes, what=what)
    crop_id = (session.db.execute("select coalesce(max(id), 0) + 1 from crops").fetchone()[0])
    d = session.path("rounds", str(round_n), "crops")
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{crop_id}.zarr"
    _write_array(path, arr, {"volume": volume, "offset": list(box.offset), "classes": names})
    row = {
        "id": crop_id, "round": round_n, "volume": volume, "path": session.rel(path), "offset": fmt(box.offset),
        "shape": fmt(box.shape), "classes": json.dumps(names), "source": source,
        "sha256": hashlib.sha256(arr.tobytes()).hexdigest(), "labelled_voxels": int((arr > 0).sum()),
        "created": now(),
    }
    try:
        with session.db.atomic():
            session.db["crops"].insert(row)
            fix_classes(session, names)
    except Exception:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return row


def draw_holdout(session: Session, volume: str, count: int, shape, *, within: Box | None = None,
                 seed: int | None = None, max_tries: int = 10000, dry_run: bool = False) -> list[dict]:
    """Draw `count` non-overlapping boxes uniformly at random, avoiding every crop; freeze them.

    `dry_run`: every check and the draw itself, nothing stored (what a form checks before it asks)."""
    if session.db["holdout"].count_where("volume = ?", [volume]):
        raise FibError(f"held-out regions of volume {volume!r} are already drawn and frozen; "
                       "see `fibtui holdout list`")
    vol = catalog.get_volume(session, volume)
    within = within or Box((0, 0, 0), vol["shape"])
    if not within.inside(vol["shape"]):
        raise FibError(f"--within {within} lies outside volume {volume!r} of shape {fmt(vol['shape'])}")
    if count < 1:
        raise FibError(f"--count {count}: draw at least one held-out region")
    if any(s > w for s, w in zip(shape, within.shape)):
        raise FibError(f"--size {fmt(shape)} does not fit in {within}; choose a smaller size")
    seed = int(np.random.SeedSequence().entropy % (1 << 31)) if seed is None else int(seed)
    rng = np.random.default_rng(seed)
    taken = [b for _, b in crop_boxes(session, volume)]
    drawn: list[Box] = []
    for _ in range(max_tries):
        if len(drawn) == count:
            break
        off = tuple(int(o + rng.integers(0, w - s + 1)) for o, w, s in zip(within.offset, within.shape, shape))
        box = Box(off, tuple(shape))
        if not any(box.overlaps(b) for b in taken + drawn):
            drawn.append(box)
    if len(drawn) < count:
        raise FibError(f"could only place {len(drawn)} of {count} held-out regions of size {fmt(shape)} "
                       "without overlapping crops or each other; ask for fewer or smaller")
    rows = [{"volume": volume, "offset": fmt(b.offset), "shape": fmt(b.shape), "seed": seed,
             "labels_path": None, "classes": None, "created": now()} for b in drawn]
    if dry_run:
        return rows
    with session.db.atomic():
        session.db["holdout"].insert_all(rows)
    return list(session.db["holdout"].rows_where("volume = ?", [volume], order_by="id"))


def check_holdout_labels(session: Session, region_id: int, labels_path,
                         classes: list[str] | None = None) -> tuple[dict, np.ndarray, list[str]]:
    """Everything `label_holdout` checks, nothing written: (region row, labels, class names)."""
    row = next(session.db["holdout"].rows_where("id = ?", [region_id]), None)
    if row is None:
        raise FibError(f"held-out region {region_id} does not exist; see `fibtui holdout list`")
    if row["labels_path"]:
        raise FibError(f"held-out region {region_id} is already labelled; its labels are frozen")
    arr = read_labels(labels_path)
    shape = unfmt(row["shape"])
    if arr.shape != shape:
        raise FibError(f"{labels_path}: labels have shape {fmt(arr.shape)} but held-out region {region_id} "
                       f"is {fmt(shape)} (Z,Y,X)")
    names = session_classes(session, classes)
    _check_labels(arr, names, str(labels_path))
    return row, arr, names


def label_holdout(session: Session, region_id: int, labels_path, classes: list[str] | None = None) -> dict:
    row, arr, names = check_holdout_labels(session, region_id, labels_path, classes)
    path = session.path("holdout", f"{region_id}.zarr")
    if path.exists():
        raise FibError(f"held-out region {region_id} is already labelled; its labels are frozen")
    _write_array(path, arr, {"volume": row["volume"], "offset": list(unfmt(row["offset"])), "classes": names})
    with session.db.atomic():
        session.db["holdout"].update(region_id, {"labels_path": session.rel(path), "classes": json.dumps(names)})
        fix_classes(session, names)
    return next(session.db["holdout"].rows_where("id = ?", [region_id]))
