"""zarr v2/v3 and OME-Zarr reader (zarr-python, imported when a zarr source is opened)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sessions.errors import FibError
from sessions.volumes.sources.base import (
    CHUNK_REMEDY,
    FORMATS_HINT,
    Source,
    _check_grey,
    _list5,
    _read_json,
    _tree_files,
    _unit_nm,
    _unreadable,
    _voxel,
)


def _zarr_attrs(path: Path) -> dict:
    if (path / "zarr.json").is_file():
        return _read_json(path / "zarr.json").get("attributes", {})
    return _read_json(path / ".zattrs") if (path / ".zattrs").is_file() else {}


def _ome_voxel(ms: dict, ndim: int, level: int = 0) -> tuple[float, float, float] | None:
    """A level's scale (times any multiscale-wide scale) on the last three axes, in nm."""
    scale = np.ones(ndim)
    for t in ms["datasets"][level].get("coordinateTransformations", []) + ms.get("coordinateTransformations", []):
        if t.get("type") == "scale" and len(t.get("scale", [])) == ndim:
            scale = scale * np.asarray(t["scale"], float)
    axes = ms.get("axes", [])[-3:]
    units = {a.get("unit") for a in axes if isinstance(a, dict)}
    if len(axes) != 3 or len(units) != 1:
        return None
    return _voxel(scale[-3:], _unit_nm(units.pop()))


def _multiscales(path: Path) -> list | None:
    attrs = _zarr_attrs(path)
    return (attrs.get("ome") or {}).get("multiscales") or attrs.get("multiscales")


def _bioformats2raw_image(path: Path) -> Path | None:
    """The image group of a bioformats2raw container (`x.zarr/0`), None if `path` is not one.

    bioformats2raw (the usual route from vendor formats to OME-Zarr) puts each image in a
    numbered group under a top group marked `bioformats2raw.layout`; with several, the user names one.
    """
    attrs = _zarr_attrs(path)
    if 3 not in (attrs.get("bioformats2raw.layout"), (attrs.get("ome") or {}).get("bioformats2raw.layout")):
        return None
    images = sorted((d.name for d in path.iterdir() if d.name.isdigit() and _multiscales(d)), key=int)
    if len(images) != 1:
        raise FibError(f"{path}: a bioformats2raw container with {len(images)} images"
                       f"{' (' + _list5(images) + ')' if images else ''}; name one, e.g. {path / (images or ['0'])[0]}")
    return path / images[0]


class ZarrSource(Source):
    """A zarr v2/v3 array (zarr-python 3), or level 0 of an OME-Zarr group with its voxel size.

    An array named inside an OME-Zarr group (vol.ome.zarr/0) takes its level's
    scale from the group. Leading axes of size 1 (OME-Zarr's t and c) are dropped.
    """

    kind = "zarr"

    def __init__(self, path: Path):
        import zarr
        self.path = path
        image, ms = path, _multiscales(path)
        if not ms and (inner := _bioformats2raw_image(path)):
            image, ms = inner, _multiscales(inner)
        self._meta_files: list[Path] = []
        if ms:
            self.array_dir = image / ms[0]["datasets"][0]["path"]
            self._meta_files = [d / n for d in dict.fromkeys((path, image))
                                for n in ("zarr.json", ".zgroup", ".zattrs") if (d / n).is_file()]
        else:
            self.array_dir = path
        try:
            self._arr = zarr.open_array(store=str(self.array_dir), mode="r")
        except Exception as e:  # zarr raises several types for a group or bad metadata
            if not ms and _is_zarr_group(path):
                names = sorted(zarr.open_group(store=str(path), mode="r").array_keys())
                raise FibError(f"{path}: a zarr group, not an array (arrays: {_list5(names) or 'none'}); "
                               f"name one, e.g. {path / (names[0] if names else 'raw')}") from None
            raise FibError(f"{self.array_dir}: not a readable zarr array ({e}); {FORMATS_HINT}") from None
        shape = self._arr.shape
        self._lead = max(0, len(shape) - 3)
        if any(s != 1 for s in shape[: self._lead]):
            self._lead = 0  # let _check_grey name the real shape
        self.shape, self.dtype = _check_grey(self.array_dir, shape[self._lead:], self._arr.dtype)
        if ms:
            self.voxel_size = _ome_voxel(ms[0], len(shape))
        elif (parent := _multiscales(path.parent) if path.parent != path else None):
            levels = [d.get("path") for d in parent[0].get("datasets", [])]
            if path.name in levels:
                self.voxel_size = _ome_voxel(parent[0], len(shape), levels.index(path.name))
        fmt = self._arr.metadata.zarr_format
        comp = ", ".join(type(c).__name__ for c in (self._arr.compressors or ())) or "uncompressed"
        what = (f"OME-Zarr level {ms[0]['datasets'][0]['path']!r} of {len(ms[0]['datasets'])}" if ms
                else f"zarr v{fmt} array")
        if image != path:
            what += f" (bioformats2raw image {image.name})"
        chunks = "×".join(map(str, self._arr.chunks[self._lead:]))
        shards = self._arr.shards and ", shards " + "×".join(map(str, self._arr.shards[self._lead:]))
        self._desc = f"{what}, {self._dims()}, chunks {chunks}{shards or ''}, {comp}"

    def _read(self, out, z0, z1, y0, y1):
        try:
            out[...] = self._arr[(0,) * self._lead + (slice(z0, z1), slice(y0, y1))]
        except Exception as e:  # numcodecs and zarr raise many types for a bad chunk
            raise _unreadable(f"{self.array_dir} [z {z0}:{z1}, y {y0}:{y1}]", e, CHUNK_REMEDY) from None

    def files(self):
        return self._meta_files + _tree_files(self.array_dir)

    def describe(self):
        return self._desc


def _is_zarr_group(path: Path) -> bool:
    if (path / ".zgroup").is_file():
        return True
    try:
        return json.loads((path / "zarr.json").read_text()).get("node_type") == "group"
    except (OSError, ValueError):
        return False
