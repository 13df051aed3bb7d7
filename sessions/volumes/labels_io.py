"""Labels in and out in the formats curators' other tools use: napari, Paintera/N5, OME-Zarr labels/.

Import reads a label array from a TIFF, a zarr array, an OME-Zarr image's
`labels/` group (its first label image) or a label image itself, or an N5
dataset (a Paintera label dataset's `data/s0`). A label array of the
volume's full shape (what napari saves for a Labels layer over the image)
is cut into crops around its labelled voxels: one crop per group of
touching labelled islands, so a few thin slices from different sides stay
a few small crops rather than one box across the volume.

Export writes the session's crops, held-out labels and the latest
prediction (thresholded at 0.5) as NGFF label images in the volume's own
OME-Zarr, `<volume>.ome.zarr/labels/<name>/`, with one level per image
level (nearest sampling, so classes stay crisp), so napari (napari-ome-zarr)
opens them over the raw image. Only chunks that hold labels are written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import zarr
import zarr.codecs

from sessions.errors import FibError
from sessions.geometry import Box
from sessions.volumes import omezarr
from sessions.volumes.sources import read_labels

TIFF = (".tif", ".tiff")
LABEL_COLOURS = [(64, 160, 255), (255, 210, 0), (0, 220, 110), (255, 140, 0), (150, 110, 255), (0, 230, 230)]


# ---------------------------------------------------------------- import
def _check(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise FibError(f"{where}: labels have {arr.ndim} dimensions; expected 3 (Z,Y,X) or 2 (Y,X)")
    if not np.issubdtype(arr.dtype, np.integer) or (arr.size and (arr.min() < 0 or arr.max() > 255)):
        top = int(arr.max()) if arr.size else 0
        raise FibError(f"{where}: label values must be 0..255 (0 = unlabelled, 1..n = classes); found {arr.dtype} "
                       f"up to {top} — Paintera fragment ids must be mapped to classes first")
    return arr.astype(np.uint8)


def _translation(ms: dict, scale0) -> tuple[int, int, int] | None:
    ds = ms["datasets"][0]
    for t in ds.get("coordinateTransformations", []) + ms.get("coordinateTransformations", []):
        if t["type"] == "translation":
            return tuple(int(round(v / s)) for v, s in zip(t["translation"][-3:], scale0))
    return None


def _label_image(group, where: str) -> tuple[np.ndarray, tuple | None]:
    attrs = dict(group.attrs)
    ome = attrs.get("ome", attrs)
    if "labels" in ome and "multiscales" not in ome:      # a labels/ group: its first label image
        return _label_image(group[ome["labels"][0]], where)
    if "multiscales" not in ome and "labels" in group:    # an image with labels/ beside it
        return _label_image(group["labels"], where)
    if "multiscales" not in ome:
        if "0" in group:
            return np.asarray(group["0"][:]), None
        raise FibError(f"{where}: a zarr group without an array, OME-Zarr image or labels/ group")
    ms = ome["multiscales"][0]
    ds = ms["datasets"][0]
    scale = next((t["scale"] for t in ds.get("coordinateTransformations", []) if t["type"] == "scale"), [1, 1, 1])
    return np.asarray(group[ds["path"]][:]), _translation(ms, scale[-3:])


def _n5(path: Path) -> np.ndarray:
    import tensorstore as ts

    attrs = json.loads((path / "attributes.json").read_text()) if (path / "attributes.json").exists() else {}
    if "painteraData" in attrs or (path / "data").is_dir():
        path = path / "data"
        attrs = json.loads((path / "attributes.json").read_text()) if (path / "attributes.json").exists() else {}
    if "dimensions" not in attrs and (path / "s0").is_dir():
        path = path / "s0"
        attrs = json.loads((path / "attributes.json").read_text())
    if attrs.get("isLabelMultiset"):
        raise FibError(f"{path}: a Paintera label multiset; export it from Paintera as a plain integer dataset")
    arr = ts.open({"driver": "n5", "kvstore": {"driver": "file", "path": str(path)}}, open=True).result()
    return np.asarray(arr.read().result())


def read_any(source) -> tuple[np.ndarray, tuple | None, str]:
    """(labels uint8 Z,Y,X, offset from the file's metadata or None, what it was)."""
    path = Path(source).expanduser()
    if not path.exists():
        raise FibError(f"{path}: no such labels file or directory")
    if path.suffix.lower() in TIFF:
        return read_labels(path), None, "TIFF"
    if path.is_dir() and (path / "attributes.json").exists() and not (path / "zarr.json").exists() \
            and not (path / ".zarray").exists() and not (path / ".zgroup").exists():
        return _check(_n5(path), str(path)), None, "N5"
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as e:
        raise FibError(f"{path}: not a TIFF, zarr, OME-Zarr or N5 label array ({e})") from None
    if isinstance(node, zarr.Array):
        return _check(np.asarray(node[:]), str(path)), None, "zarr"
    arr, off = _label_image(node, str(path))
    return _check(arr, str(path)), off, "OME-Zarr labels"


def split_crops(arr: np.ndarray, margin: int = 0) -> list[Box]:
    """Boxes around groups of touching labelled islands of a full-volume label array (merged while they overlap)."""
    import cc3d

    lab = cc3d.connected_components(arr > 0, connectivity=26)
    boxes = []
    for sl in cc3d.statistics(lab)["bounding_boxes"][1:]:
        if sl is None:
            continue
        lo = [max(s.start - margin, 0) for s in sl]
        hi = [min(s.stop + margin, n) for s, n in zip(sl, arr.shape)]
        boxes.append(Box(tuple(lo), tuple(h - o for o, h in zip(lo, hi))))
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                if boxes[i].overlaps(boxes[j]):
                    a, b = boxes[i], boxes.pop(j)
                    lo = tuple(min(x, y) for x, y in zip(a.offset, b.offset))
                    hi = tuple(max(x, y) for x, y in zip(a.stop, b.stop))
                    boxes[i] = Box(lo, tuple(h - o for o, h in zip(lo, hi)))
                    merged = True
                    break
            if merged:
                break
    return sorted(boxes, key=lambda b: b.offset)


# ---------------------------------------------------------------- export
def _label_group(image: Path, name: str, ms: omezarr.Multiscale, classes: list[str]):
    root = zarr.open_group(str(image), mode="r+")
    labels = root.require_group("labels")
    ome = dict(labels.attrs.get("ome", {"version": omezarr.NGFF_VERSION}))
    names = [n for n in ome.get("labels", []) if n != name] + [name]
    labels.attrs["ome"] = {**ome, "version": omezarr.NGFF_VERSION, "labels": names}
    g = labels.create_group(name, overwrite=True)
    arrays = [g.create_array(str(i), shape=a.shape, chunks=a.chunks, dtype="uint8", fill_value=0,
                             compressors=zarr.codecs.ZstdCodec(level=3), dimension_names=list(omezarr.AXES))
              for i, a in enumerate(ms.levels)]
    meta = omezarr.ome_metadata(name, ms.scales)
    meta["image-label"] = {"version": omezarr.NGFF_VERSION, "source": {"image": "../../"},
                           "colors": [{"label-value": i, "rgba": [*LABEL_COLOURS[(i - 1) % len(LABEL_COLOURS)], 255]}
                                      for i in range(1, len(classes) + 1)],
                           "properties": [{"label-value": i, "class": c} for i, c in enumerate(classes, 1)]}
    g.attrs["ome"] = meta
    return arrays


def paste(arrays, ms: omezarr.Multiscale, box: Box, block: np.ndarray) -> None:
    """Write a level-0 block into every level, nearest sampling (level voxel i = level-0 voxel i·f)."""
    for level, arr in enumerate(arrays):
        f = ms.factor(level, base=0)
        lo = [-(-o // k) for o, k in zip(box.offset, f)]
        hi = [-(-e // k) for e, k in zip(box.stop, f)]
        if any(h <= low for low, h in zip(lo, hi)):
            continue
        idx = np.ix_(*[np.arange(a, b) * k - o for a, b, k, o in zip(lo, hi, f, box.offset)])
        sub = block[idx]
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        cur = np.asarray(arr[sl])
        arr[sl] = np.where(sub > 0, sub, cur)


def export(image: Path, name: str, ms: omezarr.Multiscale, classes: list[str],
           blocks: list[tuple[Box, np.ndarray]]) -> Path:
    arrays = _label_group(image, name, ms, classes)
    for box, block in blocks:
        paste(arrays, ms, box, block)
    return Path(image) / "labels" / name


def export_prediction(image: Path, name: str, ms: omezarr.Multiscale, pred: omezarr.Multiscale,
                      threshold: float = 0.5, slab: int = 64) -> Path:
    """The prediction as a label image: 1 where p ≥ threshold, streamed in slabs of level 0."""
    arrays = _label_group(image, name, ms, ["predicted"])
    src = pred.levels[0]
    cut = int(np.ceil(threshold * 255))
    for z0, z1 in omezarr.slabs(src.shape[0], slab):
        block = (np.asarray(src[z0:z1]) >= cut).astype(np.uint8)
        if block.any():
            paste(arrays, ms, Box((z0, 0, 0), block.shape), block)
    return Path(image) / "labels" / name
